"""What a model sees: the segmentation channel (one, or a combination) and its normalisation.

The channel is named, or given by index; several channels are combined into one
image (each percentile-normalised first, then summed, averaged or max-ed), since
Hoechst alone stains a spheroid's core poorly. The model card's percentile
normalisation is then applied to the result. Percentiles are taken once per volume,
from a regular subsample of at most :data:`SAMPLE_VOXELS` voxels (every voxel of a
volume up to that size), so a volume segmented in blocks is normalised exactly as it
would be whole; or once per time series (:func:`plan_series`, from a subsample of its
time points pooled), so that every time point of a field is normalised alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pipeline.errors import InputError
from pipeline.preprocess.normalize import normalize_range

LOG = logging.getLogger(__name__)

#: Percentiles are taken on at most about this many voxels of a volume (a regular y/x subsample above it).
SAMPLE_VOXELS = 16_000_000
#: A time series' percentiles are pooled over at most this many of its time points (evenly spaced, first and last included).
SERIES_FRAMES = 24


class VolumeView(Protocol):
    """A ``(z, y, x)`` volume that can be cropped (a numpy array, or a lazy view of a stored one)."""

    shape: tuple[int, ...]

    def __getitem__(self, index) -> np.ndarray: ...


class StoredVolume:
    """Lazy ``(z, y, x)`` view of volume ``(t, c)`` of a ``(t, c, z, y, x)`` array (zarr).

    Only the crops asked for are read, so a worker never holds a whole large volume. A chunk
    that fails its checksum is reported as a damaged volume (one line naming ``where``, ``t``
    and ``c``), as :func:`~pipeline.io.volumes.read_volume` reports it.
    """

    def __init__(self, array, t: int, c: int, where: str = "image"):
        self.array, self.t, self.c, self.where = array, int(t), int(c), where
        self.shape = tuple(int(s) for s in array.shape[2:])
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, index) -> np.ndarray:
        from pipeline.io.chunks import damaged

        if not isinstance(index, tuple):
            index = (index,)
        try:
            return np.asarray(self.array[(self.t, self.c, *index)])
        except ValueError as exc:  # zarr's crc32c codec: "Stored and computed checksum do not match"
            raise damaged(self.where, self.t, self.c, str(exc).splitlines()[0][:200]) from None


def parse_channel(value: str | int) -> str | int:
    """A channel given on the command line: digits are an index, anything else a name."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def resolve_channels(
    spec: str | int | Sequence[str | int],
    names: Sequence[str] | None,
    n_channels: int,
    *,
    source: str,
    model_channels: Sequence[str] = (),
) -> list[int]:
    """Indices of the channel(s) ``spec`` names in data with ``names`` (or ``n_channels`` unnamed).

    Parameters
    ----------
    spec : str, int or list of them
        A channel name, an index (an int or a string of digits), or a list: a combination.
    names : sequence of str, optional
        The data's channel names.
    n_channels : int
        Number of channels in the data.
    source : str
        The data (file, store field), for the message.
    model_channels : sequence of str
        The model card's channel names, to say what the channel is fed to.

    Raises
    ------
    InputError
        An index out of range or a name the data does not have, with what to do instead.
    """
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not items:
        raise InputError(f"{source}: no segmentation channel given")
    known = list(names) if names is not None else [f"c{i}" for i in range(n_channels)]
    feeds = f" (it is fed to the model's {'/'.join(model_channels)} input)" if model_channels else ""
    out = []
    for item in items:
        item = parse_channel(item)
        if isinstance(item, int):
            if not 0 <= item < n_channels:
                raise InputError(f"{source}: channel index {item} out of range: the data has {n_channels} channel(s) ({', '.join(known)})")
            out.append(item)
        elif item in known:
            out.append(known.index(item))
        else:
            raise InputError(f"{source}: no channel {item!r} (channels: {', '.join(known)}); {_what_to_do(item, known, feeds)}")
    if len(set(out)) != len(out):
        raise InputError(f"{source}: a channel is named twice in {items}")
    return out


def _what_to_do(wanted: str, known: Sequence[str], feeds: str) -> str:
    """The two ways out when a channel name is missing: map one at segment time, or name them at convert time."""
    if len(known) == 1:
        return (
            f"pass --channel {known[0]} to segment it{feeds}, or convert again with "
            f"--channels {wanted} to name it (spheroid convert RAW --out STORE --channels {wanted} --overwrite)"
        )
    return (
        f"pass --channel NAME or INDEX for the nuclear channel{feeds}, or convert again with --channels "
        f"naming the {len(known)} channels in store order (e.g. --channels Hoechst,Cy3,GFP)"
    )


def data_voxel_size(configured: Sequence[float] | None, stated: Sequence[float | None] | None, *, source: str) -> tuple[float, float, float]:
    """The voxel size (z, y, x, um) to segment with: the configured one (``--voxel-size``), else the data's.

    Raises
    ------
    InputError
        When neither gives three positive numbers.
    """
    have = None
    if stated is not None and len(stated) == 3 and all(v is not None and np.isfinite(v) and v > 0 for v in stated):
        have = tuple(float(v) for v in stated)
    if configured is not None:
        want = tuple(float(v) for v in configured)
        if have is not None and not np.allclose(have, want, rtol=1e-3):
            LOG.warning("%s: states voxel size %s um; using the configured %s um", source, have, want)
        return want
    if have is None:
        raise InputError(f"{source}: no voxel size in the data and none given; pass --voxel-size Z Y X (um)")
    return have


def subsample_step(shape: Sequence[int], budget: int = SAMPLE_VOXELS) -> int:
    """The y/x step of the regular subsample percentiles are taken on (1: every voxel)."""
    n = int(np.prod(shape))
    return 1 if n <= budget else int(math.ceil(math.sqrt(n / budget)))


@dataclass(frozen=True)
class InputPlan:
    """How the crops of one volume become the model's input (values found once per volume).

    Attributes
    ----------
    channel_ranges : tuple of (float, float)
        Per combined channel, the values mapped to 0 and 1 before combining (empty for one channel).
    combine : str
        ``sum``, ``mean`` or ``max``.
    low, high : float
        The values of the (combined) image mapped to 0 and 1: the card's percentiles.
    clip : bool
        Clip the result to [0, 1].
    """

    channel_ranges: tuple[tuple[float, float], ...]
    combine: str
    low: float
    high: float
    clip: bool

    def apply(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """float32 model input from the crops of the plan's channels (same crop of each)."""
        image = _combine(crops, self.channel_ranges, self.combine)
        return normalize_range(image, self.low, self.high, clip=self.clip)

    def to_dict(self) -> dict[str, Any]:
        """Every value at full precision (JSON), for :meth:`from_dict` (stored with the labels)."""
        return {"channel_ranges": [list(r) for r in self.channel_ranges], "combine": self.combine, "low": self.low, "high": self.high, "clip": self.clip}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InputPlan":
        return cls(
            channel_ranges=tuple((float(lo), float(hi)) for lo, hi in data["channel_ranges"]), combine=str(data["combine"]),
            low=float(data["low"]), high=float(data["high"]), clip=bool(data["clip"]),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "combine": self.combine if self.channel_ranges else None,
            "channel_ranges": [[round(lo, 6), round(hi, 6)] for lo, hi in self.channel_ranges],
            "range": [round(self.low, 6), round(self.high, 6)],
        }


def _combine(crops: Sequence[np.ndarray], ranges: Sequence[tuple[float, float]], how: str) -> np.ndarray:
    if len(crops) == 1:
        return np.asarray(crops[0], dtype=np.float32)
    normed = [normalize_range(c, lo, hi) for c, (lo, hi) in zip(crops, ranges)]
    if how == "max":
        return np.maximum.reduce(normed)
    total = np.add.reduce(normed)
    return total / np.float32(len(normed)) if how == "mean" else total


def plan_input(
    views: Sequence[VolumeView],
    *,
    low: float,
    high: float,
    clip: bool = False,
    combine: str = "sum",
) -> InputPlan:
    """Find the normalisation values of one volume (its channels' views) from one subsample.

    Each channel of a combination is mapped by its own ``low``/``high`` percentiles, the
    combination is formed, and its ``low``/``high`` percentiles become the final range.
    """
    return plan_series([views], low=low, high=high, clip=clip, combine=combine)


def series_frames(n_timepoints: int, max_frames: int = SERIES_FRAMES) -> list[int]:
    """The time points a series' percentiles are pooled over: all, or ``max_frames`` evenly spaced."""
    if n_timepoints <= max_frames:
        return list(range(n_timepoints))
    return sorted({int(round(i)) for i in np.linspace(0, n_timepoints - 1, max_frames)})


def plan_series(
    frames: Sequence[Sequence[VolumeView]],
    *,
    low: float,
    high: float,
    clip: bool = False,
    combine: str = "sum",
) -> InputPlan:
    """Normalisation values pooled over several volumes (time points of one field), as :func:`plan_input`.

    Each frame is a list of channel views (the same channels in every frame). The percentiles
    are taken on the frames' regular subsamples pooled (at most :data:`SAMPLE_VOXELS` voxels
    in all), so every time point is mapped by the same values and a nucleus keeps its
    brightness relative to the series however many very bright nuclei (dying, saturated) one
    time point holds; per-volume percentiles move with them.
    """
    if combine not in ("sum", "mean", "max"):
        raise ValueError(f"combine must be sum, mean or max, got {combine!r}")
    if not frames:
        raise ValueError("no volumes to take percentiles from")
    step = subsample_step(frames[0][0].shape, budget=max(SAMPLE_VOXELS // len(frames), 1))
    per_frame = [[np.asarray(v[:, ::step, ::step], dtype=np.float32).ravel() for v in views] for views in frames]
    samples = [np.concatenate([f[c] for f in per_frame]) for c in range(len(per_frame[0]))]
    del per_frame
    ranges: tuple[tuple[float, float], ...] = ()
    if len(samples) > 1:
        ranges = tuple(tuple(float(p) for p in np.percentile(s, [low, high])) for s in samples)
    combined = _combine(samples, ranges, combine)
    lo, hi = (float(p) for p in np.percentile(combined, [low, high])) if combined.size else (0.0, 1.0)
    return InputPlan(channel_ranges=ranges, combine=combine, low=lo, high=hi, clip=clip)

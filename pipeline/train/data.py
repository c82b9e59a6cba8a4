"""Training volumes in memory: read through :class:`TrainingSet`, normalised, padded to the patch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.config.train import NormalizationConfig
from pipeline.errors import InputError
from pipeline.groundtruth.trainset import TrainingSet
from pipeline.preprocess.normalize import percentile_normalize

LOG = logging.getLogger(__name__)

#: At most this many voxel positions per class and volume are kept for centring patches.
MAX_CENTRES = 200_000


@dataclass
class Volume:
    """One training-set item, ready to sample from.

    Attributes
    ----------
    id : str
        Item id.
    image : numpy.ndarray
        float32 ``(1, z, y, x)``, percentile-normalised, zero-padded to at least the patch.
    semantic : numpy.ndarray
        uint8 ``(z, y, x)`` target, padded with background.
    instances : numpy.ndarray
        uint32 ``(z, y, x)`` instance labels, padded with 0.
    shape : tuple of int
        The item's shape before padding.
    voxel_size : tuple of float
        ``(z, y, x)`` um.
    source, split, channel : str
        From the manifest.
    centres : dict
        Flat indices (into the padded volume) of edge (1) and nucleus (2) voxels.
    rescale_mode : str or None
        How a real sample was brought to the target scale (from its provenance), e.g.
        ``"nucleus_size"``: then its voxel size differs from the target's on purpose.
    """

    id: str
    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    source: str
    split: str
    channel: str
    centres: dict[int, np.ndarray] = field(default_factory=dict)
    rescale_mode: str | None = None


def pad_to(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Zero-pad the last three axes of ``array`` at the end up to ``shape`` (no cropping)."""
    extra = [max(0, s - a) for s, a in zip(shape, array.shape[-3:])]
    if not any(extra):
        return array
    return np.pad(array, [(0, 0)] * (array.ndim - 3) + [(0, e) for e in extra])


def load_volumes(
    trainset: TrainingSet,
    split: str,
    *,
    normalization: NormalizationConfig,
    patch_size: Sequence[int] = (1, 1, 1),
    channel: str | None = None,
    seed: int = 0,
) -> list[Volume]:
    """Read the items of one split, normalise each image and pad it to at least the patch.

    Parameters
    ----------
    trainset : TrainingSet
        The opened set.
    split : str
        ``"train"``, ``"val"`` or ``"test"``.
    normalization : NormalizationConfig
        Percentiles for :func:`percentile_normalize` (per volume).
    patch_size : sequence of int
        Volumes smaller than this are zero-padded (background in the target).
    channel : str, optional
        Keep only items of this channel.
    seed : int
        Seed of the sub-sampling of centre positions in very large volumes.

    Returns
    -------
    list of Volume
    """
    rng = np.random.default_rng(seed)
    out = []
    for item in trainset.items(split):
        if channel is not None and item["channel"] != channel:
            continue
        image, instances, semantic = trainset.load(item)
        shape = tuple(int(s) for s in image.shape)
        normed = percentile_normalize(image, normalization.low, normalization.high, clip=normalization.clip)
        vol = Volume(
            id=item["id"],
            image=pad_to(normed[None], patch_size),
            semantic=pad_to(semantic, patch_size),
            instances=pad_to(instances, patch_size),
            shape=shape,
            voxel_size=tuple(float(v) for v in item["voxel_size"]),
            source=item["source"],
            split=item["split"],
            channel=item["channel"],
            rescale_mode=(item.get("provenance") or {}).get("rescale", {}).get("mode"),
        )
        flat = vol.semantic.ravel()
        for cls in (1, 2):
            idx = np.flatnonzero(flat == cls)
            if idx.size > MAX_CENTRES:
                idx = np.sort(rng.choice(idx, MAX_CENTRES, replace=False))
            vol.centres[cls] = idx
        out.append(vol)
    LOG.info("loaded %d %s volume(s) from %s", len(out), split, trainset.root)
    return out


def resolve_voxel_size(volumes: Sequence[Volume], configured: Sequence[float] | None, tolerance: float, where: str) -> list[float]:
    """The voxel size the model is trained for; every volume must be within ``tolerance`` of it.

    Items rescaled by nucleus size (provenance ``rescale.mode == "nucleus_size"``) match the
    target's *pixel* scale of nuclei while their physical voxel size differs; they are accepted
    and left out of the median.

    Parameters
    ----------
    volumes : sequence of Volume
        Training (and validation) volumes.
    configured : sequence of float, optional
        The config's ``voxel_size``; the median over the volumes when omitted.
    tolerance : float
        Largest relative difference per axis.
    where : str
        The training set's path, for the message.

    Raises
    ------
    InputError
        Naming the first item whose voxel size is off.
    """
    if not volumes:
        raise InputError(f"{where}: no volumes to train on")
    physical = [v for v in volumes if v.rescale_mode != "nucleus_size"] or list(volumes)
    ref = np.asarray(configured if configured is not None else np.median([v.voxel_size for v in physical], axis=0), dtype=float)
    for vol in volumes:
        rel = np.abs(np.asarray(vol.voxel_size) - ref) / ref
        if (rel > tolerance).any():
            if vol.rescale_mode == "nucleus_size":
                LOG.info("%s: voxel size %s um, matched to the target by nucleus size", vol.id, vol.voxel_size)
                continue
            raise InputError(
                f"{where}: item {vol.id!r} has voxel size {vol.voxel_size} um, the model is trained for "
                f"{tuple(float(r) for r in ref)} um (tolerance {tolerance:.0%}); rescale it or set voxel_size / voxel_tolerance"
            )
    return [float(r) for r in ref]


def edges_inside_instances(volumes: Sequence[Volume]) -> bool:
    """Whether most edge voxels of the targets lie inside instances (``inner`` edges) rather than outside."""
    inside = total = 0
    for v in volumes:
        edge = v.semantic == 1
        total += int(edge.sum())
        inside += int((edge & (v.instances > 0)).sum())
    return total > 0 and inside > total / 2


def summarize(volumes: Sequence[Volume]) -> list[dict[str, Any]]:
    """Per volume: id, source, split, channel, shape and class balance (for the model card)."""
    rows = []
    for v in volumes:
        region = v.semantic[: v.shape[0], : v.shape[1], : v.shape[2]]
        counts = np.bincount(region.ravel(), minlength=3)[:3] / max(region.size, 1)
        rows.append(
            {
                "id": v.id,
                "source": v.source,
                "split": v.split,
                "channel": v.channel,
                "shape": list(v.shape),
                "voxel_size": list(v.voxel_size),
                "n_instances": int(np.unique(v.instances).size - (1 if (v.instances == 0).any() else 0)),
                "class_balance": [round(float(c), 4) for c in counts],
            }
        )
    return rows

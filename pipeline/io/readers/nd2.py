"""Nikon ND2 files through the ``nd2`` package (the ``[nd2]`` extra), one time point at a time.

The thesis' raw data are ND2 files from a Nikon C2+ (NIS-Elements). ``nd2``
exposes the experiment loops (``sizes`` such as ``{"T": 48, "P": 2, "Z": 21,
"C": 3, "Y": 512, "X": 512}``); each frame holds all channels of one
(t, position, z) coordinate. Every XY position becomes its own source (a field
of view of the file's well).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline.errors import InputError, require
from pipeline.io.readers.base import FileStamp, Source, SourceMeta

LOG = logging.getLogger(__name__)

FRAME_AXES = ("C", "S", "Y", "X")


@dataclass(frozen=True)
class ND2Layout:
    """Where T, positions and Z are among an ND2 file's frames.

    Parameters
    ----------
    coord_axes : tuple of str
        The loop axes (``T``, ``P``, ``Z``), in the file's nesting order; the frame
        (sequence) index is their C-order flattening.
    coord_shape : tuple of int
        Their lengths.
    channel_axis : str or None
        ``"C"`` (monochrome channels), ``"S"`` (RGB components taken as channels) or ``None``.
    shape : tuple of int
        One position as ``(T, C, Z, Y, X)``.
    positions : int
        Number of XY positions.
    """

    coord_axes: tuple[str, ...]
    coord_shape: tuple[int, ...]
    channel_axis: str | None
    shape: tuple[int, int, int, int, int]
    positions: int

    def frame_indices(self, t: int, position: int) -> list[int]:
        """Sequence indices of the frames of time point ``t`` at ``position``, in z order."""
        out = []
        for z in range(self.shape[2]):
            coord = {"T": t, "P": position, "Z": z}
            out.append(int(np.ravel_multi_index([coord[a] for a in self.coord_axes], self.coord_shape)) if self.coord_axes else 0)
        return out


def nd2_layout(sizes: Mapping[str, int], *, label: str) -> ND2Layout:
    """Map ``ND2File.sizes`` onto ``(T, C, Z, Y, X)`` per position.

    Raises
    ------
    InputError
        For loops the pipeline cannot place (custom loops with several entries,
        channels and RGB together).

    Examples
    --------
    >>> nd2_layout({"T": 4, "Z": 21, "C": 3, "Y": 512, "X": 512}, label="a.nd2").shape
    (4, 3, 21, 512, 512)
    """
    sizes = {k: int(v) for k, v in sizes.items()}
    unknown = [k for k in sizes if k not in ("T", "P", "Z", *FRAME_AXES)]
    if unknown:
        raise InputError(f"{label}: ND2 loop(s) {', '.join(unknown)} ({sizes}) have no place in t, c, z, y, x")
    if "C" in sizes and "S" in sizes:
        raise InputError(f"{label}: RGB components in several channels ({sizes}); not supported")
    channel_axis = "C" if "C" in sizes else "S" if "S" in sizes else None
    coord_axes = tuple(k for k in sizes if k in ("T", "P", "Z"))
    shape = (sizes.get("T", 1), sizes.get(channel_axis, 1) if channel_axis else 1, sizes.get("Z", 1), sizes["Y"], sizes["X"])
    return ND2Layout(coord_axes, tuple(sizes[k] for k in coord_axes), channel_axis, shape, sizes.get("P", 1))


def nd2_time_step(experiment: Sequence[Any]) -> float | None:
    """Seconds between time points from an ND2 experiment's time loop.

    The measured mean interval (``periodDiff.avg``) is preferred over the
    requested ``periodMs``. For an ``NETimeLoop`` of several phases, the first
    phase's interval is used (and a warning logged if the phases differ).
    """
    for loop in experiment:
        if loop.type == "TimeLoop" and loop.count > 1:
            return _period_s(loop.parameters)
        if loop.type == "NETimeLoop" and loop.count > 1:
            periods = [p for p in loop.parameters.periods if p.count > 0]
            steps = {_period_s(p) for p in periods}
            if len(steps) > 1:
                LOG.warning("ND2 time loop has phases with different intervals %s; using the first", sorted(s for s in steps if s))
            return _period_s(periods[0]) if periods else None
    return None


def _period_s(params) -> float | None:
    avg = getattr(params.periodDiff, "avg", None) if getattr(params, "periodDiff", None) is not None else None
    ms = avg if avg else params.periodMs
    return float(ms) / 1000.0 if ms and ms > 0 else None


def nd2_meta(ndfile, layout: ND2Layout) -> SourceMeta:
    """Voxel size, time step and channel names of an open ``nd2.ND2File``."""
    vx = ndfile.voxel_size()
    z = vx.z if layout.shape[2] > 1 else None
    names = [ch.channel.name for ch in (ndfile.metadata.channels or [])]
    channels = tuple(names) if layout.channel_axis == "C" and len(names) == layout.shape[1] and all(names) else None
    return SourceMeta(channels=channels, voxel_size=(z, vx.y, vx.x), time_step=nd2_time_step(ndfile.experiment))


@dataclass(frozen=True, kw_only=True)
class ND2Source(Source):
    """One XY position of an ND2 file.

    Parameters
    ----------
    path : str
        The file.
    position : int
        XY position index.
    layout : ND2Layout
        Loop layout of the file.
    """

    path: str
    position: int = 0
    layout: ND2Layout
    channels_together = True

    def _read(self, t: int, channels: list[int]) -> np.ndarray:
        _, n_c, z, y, x = self.shape
        out = np.empty((len(channels), z, y, x), dtype=self.dtype)
        try:
            with _open_cached(self.files[0]) as ndfile:
                for iz, index in enumerate(self.layout.frame_indices(t, self.position)):
                    frame = np.asarray(ndfile.read_frame(index))
                    if self.layout.channel_axis == "S":
                        frame = np.moveaxis(frame, -1, 0)
                    frame = frame.reshape(n_c, y, x)
                    out[:, iz] = frame[channels]
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{self.label}: cannot read time point {t} ({type(exc).__name__}: {str(exc)[:200]}); truncated or corrupt file?") from exc
        return out


def open_nd2(path: str | os.PathLike) -> list[ND2Source]:
    """Describe an ND2 file's positions without reading pixels.

    Returns
    -------
    list of ND2Source
        One per XY position.

    Raises
    ------
    InputError
        If the file is unreadable, its frames are fewer than its loops announce
        (an interrupted acquisition), or its loops cannot be mapped.
    MissingDependencyError
        Without the ``nd2`` package (``pip install 'spheroid[nd2]'``).
    """
    nd2 = require("nd2", "nd2")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    stamp = FileStamp.of(path)
    try:
        with nd2.ND2File(path) as f:
            layout = nd2_layout(f.sizes, label=path)
            expected = int(np.prod(layout.coord_shape)) if layout.coord_shape else 1
            recorded = int(f.attributes.sequenceCount)
            if recorded < expected:
                raise InputError(f"{path}: truncated or interrupted acquisition: {recorded} of {expected} frames")
            meta = nd2_meta(f, layout)
            dtype = np.dtype(f.dtype)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable ND2 file ({type(exc).__name__}: {str(exc)[:200]})") from exc
    return [
        ND2Source(
            label=f"{path} (position {p})" if layout.positions > 1 else path,
            shape=layout.shape,
            dtype=dtype,
            meta=meta,
            files=(stamp,),
            path=path,
            position=p,
            layout=layout,
        )
        for p in range(layout.positions)
    ]


_nd2_cache: dict[tuple, tuple[Any, threading.Lock]] = {}
_nd2_lock = threading.Lock()


def _forget_cache() -> None:
    """In a forked child: drop the parent's handles (their file offsets are shared with it)."""
    global _nd2_cache, _nd2_lock
    _nd2_cache = {}
    _nd2_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_cache)


class _open_cached:
    """Keep one open ``ND2File`` per file and process (re-opened if the file changed)."""

    def __init__(self, stamp: FileStamp):
        self.key = (stamp.path, stamp.size, stamp.mtime_ns)

    def __enter__(self):
        nd2 = require("nd2", "nd2")
        with _nd2_lock:
            entry = _nd2_cache.get(self.key)
            if entry is None:
                for key in [k for k in _nd2_cache if k[0] == self.key[0]]:
                    _nd2_cache.pop(key)[0].close()
                entry = (nd2.ND2File(self.key[0]), threading.Lock())
                _nd2_cache[self.key] = entry
        self.lock = entry[1]
        self.lock.acquire()
        return entry[0]

    def __exit__(self, *exc) -> None:
        self.lock.release()

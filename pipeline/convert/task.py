"""The worker side of ``convert``: read one time point, write its volumes.

Kept apart from :mod:`pipeline.convert.run` so that Dask workers import only
the readers and the volume writer (not the NGFF writer or the cluster code).
"""

from __future__ import annotations

import numpy as np

import time
from dataclasses import dataclass
from typing import Any

from pipeline.convert.scale import rescale_to_uint8
from pipeline.io.location import Location
from pipeline.io.readers.base import Source, check_files_unchanged
from pipeline.io.volumes import write_volume
from pipeline.workers import release_memory, tune_worker


@dataclass(frozen=True)
class TimepointTask:
    """What one Dask task converts: some channels of one time point of one field.

    Parameters
    ----------
    source : Source
        The input series, as :meth:`~pipeline.io.readers.base.Source.for_timepoint`
        gives it for ``t`` (small and picklable; the task reads its own pixels).
    t : int
        Time point.
    read : tuple of int
        Source channels to read.
    write : tuple of int
        Store channel of each one.
    array_path : str
        The field's ``raw`` array in the store.
    rescale : tuple of float, optional
        ``(low, high)`` for :func:`rescale_to_uint8`; ``None`` keeps the data as they are.
    """

    source: Source
    t: int
    read: tuple[int, ...]
    write: tuple[int, ...]
    array_path: str
    rescale: tuple[float, float] | None = None


def convert_timepoint(task: TimepointTask, location: Location, verify: bool = True, codec_threads: int | None = 1) -> dict[str, Any]:
    """Read one time point and write its volumes (each verified, then marked done).

    Runs on a Dask worker. Returns only a small summary, never pixels.

    Parameters
    ----------
    task : TimepointTask
        What to convert.
    location : Location
        The store.
    verify : bool
        Read each chunk back before marking its volume done (see
        :func:`~pipeline.io.volumes.write_volume`).
    codec_threads : int, optional
        zarr's compression threads in this process (set once, before zarr's first
        use here); ``None`` leaves zarr's default.
    """
    start = time.perf_counter()
    tune_worker(codec_threads=codec_threads)
    check_files_unchanged(task.source)  # a file still being written or replaced since the plan
    # one channel at a time keeps a worker's footprint to one volume, unless the
    # format stores all channels of a plane together (ND2 frames)
    groups = [list(zip(task.read, task.write))] if task.source.channels_together else [[pair] for pair in zip(task.read, task.write)]
    nbytes = 0
    windows: dict[int, tuple[float, float]] = {}
    for group in groups:
        data = task.source.read(task.t, [r for r, _ in group])
        for volume, (_, c) in zip(data, group):
            if task.rescale is not None:
                volume = rescale_to_uint8(volume, *task.rescale)
            write_volume(location, task.array_path, task.t, c, volume, verify=verify, stats=False)
            windows[c] = display_range(volume)
            nbytes += volume.nbytes
        data = volume = None  # noqa: F841 - free before reading the next channel
    release_memory()
    return {
        "array": task.array_path, "t": task.t, "channels": list(task.write), "nbytes": int(nbytes),
        "windows": windows, "seconds": time.perf_counter() - start,
    }


DISPLAY_PERCENTILES = (0.5, 99.5)
"""Percentiles of a volume's values that set a viewer's display window (napari, OMERO)."""


def display_range(volume: np.ndarray, step: int = 4) -> tuple[float, float]:
    """The :data:`DISPLAY_PERCENTILES` of a volume, from every ``step``-th voxel in y and x.

    A viewer opens an image with its ``omero`` window; the full uint16 range would show
    nuclei at ~1.5k as black.
    """
    sample = volume[:, ::step, ::step]
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if not finite.size:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, DISPLAY_PERCENTILES)
    return float(lo), float(max(hi, lo + 1))

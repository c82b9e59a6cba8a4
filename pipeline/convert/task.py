"""The worker side of ``convert``: read one time point, write its volumes.

Kept apart from :mod:`pipeline.convert.run` so that Dask workers import only
the readers and the volume writer (not the NGFF writer or the cluster code).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from dataclasses import dataclass
from typing import Any

from pipeline.convert.scale import rescale_to_uint8
from pipeline.io.location import Location
from pipeline.io.readers.base import Source
from pipeline.io.volumes import write_volume


@dataclass(frozen=True)
class TimepointTask:
    """What one Dask task converts: some channels of one time point of one field.

    Parameters
    ----------
    source : Source
        The input series (small and picklable; the task reads its own pixels).
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
        Read each volume back before marking it done.
    codec_threads : int, optional
        zarr's compression threads in this process (set once, before zarr's first
        use here); ``None`` leaves zarr's default.
    """
    start = time.perf_counter()
    _prepare_process(codec_threads)
    # one channel at a time keeps a worker's footprint to one volume, unless the
    # format stores all channels of a plane together (ND2 frames)
    groups = [list(zip(task.read, task.write))] if task.source.channels_together else [[pair] for pair in zip(task.read, task.write)]
    nbytes = 0
    for group in groups:
        data = task.source.read(task.t, [r for r, _ in group])
        for volume, (_, c) in zip(data, group):
            if task.rescale is not None:
                volume = rescale_to_uint8(volume, *task.rescale)
            write_volume(location, task.array_path, task.t, c, volume, verify=verify)
            nbytes += volume.nbytes
        data = volume = None  # noqa: F841 - free before reading the next channel
    release_memory()
    return {"array": task.array_path, "t": task.t, "channels": list(task.write), "nbytes": int(nbytes), "seconds": time.perf_counter() - start}


_libc = None
_prepared = False
M_ARENA_MAX = -8


def _prepare_process(codec_threads: int | None) -> None:
    """Once per worker process: zarr's thread count and glibc's arenas."""
    global _prepared
    if _prepared:
        return
    _prepared = True
    if codec_threads is not None:
        import zarr

        zarr.config.set({"threading.max_workers": int(codec_threads)})
    _libc_handle()


def _libc_handle():
    """glibc, set up once per process to keep few malloc arenas (``None`` elsewhere).

    zarr compresses chunks in a thread pool; glibc gives each thread its own arena,
    which keeps freed memory apart and lets a worker's footprint creep up over a long
    series. Two arenas are plenty for one single-threaded Dask worker.
    """
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.mallopt(M_ARENA_MAX, 2)
                _libc = libc
            except (OSError, AttributeError):
                pass
    return _libc or None


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise).

    A worker allocates and frees a few tens of MB per time point; without a trim,
    glibc's growing mmap threshold lets the heap keep them, and a long series would
    hold more memory than a short one. Spawned Dask workers get this from
    ``MALLOC_TRIM_THRESHOLD_``; forked ones inherit the parent's allocator settings.
    """
    libc = _libc_handle()
    if libc is not None:
        libc.malloc_trim(0)

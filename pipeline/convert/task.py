"""The worker side of ``convert``: read one time point, write its volumes.

Kept apart from :mod:`pipeline.convert.run` so that Dask workers import only
the readers and the volume writer (not the NGFF writer or the cluster code).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
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
        Read each chunk back before marking its volume done (see
        :func:`~pipeline.io.volumes.write_volume`).
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
            write_volume(location, task.array_path, task.t, c, volume, verify=verify, stats=False)
            nbytes += volume.nbytes
        data = volume = None  # noqa: F841 - free before reading the next channel
    release_memory()
    return {"array": task.array_path, "t": task.t, "channels": list(task.write), "nbytes": int(nbytes), "seconds": time.perf_counter() - start}


_libc = None
_prepared = False
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def _prepare_process(codec_threads: int | None) -> None:
    """Once per worker process: zarr's thread count and glibc's allocator.

    Only in a worker process of its own: threads of the caller's process (a
    ``memory://`` store's in-process cluster, a notebook) keep their settings.
    """
    global _prepared
    if _prepared:
        return
    _prepared = True
    if multiprocessing.parent_process() is None:
        return
    if codec_threads is not None:
        import zarr

        zarr.config.set({"threading.max_workers": int(codec_threads)})
    _libc_handle()


def _libc_handle():
    """glibc, set up once per process for a worker's allocation pattern (``None`` elsewhere).

    A task allocates and frees buffers of one volume (~11 MB) and its chunks many
    times. Dask's spawned workers run with ``MALLOC_TRIM_THRESHOLD_=65536``, which
    makes glibc map and unmap every such buffer: the page faults doubled the CPU
    time of a conversion. Here large buffers come from the heap (mmap threshold
    32 MiB, no automatic trim), the heap is trimmed once per task
    (:func:`release_memory`), and zarr's compression threads share two arenas; a
    worker's footprint then stays flat over a long series.
    """
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
                libc.mallopt(M_TRIM_THRESHOLD, 256 * 2**20)
                libc.mallopt(M_ARENA_MAX, 2)
                _libc = libc
            except (OSError, AttributeError):
                pass
    return _libc or None


def release_memory() -> None:
    """Hand the heap's free memory back to the system, once per task (see :func:`_libc_handle`)."""
    libc = _libc or None  # set up by _prepare_process in worker processes only
    if libc is not None:
        libc.malloc_trim(0)

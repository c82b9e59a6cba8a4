"""Settings a Dask worker process applies to itself before its first task.

Dask runs one task per worker thread, so libraries' own thread pools (OpenCV,
zarr's codec pool, torch) would only oversubscribe the cores; and Dask's nanny
starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's
mmap threshold at 128 KiB: every buffer of a volume (11-22 MB) and every large
scratch array is then mapped and unmapped afresh. Measured here, that doubled the
CPU time of conversion and of the preprocessing chain inside a worker compared
with a plain process. :func:`tune_worker` lets such buffers come from the heap
(mmap threshold 32 MiB, automatic trim above 256 MiB, two arenas) and
:func:`release_memory` returns the free heap after a task once it exceeds 256 MiB, so a
worker's footprint stays flat over a long series.

Only worker *processes* are changed: threads of the caller's own process (an
in-process cluster for a ``memory://`` store, a notebook) keep their settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import sys

LOG = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

_state: dict[str, object] = {"allocator": False, "libc": None, "codec_threads": None, "opencv_threads": None}


def in_worker_process() -> bool:
    """True in a child process (a Dask worker), False in the process that started the run."""
    return multiprocessing.parent_process() is not None


def tune_worker(*, codec_threads: int | None = 1, opencv_threads: int | None = None) -> None:
    """Once per worker process: glibc's allocator and the libraries' thread pools.

    Parameters
    ----------
    codec_threads : int, optional
        zarr's compression threads (``None``: zarr's default).
    opencv_threads : int, optional
        OpenCV's thread pool (``None``: left alone; imports OpenCV otherwise).
    """
    if not in_worker_process():
        return
    if codec_threads is not None and _state["codec_threads"] != codec_threads:
        import zarr

        zarr.config.set({"threading.max_workers": int(codec_threads)})
        _state["codec_threads"] = codec_threads
    if opencv_threads is not None and _state["opencv_threads"] != opencv_threads:
        import cv2

        cv2.setNumThreads(int(opencv_threads))
        _state["opencv_threads"] = opencv_threads
    if _state["allocator"]:
        return
    _state["allocator"] = True
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
            libc.mallopt(M_TRIM_THRESHOLD, 256 * 2**20)
            libc.mallopt(M_ARENA_MAX, 2)
            if hasattr(libc, "mallinfo2"):
                libc.mallinfo2.restype = _MallInfo2
            _state["libc"] = libc
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            LOG.debug("mallopt not available; allocator left as it is")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


RELEASE_ABOVE = 256 * 2**20
"""Free heap (bytes) above which :func:`release_memory` trims: the same bound as the
automatic trim threshold set by :func:`tune_worker`."""


def free_heap() -> int | None:
    """Bytes of free memory glibc's heap holds (``mallinfo2``), or ``None`` where unknown."""
    libc = _state["libc"]
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    return int(libc.mallinfo2().fordblks)


def release_memory(above: int = RELEASE_ABOVE) -> bool:
    """Hand the heap's free memory back to the system when it holds more than ``above`` bytes.

    Call once per task (a no-op outside workers). Below the bound the memory stays for the
    next task: trimming it every time made the next volume fault ~100 MB of scratch back in
    (about 5 % of a preprocessing task). Returns whether it trimmed.
    """
    libc = _state["libc"]
    if libc is None:
        return False
    free = free_heap()
    if free is not None and free <= above:
        return False
    libc.malloc_trim(0)
    return True

"""The worker side of ``convert``: read one time point, write its volumes.

Kept apart from :mod:`pipeline.convert.run` so that Dask workers import only
the readers and the volume writer (not the NGFF writer or the cluster code).
"""

from __future__ import annotations

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


def convert_timepoint(task: TimepointTask, location: Location, verify: bool = True) -> dict[str, Any]:
    """Read one time point and write its volumes (each verified, then marked done).

    Runs on a Dask worker. Returns only a small summary, never pixels.
    """
    start = time.perf_counter()
    data = task.source.read(task.t, task.read)
    nbytes = 0
    for volume, c in zip(data, task.write):
        if task.rescale is not None:
            volume = rescale_to_uint8(volume, *task.rescale)
        write_volume(location, task.array_path, task.t, c, volume, verify=verify)
        nbytes += volume.nbytes
    return {"array": task.array_path, "t": task.t, "channels": list(task.write), "nbytes": int(nbytes), "seconds": time.perf_counter() - start}

"""Check every finished volume of a store for damage, and unmark the damaged ones.

A volume marked done is trusted by every later stage. If one of its chunk files is
lost or altered afterwards (a disk error, an interrupted copy, a stray ``rm``), reading
it fails with a one-line error naming the volume (see :mod:`pipeline.io.chunks`).
:func:`verify_plate` finds all such volumes at once without decompressing anything
(existence plus the CRC32C of each chunk; arrays written without checksums are decoded
instead), and ``repair`` clears their ``done`` flags and the image's ``complete`` mark,
so that rerunning the stage that wrote them redoes those volumes and nothing else.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pipeline.progress import progress_bar

from pipeline.io.chunks import DamagedVolume, check_volume_chunks
from pipeline.io.plate import Field, Plate
from pipeline.io.volumes import done_path

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Damage:
    """One damaged volume."""

    field: str
    image: str
    t: int
    c: int
    problem: str


def subgroups(group) -> list[str]:
    """Sorted names of ``group``'s child groups. A field's ``tables/`` folder holds Parquet files,
    not zarr nodes: zarr warns about it when listing (a warning, printed by every command, that
    said nothing wrong), so that one warning is not shown."""
    import warnings

    from zarr.errors import ZarrUserWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Object at tables is not recognized", category=ZarrUserWarning)
        return sorted(group.group_keys())


def images_of(field: Field) -> list[tuple[str, bool]]:
    """``(name, is_label)`` of every image and label image of ``field`` (``raw`` first)."""
    group = field.plate.group[field.path]
    names = [("raw", False)] if field.has_image() else []
    names += [(k, False) for k in subgroups(group) if k not in ("labels", "tables") and field.has_image(k)]
    if "labels" in group:
        names += [(k, True) for k in subgroups(group["labels"]) if field.has_labels(k)]
    return names


def verify_plate(plate: Plate, fields: Sequence[str] | None = None, *, repair: bool = False, threads: int = 8, progress: bool = True) -> list[Damage]:
    """Check every done volume of the selected fields; with ``repair``, unmark the damaged ones.

    Parameters
    ----------
    plate : Plate
        The store (opened ``r+`` for ``repair``).
    fields : sequence of str, optional
        Fields to check (``"B10/0"``); all when omitted.
    repair : bool
        Clear the ``done`` flag of every damaged volume and the ``complete`` mark of its image.
    threads : int
        Volumes checked at once (the work is reading chunk files).
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of Damage
        The damaged volumes, in store order.
    """
    jobs = []
    for fld in plate.select(fields):
        for name, is_label in images_of(fld):
            array_path = f"{fld.label_path(name) if is_label else fld.image_path(name)}/0"
            array = plate.location.open_array(array_path)
            done = fld.done(name, label=is_label)
            label = f"labels/{name}" if is_label else name
            jobs += [(fld, name, is_label, label, array, array_path, int(t), int(c)) for t, c in np.argwhere(done)]

    def check(job) -> Damage | None:
        fld, _, _, label, array, array_path, t, c = job
        try:
            check_volume_chunks(array, t, c, where=plate.location.child(array_path), decode=False)
        except DamagedVolume as exc:
            return Damage(str(fld), label, t, c, exc.problem)
        return None

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(progress_bar(pool.map(check, jobs), total=len(jobs), desc="verify", unit="volume", disable=not progress, leave=False))
    damaged = [d for d in results if d is not None]
    LOG.info("checked %d done volume(s): %d damaged", len(jobs), len(damaged))
    if repair and damaged:
        by_image = {}
        for job, result in zip(jobs, results):
            if result is not None:
                by_image.setdefault((job[0].path, job[1], job[2]), (job[0], job[5], []))[2].append((job[6], job[7]))
        for (_, name, is_label), (fld, array_path, volumes) in by_image.items():
            flags = plate.location.open_array(done_path(array_path), mode="r+")
            for t, c in volumes:
                flags[t, c] = 0
            fld.update_attrs(name, label=is_label, complete=False)
            LOG.warning("%s: unmarked %d damaged volume(s) of %s; rerun the stage that wrote it", fld, len(volumes), name)
    return damaged

"""``convert --dry-run``: what a conversion would write, checked as a real run checks it, writing nothing.

Every input header is read and checked (the same :func:`~pipeline.convert.plan.plan_inputs`
as a run), the store rule is applied to ``out`` (create, replace, resume or refuse), and
for a resumable store the volumes already done are counted. No store is created and no
cluster is started, so a biologist can check a pattern, the channels and the metadata
found in the files before starting an hour-long conversion.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from pipeline.config.convert import ConvertConfig
from pipeline.convert.plan import FieldPlan, fingerprint, plan_inputs
from pipeline.convert.run import store_action
from pipeline.errors import StoreError
from pipeline.io.location import Location
from pipeline.io.plate import Plate, parse_well


def preview(
    inputs: Sequence[str | os.PathLike],
    out: str,
    config: ConvertConfig,
    *,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Plan a conversion of ``inputs`` into ``out`` without writing anything.

    Parameters
    ----------
    inputs, out, config, overwrite, storage_options
        As for :func:`pipeline.convert.run.convert`.

    Returns
    -------
    dict
        ``{"store", "action", "fields", "volumes", "to_write", "already_done", "nbytes"}``;
        ``action`` is ``"create"``, ``"replace"`` or ``"resume"``; each field entry
        gives its well, index, shape, dtype, channels, voxel size and time step (each
        with ``"file"`` or ``"config"`` as its origin), source and number of files, and
        its volumes left to write. ``nbytes`` is the raw size of those volumes.

    Raises
    ------
    InputError, ConfigError
        Bad input, exactly as a run reports it.
    StoreError
        When the run would refuse the store, or it cannot be reached.
    """
    plans = plan_inputs(inputs, config)
    location = Location(out, storage_options or {})
    action = store_action(location, fingerprint(plans, config), overwrite)
    done = _done_counts(location) if action == "resume" else {}
    fields = [_describe(plan, done.get((*parse_well(plan.well), plan.index), 0)) for plan in plans]
    return {
        "store": location.url,
        "action": action,
        "fields": fields,
        "volumes": sum(f["volumes"] for f in fields),
        "to_write": sum(f["to_write"] for f in fields),
        "already_done": sum(f["volumes"] - f["to_write"] for f in fields),
        "nbytes": sum(f["to_write"] * f["volume_nbytes"] for f in fields),
    }


def format_preview(summary: dict[str, Any]) -> list[str]:
    """The lines ``spheroid convert --dry-run`` prints."""
    verb = {"create": "would create a new plate store", "replace": "would replace the store (--overwrite)", "resume": "would resume the conversion in this store"}
    lines = [f"{summary['store']}: {verb[summary['action']]}"]
    for f in summary["fields"]:
        t, c, z, y, x = f["shape"]
        vz, vy, vx = f["voxel_size"]
        lines.append(
            f"  {f['well']}/{f['field']}: {t} time point(s) x {c} channel(s) x {z} x {y} x {x} {f['dtype']}; "
            f"channels {', '.join(f['channels'])}; voxel {vz:g} x {vy:g} x {vx:g} um ({f['voxel_size_from']}); "
            f"time step {f['time_step']:g} s ({f['time_step_from']}); from {f['source']} ({f['files']} file(s))"
        )
    lines.append(
        f"{summary['to_write']} volume(s) to write ({summary['nbytes'] / 1e6:.1f} MB before compression), "
        f"{summary['already_done']} already done; nothing was written (--dry-run)"
    )
    return lines


def _describe(plan: FieldPlan, already_done: int) -> dict[str, Any]:
    """:meth:`FieldPlan.describe`, with the files counted, where the metadata came from, and the work left."""
    t, c, z, y, x = plan.shape
    found = plan.source.meta
    return {
        **plan.describe(),
        "voxel_size_from": "file" if all(v is not None for v in found.voxel_size) else "config" if all(v is None for v in found.voxel_size) else "file and config",
        "time_step_from": "file" if found.time_step is not None else "config",
        "files": len(plan.source.files),
        "volumes": t * c,
        "to_write": t * c - already_done,
        "volume_nbytes": z * y * x * np.dtype(plan.dtype).itemsize,
    }


def _done_counts(location: Location) -> dict[tuple[str, str, int], int]:
    """Volumes already done per ``(row, column, field index)`` of an existing plate."""
    plate = Plate.open(location.url, mode="r", storage_options=location.storage_options)
    counts = {}
    for field in plate.fields():
        try:
            counts[(field.row, field.column, field.index)] = int(field.done().sum())
        except (StoreError, KeyError):  # a field whose raw image was not created yet
            counts[(field.row, field.column, field.index)] = 0
    return counts

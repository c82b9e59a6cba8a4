"""Convert raw files into the plate store: one Dask task per (field, time point).

Store rule (what happens when ``--out`` already exists):

* no store there: a new plate is created;
* ``overwrite``: the store is replaced;
* a plate that ``convert`` started from the same inputs (same files, sizes and
  modification times) and the same output settings: the run **resumes**, skipping
  every volume already written and verified (its ``done`` entry is set);
* anything else: refused with a :class:`~pipeline.errors.StoreError` naming the
  store (pass ``--overwrite`` to replace it). A path that holds something other
  than a zarr store is never replaced.

A field's ``raw`` image is marked complete, and the plate's ``convert`` record
written, only after every volume is done: an interrupted run leaves nothing a
later stage would take as finished.

Job arrays (``deploy/slurm/array.sh``): ``layout_only`` creates the store with every
field and its empty ``raw`` image once, before the array starts; each array task then
converts its ``part`` of the fields (in the plate's order, the same part the later
stages' ``--slice`` takes), resuming that store and touching no other field.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import PurePosixPath
from typing import Any, Sequence

import numpy as np

from pipeline.cluster import use_client
from pipeline.config.convert import ConvertConfig
from pipeline.convert.plan import FieldPlan, fingerprint, plan_inputs, uint8_range
from pipeline.convert.task import TimepointTask, convert_timepoint
from pipeline.errors import ConfigError, StoreError
from pipeline.io.location import Location
from pipeline.io.plate import Plate, parse_well
from pipeline.provenance import provenance
from pipeline.runner import run_tasks
from pipeline.slices import Slice

LOG = logging.getLogger(__name__)


def convert(
    inputs: Sequence[str | os.PathLike],
    out: str,
    config: ConvertConfig,
    *,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
    client=None,
    part: Slice | None = None,
    layout_only: bool = False,
) -> dict[str, Any]:
    """Convert ``inputs`` into the plate store at ``out``.

    Parameters
    ----------
    inputs : sequence of path
        Files and folders (see :func:`pipeline.convert.plan.plan_inputs`).
    out : str
        Store path or fsspec URL (``memory://``, ``s3://...``).
    config : ConvertConfig
        Conversion settings and the cluster to run on.
    overwrite : bool
        Replace an existing store instead of resuming it.
    storage_options : dict, optional
        fsspec options for remote stores.
    progress : bool
        Show a progress bar.
    client : distributed.Client, optional
        Run on this client instead of opening ``config.cluster`` (tests, notebooks).
        For a ``memory://`` store its workers must be threads of this process.
    part : Slice, optional
        Convert only this part of the fields (a job-array task); the store must exist,
        made by a ``layout_only`` run (or any earlier run) of the same inputs.
    layout_only : bool
        Create (or check) the store, its fields and their empty ``raw`` images, and
        write no volume.

    Returns
    -------
    dict
        ``{"store", "fields", "written", "skipped", "nbytes", "seconds"}``: volumes
        written in this run and those already done.

    Raises
    ------
    InputError
        Bad input (found before anything is written, or when a task reads a
        truncated file: then that volume stays not done).
    StoreError
        An existing store that may not be replaced or resumed.
    """
    start = time.perf_counter()
    plans = plan_inputs(inputs, config)
    location = Location(out, storage_options or {})
    stamp = fingerprint(plans, config)
    if part is not None:
        if overwrite:
            raise ConfigError("--slice cannot be combined with --overwrite: replace the store with --layout-only --overwrite first")
        if not location.exists():
            raise StoreError(f"{location.url}: no store yet; a job array's tasks fill a store made first by `spheroid convert ... --layout-only`")
    plate = _open_plate(location, stamp, overwrite, name=_plate_name(location.url))
    if part is not None:
        plans = _plans_of_part(plate, plans, part)
        if not plans:
            return {"store": location.url, "fields": [], "written": 0, "skipped": 0, "nbytes": 0, "seconds": time.perf_counter() - start}
    tasks: list[TimepointTask] = []
    skipped = 0
    fields = []
    for plan in plans:
        field = plate.add_field(plan.well, plan.index)
        fields.append(field)
        field.create_image(
            "raw",
            plan.shape,
            plan.dtype,
            plan.meta,
            chunk_yx=config.chunk_yx,
            attrs={"source": plan.source.label},
            compression_level=config.compression_level,
        )
        done = field.done("raw")
        skipped += int(done.sum())
        tasks.extend(_tasks_for(plan, field.array_path("raw"), done, uint8_range(plan, config)))
    if layout_only:
        LOG.info("%s: layout of %d field(s) in place, %d volume(s) done", location.url, len(fields), skipped)
        return {"store": location.url, "fields": [str(f) for f in fields], "written": 0, "skipped": skipped, "nbytes": 0, "seconds": time.perf_counter() - start}
    written = sum(len(t.write) for t in tasks)
    LOG.info("%d volume(s) to write, %d already done", written, skipped)
    results: list[dict] = []
    if tasks:
        kwargs = {"desc": "convert", "progress": progress, "unit": "time point", "location": location, "verify": config.verify, "codec_threads": config.codec_threads}
        with _start_method(config, location.in_memory), use_client(client, config.cluster, in_process=location.in_memory) as own:
            results = run_tasks(own, convert_timepoint, tasks, **kwargs)
    windows = display_windows(results)
    for field in fields:
        if field.array_path("raw") in windows:
            field.set_display_window("raw", windows[field.array_path("raw")])
        if not field.is_complete("raw"):
            field.mark_complete("raw")
    seconds = time.perf_counter() - start
    nbytes = sum(r["nbytes"] for r in results)
    summary = {"store": location.url, "fields": [str(f) for f in fields], "written": written, "skipped": skipped, "nbytes": nbytes, "seconds": seconds}
    plate.record("convert", provenance("convert", config, inputs=[p.describe() for p in plans], fingerprint=stamp, **summary))
    LOG.info(
        "converted %d volume(s) (%.1f MB) in %.1f s (%.1f MB/s); %d already done",
        written, nbytes / 1e6, seconds, nbytes / 1e6 / max(seconds, 1e-9), skipped,
    )
    return summary


def display_windows(results: list[dict]) -> dict[str, dict[int, tuple[float, float]]]:
    """Per array and channel, the medians over the volumes written of their display ranges."""
    import numpy as np

    ranges: dict[str, dict[int, list]] = {}
    for r in results:
        for c, window in r.get("windows", {}).items():
            ranges.setdefault(r["array"], {}).setdefault(int(c), []).append(window)
    return {a: {c: tuple(float(v) for v in np.median(np.asarray(w), axis=0)) for c, w in chans.items()} for a, chans in ranges.items()}


def _plans_of_part(plate: Plate, plans: list[FieldPlan], part: Slice) -> list[FieldPlan]:
    """The plans of ``part`` of the plate's fields, taken in the plate's order (the order the
    later stages slice in), so that one array task converts what it then processes."""
    by_field = {"{}{}/{}".format(*parse_well(plan.well), plan.index): plan for plan in plans}
    order = [str(f) for f in plate.fields()]
    missing = sorted(set(by_field) - set(order))
    if missing:
        raise StoreError(f"{plate.location.url}: no field {missing[0]} in the store; make the layout first with `spheroid convert ... --layout-only`")
    return [by_field[name] for name in part.take(order) if name in by_field]


def _start_method(config: ConvertConfig, in_process: bool):
    """Dask's worker start method for this run's local cluster (see ``ConvertConfig.worker_start``)."""
    import dask
    import distributed  # noqa: F401 - load its config first: leaving dask.config.set drops keys it added

    method = config.worker_start
    if method == "auto":
        method = "fork" if sys.platform.startswith("linux") and sys.version_info < (3, 12) else None
    if method is None or config.cluster.kind != "local" or not config.cluster.processes or in_process:
        return contextlib.nullcontext()
    return dask.config.set({"distributed.worker.multiprocessing-method": method})


def _tasks_for(plan: FieldPlan, array_path: str, done: np.ndarray, rescale) -> list[TimepointTask]:
    out = []
    for t in range(plan.shape[0]):
        todo = [c for c in range(plan.shape[1]) if not done[t, c]]
        if todo:
            out.append(TimepointTask(plan.source.for_timepoint(t), t, tuple(plan.order[c] for c in todo), tuple(todo), array_path, rescale))
    return out


def _plate_name(url: str) -> str:
    name = PurePosixPath(url.rstrip("/")).name
    return name[: -len(".zarr")] if name.endswith(".zarr") else name or "plate"


def store_action(location: Location, stamp: str, overwrite: bool) -> str:
    """What the module's store rule does with ``location``: ``"create"``, ``"replace"`` or ``"resume"``.

    Raises
    ------
    StoreError
        When the rule refuses the store (it holds something else, or another conversion
        and ``overwrite`` is not set), or it cannot be reached.
    """
    if not location.exists():
        _refuse_foreign(location)
        return "create"
    if overwrite:
        return "replace"
    try:
        plate = Plate.open(location.url, mode="r", storage_options=location.storage_options)
    except StoreError:
        raise StoreError(f"{location.url}: exists and is not a plate store; pass --overwrite to replace it") from None
    previous = plate.group.attrs.get("spheroid", {}).get("convert", {}).get("fingerprint")
    if previous != stamp:
        raise StoreError(
            f"{location.url}: store exists and was not made by convert from these inputs and settings; pass --overwrite to replace it"
        )
    return "resume"


def _open_plate(location: Location, stamp: str, overwrite: bool, *, name: str) -> Plate:
    """Create, replace or resume the store according to the module's store rule."""
    action = store_action(location, stamp, overwrite)
    if action == "resume":
        LOG.info("%s: resuming a conversion of the same inputs", location.url)
        return Plate.open(location.url, mode="r+", storage_options=location.storage_options)
    plate = Plate.create(location.url, name=name, storage_options=location.storage_options, overwrite=action == "replace")
    attrs = dict(plate.group.attrs.get("spheroid", {}))
    attrs["convert"] = {"fingerprint": stamp}
    plate.group.attrs["spheroid"] = attrs
    return plate


def _refuse_foreign(location: Location) -> None:
    """Never let zarr wipe a path that holds something else (a folder of raw files, a file)."""
    if location.in_memory:
        return
    try:
        fs, root = location.filesystem()
        if not fs.exists(root):
            return
        if fs.isfile(root) or fs.ls(root):
            raise StoreError(f"{location.url}: exists and is not a zarr store; refusing to replace it (choose another --out)")
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"{location.url}: cannot reach store ({exc})") from exc

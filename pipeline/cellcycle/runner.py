"""``spheroid cellcycle STORE`` and ``spheroid track STORE``: per-nucleus tables for every field.

Cell cycle, in two passes:

1. **Measure** (distributed): one task per ``(field, t)`` reads the raw volume of every
   channel and the labels of that time point, measures every nucleus
   (:func:`pipeline.cellcycle.nuclei.measure_nuclei`) and writes a partial table
   ``tables/<table>.parts/t<t>.parquet`` (atomically: a part that exists is complete).
   Time points whose part exists are skipped, so an interrupted run resumes.
2. **Classify** (client): the parts of all fields are read, one phase model is fitted
   over all nuclei of all wells (:func:`pipeline.cellcycle.model.fit_phase_model`:
   thresholds per experiment), applied, and each field's ``tables/<table>.parquet`` is
   written atomically with the model and the provenance in its metadata.

The settings that change the measurement (input image, labels, background) are kept in
``tables/<table>.parts/settings.json``; a rerun with other settings is refused unless
``overwrite``.

Tracking runs per field after the cell-cycle stage: it streams the field's nuclei
frame by frame through :func:`pipeline.cellcycle.track.track_frames`, writes
``track_id`` / ``parent_track_id`` into ``tables/<table>.parquet`` and the per-track
summary into ``tables/<tracks_table>.parquet``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from pipeline import workers
from pipeline.cellcycle.durations import track_summary
from pipeline.cellcycle.model import apply_phase_model, fit_phase_model
from pipeline.cellcycle.nuclei import measure_nuclei
from pipeline.cellcycle.track import smooth_if_possible, track_frames
from pipeline.config.cellcycle import CellcycleConfig, TrackConfig
from pipeline.errors import ConfigError, StoreError
from pipeline.io.location import Location
from pipeline.io.plate import Field, Plate
from pipeline.io.tables import done_parts, part_name, parts_folder, read_parts, read_table, table_attrs, write_table
from pipeline.io.volumes import read_volume
from pipeline.provenance import provenance, settings_signature
from pipeline.stage import FieldWork, pending_volumes, refuse_other_settings, run_stage

LOG = logging.getLogger(__name__)

STAGE = "cellcycle"
TRACK_STAGE = "track"


@dataclass(frozen=True)
class MeasureTask:
    """One time point of one field."""

    field: str
    field_path: str
    image: str
    labels: str
    t: int
    channels: tuple[str, ...]
    voxel_size: tuple[float, float, float]
    method: str
    shell_um: float
    table: str


def measurement_settings(config: CellcycleConfig) -> dict[str, Any]:
    """The settings that change the measured values (not the thresholds: those are refitted every run)."""
    return {"input": config.input, "labels": config.labels, "background": config.background.model_dump(mode="json")}


def measurement_signature(config: CellcycleConfig) -> str:
    """Short hash of :func:`measurement_settings` (:func:`pipeline.provenance.settings_signature`)."""
    return settings_signature(measurement_settings(config))


def _settings(fld: Field, table: str, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse parts measured with other settings (unless ``overwrite``: then drop them)."""
    signature = settings_signature(settings)
    fs, folder = parts_folder(fld, table)
    path = f"{folder}/settings.json"
    if fs.exists(path):
        with fs.open(path, "rb") as fh:
            stored = json.loads(fh.read().decode()).get("signature")
        refuse_other_settings(f"{fld.plate.location.url}: field {fld} table '{table}'", stored, signature, overwrite)
    if overwrite and fs.exists(folder):
        fs.rm(folder, recursive=True)
    fs.makedirs(folder, exist_ok=True)
    with fs.open(path, "wb") as fh:
        fh.write(json.dumps({"signature": signature, "settings": settings}).encode())


def plan_cellcycle(plate: Plate, config: CellcycleConfig, *, fields=None, overwrite: bool = False, source: str = "<defaults>") -> list[FieldWork]:
    """Check the store against ``config`` and list, per field, the time points to measure.

    Raises
    ------
    StoreError, ConfigError
        A field without a complete image or labels, or channels the store lacks.
    """
    url = plate.location.url
    plans = []
    roles = {k: v for k, v in config.channels.model_dump().items() if v is not None}
    for fld in plate.select(fields):
        if not fld.has_image(config.input) or not fld.is_complete(config.input):
            raise StoreError(f"{url}: field {fld} has no complete '{config.input}' image; run `spheroid convert` first")
        if not fld.has_labels(config.labels) or not fld.is_complete(config.labels, label=True):
            raise StoreError(f"{url}: field {fld} has no complete labels '{config.labels}'; run `spheroid segment` first")
        meta = fld.meta(config.input)
        for role, name in roles.items():
            if name not in meta.channels:
                raise ConfigError(f"{source}: key 'channels.{role}': field {fld} has no channel {name!r} (channels: {', '.join(meta.channels)})")
        shape = fld.image(config.input).shape
        lshape = fld.labels(config.labels).shape
        if lshape[0] != shape[0] or tuple(lshape[-3:]) != tuple(shape[2:]):
            raise StoreError(f"{url}: field {fld} labels '{config.labels}' have shape {lshape}, image '{config.input}' {shape}")
        plans.append(fld)
    work = []
    for fld in plans:
        _settings(fld, config.table, measurement_settings(config), overwrite)
        measured = done_parts(fld, config.table)
        meta = fld.meta(config.input)
        n_t = fld.image(config.input).shape[0]
        done = np.array([t in measured for t in range(n_t)], dtype=bool)
        image, labels = fld.array_path(config.input), f"{fld.label_path(config.labels)}/0"
        channels, voxel = tuple(meta.channels), tuple(float(v) for v in meta.voxel_size)

        def make(t: int, fld=fld, image=image, labels=labels, channels=channels, voxel=voxel) -> MeasureTask:
            return MeasureTask(str(fld), fld.path, image, labels, t, channels, voxel, config.background.method, config.background.shell_um, config.table)

        tasks, skipped = pending_volumes(done, make)
        work.append(FieldWork(fld, tasks, skipped))
    return work


def measure_task(task: MeasureTask, location: Location) -> dict[str, Any]:
    """Worker side: measure one time point of one field and write its part table."""
    workers.tune_worker()
    labels = read_volume(location, task.labels, task.t, 0)
    image = np.stack([read_volume(location, task.image, task.t, c) for c in range(len(task.channels))])
    start = time.perf_counter()
    table = measure_nuclei(labels, image, [c.lower() for c in task.channels], voxel_size=task.voxel_size, method=task.method, shell_um=task.shell_um, t=task.t)
    seconds = time.perf_counter() - start
    plate = Plate(location, location.open_group(mode="r"))
    row, col, index = task.field_path.split("/")
    write_table(Field(plate, row, col, int(index)), part_name(task.table, task.t), table)
    workers.release_memory()
    return {"field": task.field, "t": task.t, "nuclei": len(table), "seconds": seconds}


def run_cellcycle(
    plate: Plate,
    config: CellcycleConfig,
    *,
    fields: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    source: str = "<defaults>",
    client=None,
) -> dict[str, Any]:
    """Measure and classify every nucleus of the selected fields; write ``tables/<table>.parquet``.

    Returns
    -------
    dict
        ``{"fields", "volumes", "skipped", "nuclei", "dead", "seconds", "model"}``.
    """
    work = plan_cellcycle(plate, config, fields=fields, overwrite=overwrite, source=source)
    run = run_stage(plate, STAGE, config, work, measure_task, progress=progress, client=client, unit="time point")
    plans, results, skipped, start = [w.field for w in work], run.results, run.skipped, time.perf_counter() - run.seconds
    tables = {str(f): read_parts(f, config.table) for f in plans}
    combined = pd.concat([t.assign(_field=name) for name, t in tables.items()], ignore_index=True)
    roles = config.channels.model_copy(
        update={k: (v.lower() if isinstance(v, str) else v) for k, v in config.channels.model_dump().items()}
    )
    try:
        model = fit_phase_model(combined, config.model_copy(update={"channels": roles}))
    except ValueError as exc:
        raise StoreError(f"{plate.location.url}: cannot set the phase thresholds: {exc}") from None
    record = provenance(STAGE, config, fields=list(tables), model=model.as_dict())
    n_nuclei = n_dead = 0
    for fld in plans:
        table = apply_phase_model(tables[str(fld)], model)
        table["track_id"] = np.zeros(len(table), dtype=np.int64)
        table["parent_track_id"] = np.zeros(len(table), dtype=np.int64)
        table.attrs["spheroid"] = record
        write_table(fld, config.table, table)
        n_nuclei += len(table)
        n_dead += int(table["dead"].sum())
    plate.record(STAGE, record)
    seconds = time.perf_counter() - start
    summary = {
        "fields": [str(f) for f in plans],
        "volumes": len(results),
        "skipped": skipped,
        "nuclei": n_nuclei,
        "dead": n_dead,
        "seconds": seconds,
        "model": model.as_dict(),
    }
    LOG.info("cell cycle: %d time point(s) measured (%d skipped), %d nuclei (%d dead) in %.1f s", len(results), skipped, n_nuclei, n_dead, seconds)
    return summary


def track_signature(config: TrackConfig) -> str:
    """Short hash of every tracking setting (the tracks depend on all of them)."""
    return settings_signature(config.model_dump(mode="json"))


def _source_signature(attrs: dict[str, Any]) -> str:
    """Identifies the cell-cycle output a field's tracks were made from (its record, less the tracking's)."""
    record = {k: v for k, v in dict(attrs.get("spheroid", {})).items() if k != "track"}
    return settings_signature(record)


def _tracks_state(fld: Field, config: TrackConfig, signature: str, overwrite: bool) -> bool:
    """Whether the field's tracks are complete and made with these settings from the current nucleus table.

    Both tables carry the tracking record (``signature``, and ``source``: the nucleus table's
    cell-cycle record they were made from); the field is done only when both agree with
    this run. A nucleus table re-made by ``spheroid cellcycle`` has no tracking record, so
    its field is tracked again.

    Raises
    ------
    StoreError
        No nucleus table, or tracks made from it with other settings (unless ``overwrite``).
    """
    url = fld.plate.location.url
    nuclei = table_attrs(fld, config.table)
    if nuclei is None:
        raise StoreError(f"{url}: field {fld} has no table '{config.table}'; run `spheroid cellcycle` first")
    done = dict(nuclei.get("spheroid", {})).get("track") or {}
    source = _source_signature(nuclei)
    if done.get("source") == source:
        refuse_other_settings(f"{url}: field {fld} table '{config.table}' (tracks)", done.get("signature"), signature, overwrite)
    if overwrite or done.get("signature") != signature or done.get("source") != source:
        return False
    tracks = table_attrs(fld, config.tracks_table) or {}
    record = dict(tracks.get("spheroid", {}))
    return record.get("signature") == signature and record.get("source") == source


def run_track(plate: Plate, config: TrackConfig, *, fields: Sequence[str] | None = None, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Track the nuclei of every selected field; update ``tables/<table>`` and write ``tables/<tracks_table>``.

    Fields whose tracks are complete, made with the same settings from the current nucleus
    table, are skipped (an interrupted run resumes); tracks made with other settings are
    refused unless ``overwrite``.

    Raises
    ------
    StoreError
        A field without the nucleus table (run ``spheroid cellcycle`` first), with one time
        point, or tracked before with other settings (without ``overwrite``).
    """
    from pipeline.progress import progress_bar

    url = plate.location.url
    signature = track_signature(config)
    plans = []
    skipped = []
    for fld in plate.select(fields):
        if _tracks_state(fld, config, signature, overwrite):
            skipped.append(str(fld))
            continue
        table = read_table(fld, config.table)
        n_t = fld.image().shape[0] if fld.has_image() else int(table["t"].max()) + 1
        if n_t < 2:
            raise StoreError(f"{url}: field {fld} has {n_t} time point; tracking needs at least 2")
        plans.append((fld, table, n_t))
    if skipped:
        LOG.info("tracks complete with these settings in %d field(s), skipped: %s", len(skipped), ", ".join(skipped))
    start = time.perf_counter()
    summary = {"fields": [], "skipped": skipped, "nuclei": 0, "tracks": 0, "divisions": 0}
    for fld, table, n_t in progress_bar(plans, desc=TRACK_STAGE, unit="field", disable=not progress, leave=False):
        source = _source_signature(table.attrs)
        cellcycle_record = {k: v for k, v in dict(table.attrs.get("spheroid", {})).items() if k != "track"}
        table = table.drop(columns=[c for c in ("track_id", "parent_track_id") if c in table])
        table = table.sort_values(["t", "label"]).reset_index(drop=True)
        groups = dict(tuple(table.groupby("t", sort=True)))

        def frames():
            for t in range(n_t):
                frame = groups.get(t, table.iloc[:0])
                frame.attrs["t"] = t
                yield frame

        ids = pd.concat(list(track_frames(frames(), config)), ignore_index=True)
        out = table.merge(ids, on=["t", "label"], how="left", validate="one_to_one")
        out = smooth_if_possible(out.drop(columns=[c for c in ("phase_track", "confidence_track") if c in out]), config)
        meta = fld.meta() if fld.has_image() else None
        phase = "phase_track" if "phase_track" in out else "phase"
        tracks = track_summary(out, time_step_s=(meta.time_step if meta and meta.time_step else 1800.0), n_timepoints=n_t, phase=phase)
        record = provenance(TRACK_STAGE, config, field=str(fld), signature=signature, source=source)
        out.attrs["spheroid"] = {**cellcycle_record, "track": record}
        tracks.attrs["spheroid"] = record
        # the tracks table first: the nucleus table's record is what marks the field done
        write_table(fld, config.tracks_table, tracks)
        write_table(fld, config.table, out)
        summary["fields"].append(str(fld))
        summary["nuclei"] += len(out)
        summary["tracks"] += len(tracks)
        summary["divisions"] += int(tracks["divides"].sum())
    if summary["fields"]:
        plate.record(TRACK_STAGE, provenance(TRACK_STAGE, config, fields=summary["fields"], signature=signature))
    summary["seconds"] = time.perf_counter() - start
    return summary

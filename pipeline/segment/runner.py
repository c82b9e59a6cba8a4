"""Segment every time point of every field on a Dask cluster into ``labels/<output>``.

One task per ``(field, t)``: the worker builds the backend once (cached per process),
reads the channel's volume from Zarr, segments it, writes the labels straight to the
store (read back, marked done), measures every nucleus (:mod:`pipeline.segment.objects`)
into a part table and returns the number of nuclei. Once a field is done its parts become
``tables/<output>-objects.parquet`` beside the labels. Time points already done are
skipped, so an interrupted run resumes (a labelled time point whose part is missing is
only measured). The task loop is :func:`pipeline.stage.run_stage`, shared with the other
per-volume stages.

With ``normalize: series`` (the default) each field's normalisation is found once over its
time series, by one task per field before the volumes' tasks, and stored with its labels
(``attrs["spheroid"]["series_normalization"]``), so a resumed run normalises the time points
still to do exactly as the ones done.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from pipeline.config.segment import SegmentConfig
from pipeline.errors import StoreError
from pipeline.io.location import Location
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Field, Plate
from pipeline.io.tables import done_parts, drop_parts, list_tables, part_name, read_parts, write_table
from pipeline import workers
from pipeline.cluster import use_client
from pipeline.provenance import settings_signature
from pipeline.segment.backends import get_segmenter
from pipeline.segment.inputs import InputPlan, data_voxel_size, resolve_channels
from pipeline.segment.stored import measure_stored, segment_stored, series_plan_stored
from pipeline.stage import FieldWork, run_stage

LOG = logging.getLogger(__name__)

STAGE = "segment"


def objects_table(output: str) -> str:
    """Name of the per-nucleus table of the label image ``output`` (``tables/<name>.parquet``)."""
    return f"{output}-objects"


@dataclass(frozen=True)
class SegmentTask:
    """One time point of one field."""

    field: str
    src: str
    dst: str
    t: int
    channels: tuple[int, ...]
    voxel_size: tuple[float, float, float]
    field_path: str = ""
    """The field's group in the store (``B/10/0``), where the part table goes."""
    channel_names: tuple[str, ...] = ()
    """Every channel of the input image, measured in the per-nucleus table."""
    table: str = ""
    """The per-nucleus table's name (see :func:`objects_table`)."""
    measure_only: bool = False
    """The labels are done already: only measure them (their part table was missing)."""
    normalization: str = ""
    """The field's time-series normalisation (:meth:`InputPlan.to_dict` as JSON); empty: the volume's own."""


#: Key of a label image's attributes holding its time series' normalisation.
SERIES_KEY = "series_normalization"


@dataclass(frozen=True)
class SeriesTask:
    """One field whose time series' normalisation is to be found."""

    field: str
    src: str
    channels: tuple[int, ...]
    low: float
    high: float
    clip: bool
    combine: str


def series_task(task: SeriesTask, location: Location) -> dict[str, Any]:
    """Worker side: the normalisation of one field's time series, as a dict."""
    workers.tune_worker()
    plan = series_plan_stored(location, task.src, task.channels, low=task.low, high=task.high, clip=task.clip, combine=task.combine)
    return plan.to_dict()


def limit_threads(n: int) -> None:
    """Give torch the worker's thread budget (Dask runs one task per thread)."""
    import torch

    workers.tune_worker()
    if workers.in_worker_process() and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def segment_task(task: SegmentTask, location: Location, config_json: str, threads: int) -> dict[str, Any]:
    """Worker side: segment, write and verify one volume, measure its nuclei; return a small summary."""
    limit_threads(threads)
    start = time.perf_counter()
    if not task.measure_only:
        config = SegmentConfig.model_validate_json(config_json)
        segmenter = get_segmenter(config)
        plan = InputPlan.from_dict(json.loads(task.normalization)) if task.normalization else None
        segment_stored(
            location, task.src, task.dst, task.t, task.channels, segmenter, voxel_size=task.voxel_size,
            source=f"{location.url} field {task.field} t={task.t}", plan=plan,
        )
    table = measure_stored(location, task.src, task.dst, task.t, task.channel_names, voxel_size=task.voxel_size)
    plate = Plate(location, location.open_group(mode="r"))
    row, col, index = task.field_path.split("/")
    write_table(Field(plate, row, col, int(index)), part_name(task.table, task.t), table)
    seconds = time.perf_counter() - start
    workers.release_memory()
    return {"field": task.field, "t": task.t, "nuclei": len(table), "seconds": seconds}


INFORMATIVE = ("device", "model_card", "model")
"""Keys of a segmenter's ``describe()`` that do not change the labels (the model folder's path
is one: the same model installed elsewhere gives the same labels; its content hashes count)."""


def segment_settings(config: SegmentConfig, segmenter) -> dict[str, Any]:
    """What determines the labels: input image and channel, tiling, and the model's identity.

    Stored with the labels (``attrs["spheroid"]["settings"]`` and its ``signature``): a
    rerun with other settings is refused unless ``--overwrite``, so a label image never
    mixes time points made differently, and its records always name what made it.
    """
    described = {k: v for k, v in segmenter.describe().items() if k not in INFORMATIVE}
    return {"input": config.input, "channel": config.channel, "normalize": config.normalize, "tile": config.tile, "overlap": config.overlap, **described}


def series_work(work: list[FieldWork], config: SegmentConfig, segmenter) -> list[tuple[FieldWork, SeriesTask | None]]:
    """The fields whose volumes still to segment need their series' normalisation (a task where none is stored).

    A field of one time point is normalised alone (the same values).
    """
    norm = segmenter.card.normalization
    out = []
    for w in work:
        pending = [t for t in w.tasks if not t.measure_only]
        if not pending or w.field.labels(config.output).shape[0] < 2:
            continue
        stored = w.field.attrs(config.output, label=True).get(SERIES_KEY)
        first = pending[0]
        task = None if stored else SeriesTask(field=first.field, src=first.src, channels=first.channels, low=norm.low, high=norm.high, clip=norm.clip, combine=config.combine)
        out.append((w, task))
    return out


def attach_series_plans(plate: Plate, work: list[FieldWork], series, client, output: str, *, progress: bool = True) -> None:
    """Find (on the cluster) the series normalisations not stored yet, store them, and give each field's tasks theirs."""
    from pipeline.runner import run_tasks

    todo = [(w, task) for w, task in series if task is not None]
    if todo:
        plans = run_tasks(client, series_task, [task for _, task in todo], desc="normalise", progress=progress, unit="field", location=plate.location)
        for (w, _), plan in zip(todo, plans):
            w.field.update_attrs(output, label=True, **{SERIES_KEY: plan})
    for w, _ in series:
        plan = json.dumps(w.field.attrs(output, label=True)[SERIES_KEY])
        w.tasks = [t if t.measure_only else replace(t, normalization=plan) for t in w.tasks]


def run_segment(
    plate: Plate,
    config: SegmentConfig,
    *,
    fields: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    source: str = "<defaults>",
    client=None,
) -> dict[str, Any]:
    """Segment the selected fields of ``plate`` (opened ``r+``) into ``labels/<config.output>``.

    Parameters
    ----------
    plate : Plate
        The store.
    config : SegmentConfig
        Backend, model, input image and channel, cluster.
    fields : sequence of str, optional
        Fields (``"B10/0"``); all when omitted.
    overwrite : bool
        Recompute time points already done.
    progress : bool
        Show a progress bar.
    source : str
        Config file name for error messages.
    client : distributed.Client, optional
        Use this client instead of opening ``config.cluster``.

    Returns
    -------
    dict
        ``{"fields", "volumes", "skipped", "nuclei", "seconds"}``.

    Raises
    ------
    StoreError, ConfigError, InputError
        Before any work starts, when the input image, channel or model does not fit.
    """
    segmenter = get_segmenter(config)  # fails early on a missing or bad model
    settings = segment_settings(config, segmenter)
    signature = settings_signature(settings)
    plans = []
    for fld in plate.select(fields):
        if not fld.has_image(config.input) or not fld.is_complete(config.input):
            raise StoreError(f"{plate.location.url}: field {fld} has no complete '{config.input}' image; run the stage that writes it first")
        meta = fld.meta(config.input)
        where = f"{plate.location.url} field {fld} image '{config.input}'"
        channels = resolve_channels(config.channel, meta.channels, len(meta.channels), source=where, model_channels=segmenter.card.channels)
        voxel_size = data_voxel_size(config.voxel_size, meta.voxel_size, source=where)
        segmenter.check(voxel_size=voxel_size, channels=[meta.channels[c] for c in channels], source=where)
        plans.append((fld, meta, tuple(channels), voxel_size))

    table = objects_table(config.output)
    work: list[FieldWork] = []
    for fld, meta, channels, voxel_size in plans:
        shape = fld.image(config.input).shape
        label_meta = ImageMeta(channels=(config.output,), voxel_size=meta.voxel_size, time_step=meta.time_step)
        fld.create_labels(
            config.output,
            (shape[0], 1, *shape[2:]),
            label_meta,
            chunk_yx=tuple(fld.image(config.input).chunks[3:]),
            overwrite=overwrite,
            attrs={"stage": STAGE, "source": config.input, "channel": config.channel, **segmenter.describe(), "settings": settings, "signature": signature},
        )
        if overwrite:
            drop_parts(fld, table)
        done = np.asarray(fld.done(config.output, label=True))[:, 0].astype(bool)
        measured = done_parts(fld, table)
        base = dict(
            field=str(fld), src=fld.array_path(config.input), dst=f"{fld.label_path(config.output)}/0", channels=tuple(channels),
            voxel_size=voxel_size, field_path=fld.path, channel_names=tuple(meta.channels), table=table,
        )
        tasks = [SegmentTask(t=t, measure_only=bool(done[t]), **base) for t in range(shape[0]) if not (done[t] and t in measured)]
        complete = fld.is_complete(config.output, label=True) and table in list_tables(fld)
        work.append(FieldWork(fld, tasks, shape[0] - len(tasks), complete=complete))

    series = series_work(work, config, segmenter) if config.normalize == "series" else []

    def finish(w: FieldWork, record: dict[str, Any]) -> None:
        write_table(w.field, table, read_parts(w.field, table))
        w.field.mark_complete(config.output, label=True, provenance=record)

    opened = use_client(client, config.cluster, in_process=plate.location.in_memory) if series else nullcontext(client)
    with opened as own:
        if series:
            attach_series_plans(plate, work, series, own, config.output, progress=progress)
        run = run_stage(
            plate, STAGE, config, work, segment_task, progress=progress, client=own, mark_complete=finish,
            record={"settings": settings, "signature": signature}, config_json=config.model_dump_json(), threads=config.cluster.threads_per_worker,
        )
    segmented = [r for r, task in zip(run.results, (t for w in work for t in w.tasks)) if not task.measure_only]
    summary = {
        "fields": run.fields,
        "volumes": len(segmented),
        "skipped": run.skipped,
        "nuclei": int(sum(r["nuclei"] for r in segmented)),
        "seconds": run.seconds,
    }
    LOG.info("segmented %d volume(s) in %.1f s (%d skipped), %d nuclei", summary["volumes"], run.seconds, run.skipped, summary["nuclei"])
    return summary

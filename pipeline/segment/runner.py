"""Segment every time point of every field on a Dask cluster into ``labels/<output>``.

One task per ``(field, t)``: the worker builds the backend once (cached per process),
reads the channel's volume from Zarr, segments it, writes the labels straight to the
store (read back, marked done) and returns the number of nuclei. Time points already
done are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

from pipeline.config.segment import SegmentConfig
from pipeline.errors import StoreError
from pipeline.io.location import Location
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline import workers
from pipeline.provenance import provenance, settings_signature
from pipeline.segment.backends import get_segmenter
from pipeline.segment.inputs import data_voxel_size, resolve_channels
from pipeline.segment.stored import segment_stored

LOG = logging.getLogger(__name__)

STAGE = "segment"


@dataclass(frozen=True)
class SegmentTask:
    """One time point of one field."""

    field: str
    src: str
    dst: str
    t: int
    channels: tuple[int, ...]
    voxel_size: tuple[float, float, float]


def limit_threads(n: int) -> None:
    """Give torch the worker's thread budget (Dask runs one task per thread)."""
    import torch

    workers.tune_worker()
    if workers.in_worker_process() and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def segment_task(task: SegmentTask, location: Location, config_json: str, threads: int) -> dict[str, Any]:
    """Worker side: read, segment, write and verify one volume; return a small summary."""
    limit_threads(threads)
    config = SegmentConfig.model_validate_json(config_json)
    segmenter = get_segmenter(config)
    start = time.perf_counter()
    info = segment_stored(
        location, task.src, task.dst, task.t, task.channels, segmenter, voxel_size=task.voxel_size,
        source=f"{location.url} field {task.field} t={task.t}",
    )
    seconds = time.perf_counter() - start
    workers.release_memory()
    return {"field": task.field, "t": task.t, "nuclei": info["nuclei"], "seconds": seconds}


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
    return {"input": config.input, "channel": config.channel, "tile": config.tile, "overlap": config.overlap, **described}


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

    tasks: list[SegmentTask] = []
    skipped = 0
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
        done = fld.done(config.output, label=True)
        for t in range(shape[0]):
            if done[t, 0]:
                skipped += 1
                continue
            tasks.append(SegmentTask(str(fld), fld.array_path(config.input), f"{fld.label_path(config.output)}/0", t, channels, voxel_size))
    if skipped:
        LOG.info("%d time point(s) already segmented: skipped", skipped)

    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    if tasks:
        from pipeline.cluster import use_client
        from pipeline.runner import run_tasks

        with use_client(client, config.cluster, in_process=plate.location.in_memory) as own:
            results = run_tasks(
                own,
                segment_task,
                tasks,
                desc=STAGE,
                progress=progress,
                location=plate.location,
                config_json=config.model_dump_json(),
                threads=config.cluster.threads_per_worker,
            )
    seconds = time.perf_counter() - start

    record = provenance(STAGE, config, fields=[str(p[0]) for p in plans], settings=settings, signature=signature)
    for fld, *_ in plans:
        if not fld.is_complete(config.output, label=True):
            fld.mark_complete(config.output, label=True, provenance=record)
    plate.record(STAGE, record)
    summary = {
        "fields": [str(p[0]) for p in plans],
        "volumes": len(results),
        "skipped": skipped,
        "nuclei": int(sum(r["nuclei"] for r in results)),
        "seconds": seconds,
    }
    LOG.info("segmented %d volume(s) in %.1f s (%d skipped), %d nuclei", summary["volumes"], seconds, skipped, summary["nuclei"])
    return summary

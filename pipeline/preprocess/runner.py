"""Run the preprocessing chain over a plate on a Dask cluster.

One task per ``(field, t, c)`` volume (or, with ``block_shape``, one Dask graph of
blocks per volume; see :mod:`pipeline.preprocess.blocks`). A task opens the store
itself, applies its channel's chain, writes its volume straight to Zarr, reads it back,
marks it done and returns a few numbers. Volumes already done are skipped, so a re-run
resumes an interrupted one; ``overwrite`` starts over.

Everything a user can get wrong (missing or incomplete input image, channel names the
store lacks, a chain that cannot be split as configured, an output written with another
chain) is checked by :func:`plan` before any work starts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Sequence

import numpy as np

from pipeline.config.preprocess import PreprocessConfig
from pipeline.errors import ConfigError, InputError, StoreError
from pipeline.io.location import Location
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Field, Plate
from pipeline.io.volumes import read_volume, write_normalized_volume, write_volume
from pipeline.preprocess import chain as ch
from pipeline.preprocess import steps
from pipeline import workers
from pipeline.stage import FieldWork, pending_volumes, refuse_other_settings, run_stage

LOG = logging.getLogger(__name__)

STAGE = "preprocess"


def tune_worker() -> None:
    """Once per worker process: OpenCV on one thread, zarr on one codec thread, glibc's
    allocator set for volume-sized buffers (see :mod:`pipeline.workers`)."""
    workers.tune_worker(codec_threads=1, opencv_threads=1)


@dataclass(frozen=True)
class VolumeTask:
    """One ``(t, c)`` volume of one field: what a worker needs to process it."""

    field: str
    src: str
    dst: str
    t: int
    c: int
    channel: str
    chain: tuple
    normalized: bool = False
    """Store the integers before the final ``normalize`` step plus its linear map
    (:mod:`pipeline.io.affine`) instead of the float32 result."""


@dataclass
class FieldPlan:
    """What preprocessing will do in one field."""

    field: Field
    shape: tuple[int, ...]
    chunk_yx: tuple[int, int]
    meta: ImageMeta
    dtype: np.dtype
    chains: dict[str, list]
    signature: str
    tasks: list[VolumeTask] = dataclass_field(default_factory=list)
    skipped: int = 0
    stored_dtype: np.dtype | None = None
    """Set when the output is stored as integers of this dtype plus per-volume linear maps."""


def output_dtype(chains: dict[str, list], in_dtype: np.dtype) -> np.dtype:
    """Dtype of the output image: float32 if any channel's chain normalises
    (uint channels are stored exactly as float32), else the widest unsigned result."""
    return np.result_type(*[ch.chain_dtype(c, in_dtype) for c in chains.values()])


def normalized_storage(chains: dict[str, list], in_dtype: np.dtype, block_shape) -> np.dtype | None:
    """The integer dtype to store the output in, when every channel's chain ends with
    ``normalize`` on integers and volumes are processed whole; else ``None`` (float32 as is).

    The float32 result is then a linear map of those integers: storing them with the map
    (:mod:`pipeline.io.affine`) halves the bytes and loses nothing.
    """
    if block_shape is not None:
        return None
    splits = [ch.split_normalize(c, in_dtype) for c in chains.values()]
    if not splits or any(s is None for s in splits):
        return None
    return np.result_type(*[ch.chain_dtype(before, in_dtype) for before, _ in splits])


def plan(
    plate: Plate,
    config: PreprocessConfig,
    *,
    fields: Sequence[str] | None = None,
    overwrite: bool = False,
    source: str = "<defaults>",
) -> list[FieldPlan]:
    """Check the store against ``config`` and list the volumes to process.

    Parameters
    ----------
    plate : Plate
        The store.
    config : PreprocessConfig
        The stage's configuration.
    fields : sequence of str, optional
        Fields to process (``"B10/0"``); all when omitted.
    overwrite : bool
        Recompute volumes already done.
    source : str
        The config file's name, for error messages.

    Returns
    -------
    list of FieldPlan

    Raises
    ------
    StoreError, ConfigError, InputError
        One line naming the field, key or image and the problem.
    """
    from pipeline.preprocess.blocks import check_block_shape

    url = plate.location.url
    plans = []
    for fld in plate.select(fields):
        if not fld.has_image(config.input):
            raise StoreError(f"{url}: field {fld} has no '{config.input}' image; run `spheroid convert` first")
        if not fld.is_complete(config.input):
            done = fld.done(config.input)
            raise StoreError(
                f"{url}: field {fld} image '{config.input}' is incomplete ({int(done.sum())}/{done.size} volumes written); "
                "finish the stage that writes it first"
            )
        array = fld.image(config.input)
        if array.dtype not in (np.uint8, np.uint16):
            raise InputError(f"{url}: field {fld} image '{config.input}' is {array.dtype}; preprocessing needs uint8 or uint16 data")
        meta = fld.meta(config.input)
        for name in config.channels:
            if name not in meta.channels:
                raise ConfigError(
                    f"{source}: key 'channels.{name}': the store has no channel '{name}' in field {fld} "
                    f"(channels: {', '.join(meta.channels)})"
                )
        chains = {name: config.chain_for(name) for name in meta.channels}
        if config.block_shape is not None:
            for name, chain in chains.items():
                try:
                    check_block_shape(chain, config.block_shape, array.shape[2:], name)
                except ConfigError as exc:
                    raise ConfigError(f"{source}: {exc}") from None
        dtype = output_dtype(chains, array.dtype)
        signature = ch.chain_signature(chains)
        stored = normalized_storage(chains, array.dtype, config.block_shape)
        fp = FieldPlan(fld, tuple(array.shape), tuple(array.chunks[3:]), meta, dtype, chains, signature, stored_dtype=stored)
        _check_existing(fp, config, overwrite)
        done = fld.done(config.output) if fld.has_image(config.output) and not overwrite else np.zeros(array.shape[:2], bool)
        src, dst = fld.array_path(config.input), fld.array_path(config.output)
        names = meta.channels
        fp.tasks, fp.skipped = pending_volumes(
            done, lambda t, c: VolumeTask(str(fld), src, dst, t, c, names[c], tuple(chains[names[c]]), normalized=stored is not None)
        )
        plans.append(fp)
    return plans


def _check_existing(fp: FieldPlan, config: PreprocessConfig, overwrite: bool) -> None:
    fld = fp.field
    if overwrite or not fld.has_image(config.output):
        return
    attrs = fld.attrs(config.output)
    existing = fld.image(config.output)
    where = f"{fld.plate.location.url}: field {fld} image '{config.output}'"
    refuse_other_settings(where, attrs.get("signature"), fp.signature, overwrite, what="chain")
    stored = fld.stored_image(config.output).dtype
    if existing.shape != fp.shape or existing.dtype != fp.dtype or stored != (fp.stored_dtype or fp.dtype):
        raise StoreError(f"{where} exists with shape {existing.shape} {existing.dtype} (stored as {stored}); pass --overwrite to replace it")


def process_volume(task: VolumeTask, location: Location) -> dict[str, Any]:
    """Worker side: read one raw volume, apply its chain, write and verify it, mark it done.

    Returns
    -------
    dict
        ``write_volume``'s summary plus ``field``, ``channel`` and ``seconds`` (chain time).
    """
    tune_worker()
    volume = read_volume(location, task.src, task.t, task.c)
    start = time.perf_counter()
    if task.normalized:  # store the integers before `normalize` and its linear map
        before, norm = ch.split_normalize(task.chain, volume.dtype)
        out = ch.apply_chain(volume, before)
        low, high = steps.normalize_bounds(out, low=norm.low, high=norm.high)
        seconds = time.perf_counter() - start
        info = write_normalized_volume(location, task.dst, task.t, task.c, out, low, high, norm.clip, stats=False)
    else:
        out = ch.apply_chain(volume, task.chain)
        seconds = time.perf_counter() - start
        info = write_volume(location, task.dst, task.t, task.c, out, stats=False)
    workers.release_memory()
    info.update(field=task.field, channel=task.channel, seconds=seconds)
    return info


def _image_attrs(fp: FieldPlan, config: PreprocessConfig) -> dict[str, Any]:
    normalised = np.dtype(fp.dtype) == np.float32
    return {
        "stage": STAGE,
        "source": config.input,
        "signature": fp.signature,
        "dtype": str(np.dtype(fp.dtype)),
        "values": "float32: per channel, its normalisation percentiles map to 0 and 1"
        if normalised
        else f"{np.dtype(fp.dtype)}: same intensity units as the chain's last step",
        "block_shape": list(config.block_shape) if config.block_shape else None,
        "chains": {name: ch.describe_chain(chain) for name, chain in fp.chains.items()},
    }


def create_outputs(plans: Sequence[FieldPlan], config: PreprocessConfig, *, overwrite: bool = False) -> None:
    """Create (or keep, to resume) each planned field's output image, with its attributes and codec."""
    for fp in plans:
        fp.field.create_image(
            config.output,
            fp.shape,
            fp.stored_dtype or fp.dtype,
            fp.meta,
            chunk_yx=fp.chunk_yx,
            overwrite=overwrite,
            attrs=_image_attrs(fp, config),
            compression_level=config.compression_level,
            codec=config.compression,
            normalized=fp.stored_dtype is not None,
        )


def run_preprocess(
    plate: Plate,
    config: PreprocessConfig,
    *,
    fields: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    source: str = "<defaults>",
    client=None,
) -> dict[str, Any]:
    """Preprocess every selected field of ``plate`` into image ``config.output``.

    Parameters
    ----------
    plate : Plate
        The store, opened with ``mode="r+"``.
    config : PreprocessConfig
        Chains, output name, cluster.
    fields : sequence of str, optional
        Fields to process (``"B10/0"``); all when omitted.
    overwrite : bool
        Recompute everything instead of resuming.
    progress : bool
        Show a progress bar.
    source : str
        The config file's name, for error messages.
    client : distributed.Client, optional
        Run on this client instead of opening ``config.cluster``.

    Returns
    -------
    dict
        ``{"fields", "volumes", "skipped", "seconds", "chain_seconds"}``.
    """
    plans = plan(plate, config, fields=fields, overwrite=overwrite, source=source)
    create_outputs(plans, config, overwrite=overwrite)
    work = [FieldWork(fp.field, fp.tasks, fp.skipped, complete=fp.field.is_complete(config.output), plan=fp) for fp in plans]
    run = run_stage(
        plate,
        STAGE,
        config,
        work,
        process_volume,
        progress=progress,
        client=client,
        dispatch=(lambda own, tasks: _dispatch(own, plate.location, tasks, config.block_shape, progress)),
        mark_complete=lambda w, record: w.field.mark_complete(config.output, provenance=record),
    )
    summary = {
        "fields": run.fields,
        "volumes": len(run.results),
        "skipped": run.skipped,
        "seconds": run.seconds,
        "chain_seconds": float(sum(r.get("seconds", 0.0) for r in run.results)),
    }
    LOG.info("preprocessed %d volume(s) in %.1f s (%d skipped)", summary["volumes"], run.seconds, run.skipped)
    return summary


def _dispatch(client, location: Location, tasks: list[VolumeTask], block_shape, progress: bool) -> list[dict]:
    from pipeline.progress import progress_bar

    from pipeline.preprocess.blocks import process_volume_blocks
    from pipeline.runner import run_tasks

    if block_shape is None:
        return run_tasks(client, process_volume, tasks, desc=STAGE, progress=progress, location=location)

    out = []
    for task in progress_bar(tasks, desc=f"{STAGE} (blocks)", unit="volume", disable=not progress, leave=False):
        info = process_volume_blocks(client, location, task.src, task.dst, task.t, task.c, task.chain, block_shape)
        info.update(field=task.field, channel=task.channel)
        out.append(info)
    return out

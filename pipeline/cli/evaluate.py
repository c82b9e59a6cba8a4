"""``spheroid evaluate``: score predicted nuclei against ground truth."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from pipeline.cli.options import (
    apply_cluster_overrides,
    config_option,
    overwrite_option,
    parse_storage_options,
    progress_disabled,
    scheduler_option,
    storage_option,
    workers_option,
)
from pipeline.config.evaluate import EvaluateConfig

LOG = logging.getLogger(__name__)


@click.command()
@click.option("--truth", required=True, metavar="T", help="Ground-truth labels: a label TIFF (ZYX, TZYX...), a folder of them, or a store.")
@click.option("--pred", required=True, metavar="P", help="Predicted labels: a label TIFF, a folder of them (paired by file name), or a store.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the tables, summary.json, figures and volumes/.")
@config_option(EvaluateConfig)
@click.option("--image", default=None, metavar="RAW", help="Raw image under the overlay's outlines: a TIFF, a folder (paired by file name) or a store; default: the store's raw image.")
@click.option("--field", "fields", multiple=True, metavar="WELL/I", help="Only this field of the stores (repeatable); needed to pair a label TIFF with a store of several fields.")
@click.option("--t", "times", multiple=True, type=click.IntRange(min=0), metavar="T", help="Only this time point (repeatable); pairs a single-volume label TIFF with time point T of a store.")
@click.option("--labels", default=None, metavar="NAME", help="labels/<NAME> of both stores (sets truth_labels and pred_labels).")
@click.option("--truth-labels", default=None, metavar="NAME", help="labels/<NAME> of the ground-truth store.")
@click.option("--pred-labels", default=None, metavar="NAME", help="labels/<NAME> of the prediction store.")
@click.option("--semantic-truth", default=None, metavar="S", help="Ground-truth class maps (0 background, 1 edge, 2 nucleus) for pixel metrics.")
@click.option("--semantic-pred", default=None, metavar="S", help="Predicted class maps, paired like --pred.")
@click.option("--threshold", "report_threshold", type=float, default=None, help="Threshold of the per-nucleus match columns (one of the config's thresholds).")
@overwrite_option
@workers_option
@scheduler_option
@storage_option
def evaluate(
    truth: str,
    pred: str,
    out: Path,
    config: EvaluateConfig,
    image: str | None,
    fields: tuple[str, ...],
    times: tuple[int, ...],
    labels: str | None,
    truth_labels: str | None,
    pred_labels: str | None,
    semantic_truth: str | None,
    semantic_pred: str | None,
    report_threshold: float | None,
    overwrite: bool,
    workers: int | None,
    scheduler: str | None,
    storage_options: tuple[str, ...],
) -> None:
    """Match predicted nuclei to ground truth (StarDist's metrics at every threshold), score each
    nucleus (thesis Eq. 9) and write DIR/summary.json, nuclei.csv, predicted.csv, per_image.csv,
    matching.csv and PNG figures.

    \b
    Label TIFF against label TIFF:  spheroid evaluate --truth truth.tif --pred pred.tif --out eval/
    Folders of label TIFFs:         spheroid evaluate --truth gt/ --pred pred/ --out eval/
    A store's labels against a TIFF: spheroid evaluate --truth truth.tif --pred exp1.zarr --field B10/0 --t 0 --out eval/

    Many volumes (folders, time series, store fields) are evaluated in parallel, one Dask
    task per volume, and pooled. Each volume's result is kept in DIR/volumes/ as soon as it
    is done: the same command run again resumes (finished volumes are skipped and the pooled
    files rewritten); with other settings it is refused unless --overwrite.
    """
    started = time.perf_counter()
    from pipeline.config.base import load_config
    from pipeline.evaluate.raw import attach_raw
    from pipeline.evaluate.results import VolumeResults, settings_of
    from pipeline.evaluate.run import OUTPUTS, evaluate_to, overlay_index
    from pipeline.evaluate.sources import pair_sources
    from pipeline.provenance import provenance

    updates = {
        "truth_labels": truth_labels or labels,
        "pred_labels": pred_labels or labels,
        "report_threshold": report_threshold,
    }
    updates = {k: v for k, v in updates.items() if v is not None}
    if updates:  # re-validate, so that a bad --threshold is reported like a bad config value
        config = load_config(EvaluateConfig, None, {**config.model_dump(mode="json"), **updates})
    config = apply_cluster_overrides(config, workers, scheduler)
    options = parse_storage_options(storage_options)
    items = pair_sources(
        truth,
        pred,
        truth_labels=config.truth_labels,
        pred_labels=config.pred_labels,
        semantic_truth=semantic_truth,
        semantic_pred=semantic_pred,
        semantic_labels=config.semantic_labels,
        storage_options=options,
        axes=config.tiff_axes,
        channel_names=config.channel_names,
        fields=list(fields) or None,
        times=list(times) or None,
    )
    shown = overlay_index(items, config)
    if shown is not None:
        items = attach_raw(items, [shown], image, channel=config.plots.image_channel, storage_options=options)
    sources = {"truth": truth, "pred": pred, "semantic_truth": semantic_truth, "semantic_pred": semantic_pred}
    results = VolumeResults(out)
    results.open(settings_of(config, sources), overwrite=overwrite, legacy=[name for name in OUTPUTS if (out / name).exists()])
    LOG.info("evaluating %d volume pair(s)", len(items))
    record = provenance("evaluate", config, truth=truth, pred=pred, semantic_truth=semantic_truth, semantic_pred=semantic_pred, image=image)
    evaluation = evaluate_to(items, config, out, progress=not progress_disabled(), provenance=record, results=results, started=started)
    rep = evaluation.pooled[config.report_threshold]
    LOG.info(
        "%d volume(s), %d true / %d predicted nuclei; at %s >= %s: precision %.3f recall %.3f F1 %.3f; Evaluation Score %.3f",
        len(items), rep.n_true, rep.n_pred, config.criterion, config.report_threshold,
        rep.precision, rep.recall, rep.f1, evaluation.summary["evaluation_score"],
    )  # fmt: skip
    click.echo(f"wrote {out}/summary.json, tables and figures (per-volume results in {out}/volumes/)")

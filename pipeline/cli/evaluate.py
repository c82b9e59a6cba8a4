"""``spheroid evaluate``: score predicted nuclei against ground truth."""

from __future__ import annotations

import logging
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
from pipeline.errors import InputError

LOG = logging.getLogger(__name__)


@click.command()
@click.option("--truth", required=True, metavar="T", help="Ground-truth labels: a TIFF (ZYX, TZYX...), a folder of TIFFs, or a store.")
@click.option("--pred", required=True, metavar="P", help="Predicted labels, of the same kind as --truth (folders pair by file name).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for nuclei.csv, summary.json and the figures.")
@config_option(EvaluateConfig)
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
    nucleus (thesis Eq. 9) and write DIR/nuclei.csv, DIR/summary.json and PNG figures.

    Many volumes (folders, time series, store fields) are evaluated in parallel and pooled.
    """
    from pipeline.cluster import open_client
    from pipeline.config.base import load_config
    from pipeline.evaluate.run import OUTPUTS, run_evaluation, write_outputs
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
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise InputError(f"{out}: holds a previous evaluation ({existing[0]}); pass --overwrite to replace it")
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
    )
    LOG.info("evaluating %d volume pair(s)", len(items))
    progress = not progress_disabled()
    if len(items) == 1:
        evaluation = run_evaluation(items, config, progress=progress)
    else:
        in_memory = any(ref is not None and ref.location is not None and ref.location.in_memory for it in items for ref in (it.truth, it.pred))
        with open_client(config.cluster, in_process=in_memory) as client:
            evaluation = run_evaluation(items, config, client=client, progress=progress)
    record = provenance("evaluate", config, truth=truth, pred=pred, semantic_truth=semantic_truth, semantic_pred=semantic_pred)
    write_outputs(evaluation, items, out, config, provenance=record)
    rep = evaluation.pooled[config.report_threshold]
    LOG.info(
        "%d volume(s), %d true / %d predicted nuclei; at %s >= %s: precision %.3f recall %.3f F1 %.3f; Evaluation Score %.3f",
        len(items), rep.n_true, rep.n_pred, config.criterion, config.report_threshold,
        rep.precision, rep.recall, rep.f1, evaluation.summary["evaluation_score"],
    )  # fmt: skip
    click.echo(f"wrote {out}/summary.json, nuclei.csv, per_image.csv and figures")

"""Evaluate many volume pairs on the Dask cluster, pool them and write tables and figures.

Each task reads its own pair (:class:`~pipeline.evaluate.sources.EvalItem`) and
returns only small results: per-threshold counts, the per-nucleus rows and, for
semantic masks, a confusion matrix. The client pools them as a micro average
(counts and score sums added over volumes before the ratios, as StarDist's
``matching_dataset``) and keeps the per-volume figures too.

Outputs in ``DIR``: ``summary.json``, ``nuclei.csv``, ``per_image.csv``,
``matching.csv`` and the figures ``metrics_vs_threshold.png``,
``score_histogram.png``, ``overlay.png``. They are written to a scratch folder and
moved in place at the end, so a failed run leaves no half-written result.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.base import config_to_dict
from pipeline.config.evaluate import EvaluateConfig
from pipeline.errors import InputError
from pipeline.evaluate.matching import Matching, match_overlap, match_thresholds, pool
from pipeline.evaluate.overlap import label_overlap
from pipeline.evaluate.pixel import confusion_matrix, metrics_from_confusion
from pipeline.evaluate.score import NUCLEUS_COLUMNS, ScoreWeights, channel_scores, nucleus_scores
from pipeline.evaluate.sources import EvalItem

LOG = logging.getLogger(__name__)

OUTPUTS = ("summary.json", "nuclei.csv", "per_image.csv", "matching.csv", "metrics_vs_threshold.png", "score_histogram.png", "overlay.png")
IMAGE_KEYS = ("image", "channel", "t")


def threshold_key(t: float) -> str:
    """How a threshold is written in ``summary.json``: ``0.5 -> "0.5"``."""
    return str(float(round(t, 6)))


def evaluate_pair(y_true: np.ndarray, y_pred: np.ndarray, config: EvaluateConfig, *, names: tuple[str, str] = ("y_true", "y_pred")) -> dict[str, Any]:
    """Everything the evaluation keeps of one volume pair.

    Parameters
    ----------
    y_true, y_pred : numpy.ndarray
        Ground-truth and predicted labels of the same shape.
    config : EvaluateConfig
        Thresholds, criterion, score weights.
    names : tuple of str
        How the two arrays are named in errors.

    Returns
    -------
    dict
        ``matching`` (``{thresh: Matching}``), ``nuclei`` (DataFrame), ``report``
        (the Matching at ``report_threshold``, with its pairs).
    """
    overlap = label_overlap(y_true, y_pred, names=names)
    per_thr = match_thresholds(overlap, thresholds=config.thresholds, criterion=config.criterion)
    report = match_overlap(overlap, config.report_threshold, config.criterion, report_matches=True)
    nuclei = nucleus_scores(y_true, y_pred, overlap=overlap, match=report, weights=ScoreWeights(config.sub_weight, config.full_weight, config.sub_region))
    return {"matching": per_thr, "nuclei": nuclei, "report": report}


def evaluate_item(item: EvalItem, config: dict[str, Any]) -> dict[str, Any]:
    """Dask task: read one pair, evaluate it, return small plain results (no arrays).

    Parameters
    ----------
    item : EvalItem
        What to read.
    config : dict
        The :class:`EvaluateConfig` as plain data.
    """
    cfg = EvaluateConfig.model_validate(config)
    y_true, y_pred = item.truth.load(), item.pred.load()
    if y_true.shape != y_pred.shape:
        raise InputError(f"{item.truth.label} has shape {y_true.shape} but {item.pred.label} has shape {y_pred.shape}")
    result = evaluate_pair(y_true, y_pred, cfg, names=(item.truth.label, item.pred.label))
    confusion = None
    if item.semantic_truth is not None and item.semantic_pred is not None:
        confusion = confusion_matrix(
            item.semantic_truth.load(), item.semantic_pred.load(), len(cfg.class_names), names=(item.semantic_truth.label, item.semantic_pred.label)
        ).tolist()
    return {
        "image": item.image,
        "channel": item.channel,
        "t": item.t,
        "matching": {t: m.as_dict() for t, m in result["matching"].items()},
        "nuclei": result["nuclei"].to_dict("list"),
        "confusion": confusion,
    }


@dataclass(frozen=True)
class Evaluation:
    """Pooled results of many volumes.

    Attributes
    ----------
    pooled : dict
        ``{thresh: Matching}`` micro-averaged over all volumes.
    per_image : list of dict
        ``{thresh: Matching}`` per volume, in item order.
    images : pandas.DataFrame
        One row per volume (``per_image.csv``).
    nuclei : pandas.DataFrame
        One row per ground-truth nucleus of every volume (``nuclei.csv``).
    summary : dict
        What ``summary.json`` holds.
    """

    pooled: dict[float, Matching]
    per_image: list[dict[float, Matching]]
    images: pd.DataFrame
    nuclei: pd.DataFrame
    summary: dict[str, Any]


def pool_results(results: list[dict[str, Any]], config: EvaluateConfig) -> Evaluation:
    """Pool task results: micro-averaged matching, channel-averaged Evaluation Score, pixel metrics."""
    if not results:
        raise InputError("no volumes were evaluated")
    per_image = [{float(t): Matching(**m) for t, m in r["matching"].items()} for r in results]
    pooled = {t: pool([m[t] for m in per_image]) for t in config.thresholds}
    frames = []
    for r in results:
        frame = pd.DataFrame(r["nuclei"], columns=list(NUCLEUS_COLUMNS))
        for i, key in enumerate(IMAGE_KEYS):
            frame.insert(i, key, r[key])
        frames.append(frame)
    nuclei = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*IMAGE_KEYS, *NUCLEUS_COLUMNS])
    score, per_channel = channel_scores(nuclei, "evaluation_score")
    full, _ = channel_scores(nuclei, "full_dice")
    sub, _ = channel_scores(nuclei, "sub_dice")
    rep = config.report_threshold
    rows = []
    for r, m, frame in zip(results, per_image, frames):
        row = {key: r[key] for key in IMAGE_KEYS}
        row.update({"n_true": m[rep].n_true, "n_pred": m[rep].n_pred, "thresh": rep, **m[rep].summary()})
        row["evaluation_score"] = float(frame["evaluation_score"].mean()) if len(frame) else 0.0
        row["full_dice"] = float(frame["full_dice"].mean()) if len(frame) else 0.0
        row["sub_dice"] = float(frame["sub_dice"].mean()) if len(frame) else 0.0
        if config.ctc_seg:
            row["ctc_seg"] = float(frame["ctc_jaccard"].mean()) if len(frame) else 0.0
        if r["confusion"] is not None:
            for name, values in metrics_from_confusion(np.asarray(r["confusion"]), config.class_names).items():
                row[f"{name}_f1"] = values["f1"]
                row[f"{name}_iou"] = values["iou"]
        rows.append(row)
    images = pd.DataFrame(rows)
    first = pooled[config.thresholds[0]]
    summary: dict[str, Any] = {
        "criterion": config.criterion,
        "thresholds": list(config.thresholds),
        "report_threshold": rep,
        "n_images": len(results),
        "n_true": first.n_true,
        "n_pred": first.n_pred,
        "matching": {threshold_key(t): pooled[t].summary() for t in config.thresholds},
        "evaluation_score": score,
        "evaluation_score_per_channel": per_channel,
        "full_dice": full,
        "sub_dice": sub,
    }
    if config.ctc_seg:
        summary["ctc_seg"] = float(nuclei["ctc_jaccard"].mean()) if len(nuclei) else 0.0
    confusions = [np.asarray(r["confusion"], np.int64) for r in results if r["confusion"] is not None]
    if confusions:
        total = np.sum(confusions, axis=0)
        summary["pixel_metrics"] = metrics_from_confusion(total, config.class_names)
        summary["pixel_confusion"] = total.tolist()
    return Evaluation(pooled, per_image, images, nuclei, summary)


def matching_table(evaluation: Evaluation, items: list[EvalItem]) -> pd.DataFrame:
    """Long table: every threshold of every volume, then the pooled rows (``image = "all"``)."""
    rows = []
    for item, per in zip(items, evaluation.per_image):
        for t, m in per.items():
            rows.append({"image": item.image, "channel": item.channel, "t": item.t, **m.as_dict()})
    for t, m in evaluation.pooled.items():
        rows.append({"image": "all", "channel": "all", "t": -1, **m.as_dict()})
    return pd.DataFrame(rows)


def run_evaluation(items: list[EvalItem], config: EvaluateConfig, *, client=None, progress: bool = True) -> Evaluation:
    """Evaluate every item (on ``client`` when given, else in this process) and pool.

    Raises
    ------
    InputError
        From the first volume with bad labels (the remaining tasks are cancelled).
    """
    from pipeline.progress import progress_bar

    plain = config_to_dict(config)
    if client is None:
        results = [evaluate_item(item, plain) for item in progress_bar(items, desc="evaluate", unit="volume", disable=not progress, leave=False)]
    else:
        from pipeline.runner import run_tasks

        results = run_tasks(client, evaluate_item, items, desc="evaluate", progress=progress, config=plain)
    return pool_results(results, config)


def write_outputs(evaluation: Evaluation, items: list[EvalItem], out: str | Path, config: EvaluateConfig, *, provenance: dict[str, Any] | None = None) -> list[Path]:
    """Write tables, ``summary.json`` and figures to ``out`` (all or nothing).

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=out))
    try:
        summary = dict(evaluation.summary)
        if provenance is not None:
            summary["provenance"] = provenance
        (scratch / "summary.json").write_text(json.dumps(summary, indent=2))
        evaluation.nuclei.to_csv(scratch / "nuclei.csv", index=False)
        evaluation.images.to_csv(scratch / "per_image.csv", index=False)
        matching_table(evaluation, items).to_csv(scratch / "matching.csv", index=False)
        if config.plots.enabled:
            _figures(evaluation, items, scratch, config)
        written = []
        for path in sorted(scratch.iterdir()):
            os.replace(path, out / path.name)
            written.append(out / path.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return written


def _figures(evaluation: Evaluation, items: list[EvalItem], folder: Path, config: EvaluateConfig) -> None:
    from pipeline.evaluate.plots import overlay_categories, plot_metrics, plot_overlay, plot_score_histogram

    dpi = config.plots.dpi
    plot_metrics(evaluation.pooled, folder / "metrics_vs_threshold.png", per_image=evaluation.per_image if len(items) > 1 else (), dpi=dpi)
    plot_score_histogram(evaluation.nuclei, folder / "score_histogram.png", bins=config.plots.histogram_bins, dpi=dpi)
    item = items[min(config.plots.overlay_image, len(items) - 1)]
    y_true, y_pred = item.truth.load(), item.pred.load()
    report = match_overlap(label_overlap(y_true, y_pred), config.report_threshold, config.criterion, report_matches=True)
    if config.plots.overlay_slice is not None:
        z = min(config.plots.overlay_slice, y_true.shape[0] - 1)
    else:
        z = int(np.argmax((y_true > 0).reshape(y_true.shape[0], -1).sum(1)))
    categories = overlay_categories(y_true[z], y_pred[z], report.matched_pairs)
    title = (
        f"{item.image} channel {item.channel} t={item.t} z={z}: {config.criterion.upper()} >= {config.report_threshold}, "
        f"TP {report.tp}  FP {report.fp}  FN {report.fn} (whole volume)"
    )
    plot_overlay(categories, y_true[z], folder / "overlay.png", title=title, dpi=dpi)

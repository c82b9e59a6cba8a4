"""Evaluate many volume pairs on the Dask cluster, pool them and write tables and figures.

One task per volume (:func:`pipeline.evaluate.task.evaluate_item`): each reads its own
pair and returns only small results (per-threshold counts, per-nucleus rows, a confusion
matrix, a few slices for the overlay), so no volume goes to the client. A single pair
(two files) is evaluated in this process (starting a cluster would cost more than it).
Results are kept per volume as they arrive (:mod:`pipeline.evaluate.results`), so an
interrupted run resumes. The client pools them as a micro average (counts and score sums
added over volumes before the ratios, as StarDist's ``matching_dataset``) and keeps the
per-volume figures too.

Outputs in ``DIR``: ``summary.json``, ``nuclei.csv``, ``predicted.csv``,
``per_image.csv``, ``matching.csv``, the figures ``metrics_vs_threshold.png``,
``score_histogram.png``, ``errors.png``, ``overlay.png``, and ``volumes/``. The pooled
files are written to a scratch folder and renamed into place, ``summary.json`` last and
only after the previous one is removed: a folder with a ``summary.json`` holds a complete,
consistent set.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.base import config_to_dict
from pipeline.config.evaluate import EvaluateConfig
from pipeline.errors import InputError
from pipeline.evaluate.failures import PRED_COLUMNS, TRUTH_COLUMNS
from pipeline.evaluate.matching import Matching, pool
from pipeline.evaluate.pixel import metrics_from_confusion
from pipeline.evaluate.results import VolumeResults, item_stamp, overlay_key
from pipeline.evaluate.score import NUCLEUS_COLUMNS, channel_scores
from pipeline.evaluate.sources import EvalItem
from pipeline.evaluate.task import evaluate_item

LOG = logging.getLogger(__name__)

SUMMARY = "summary.json"
TABLES = ("nuclei.csv", "predicted.csv", "per_image.csv", "matching.csv")
FIGURES = ("metrics_vs_threshold.png", "score_histogram.png", "errors.png", "overlay.png")
#: Every file an evaluation writes in its folder (``summary.json`` last), and the kept volumes.
OUTPUTS = (*TABLES, *FIGURES, SUMMARY)
IMAGE_KEYS = ("image", "channel", "t")


def threshold_key(t: float) -> str:
    """How a threshold is written in ``summary.json``: ``0.5 -> "0.5"``."""
    return str(float(round(t, 6)))


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
    predicted : pandas.DataFrame
        One row per predicted object of every volume (``predicted.csv``).
    summary : dict
        What ``summary.json`` holds.
    overlay : dict or None
        The record of the volume the overlay shows (its slices and tables).
    timings : dict
        Seconds spent reading, matching and on the rest, added over volumes.
    """

    pooled: dict[float, Matching]
    per_image: list[dict[float, Matching]]
    images: pd.DataFrame
    nuclei: pd.DataFrame
    predicted: pd.DataFrame
    summary: dict[str, Any]
    overlay: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _frame(record: dict[str, Any], group: str, columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame({c: record[group][c] for c in columns}, columns=list(columns))
    for i, key in enumerate(IMAGE_KEYS):
        frame.insert(i, key, record[key])
    return frame


def pool_results(results: list[dict[str, Any]], config: EvaluateConfig) -> Evaluation:
    """Pool volume records: micro-averaged matching, channel-averaged Evaluation Score, pixel metrics."""
    if not results:
        raise InputError("no volumes were evaluated")
    per_image = [{float(t): Matching(**m) for t, m in r["matching"].items()} for r in results]
    pooled = {t: pool([m[t] for m in per_image]) for t in config.thresholds}
    frames = [_frame(r, "nuclei", (*NUCLEUS_COLUMNS, *TRUTH_COLUMNS)) for r in results]
    nuclei = pd.concat(frames, ignore_index=True)
    predicted = pd.concat([_frame(r, "predicted", PRED_COLUMNS) for r in results], ignore_index=True)
    score, per_channel = channel_scores(nuclei, "evaluation_score")
    full, _ = channel_scores(nuclei, "full_dice")
    sub, _ = channel_scores(nuclei, "sub_dice")
    rep = config.report_threshold
    rows = []
    for r, m, frame in zip(results, per_image, frames):
        row = {key: r[key] for key in IMAGE_KEYS}
        row.update({"n_true": m[rep].n_true, "n_pred": m[rep].n_pred, "thresh": rep, **m[rep].summary()})
        for column in ("evaluation_score", "full_dice", "sub_dice"):
            row[column] = float(frame[column].mean()) if len(frame) else 0.0
        if config.ctc_seg:
            row["ctc_seg"] = float(frame["ctc_jaccard"].mean()) if len(frame) else 0.0
        row["merged"] = int(frame["merged"].sum())
        row["split"] = int(frame["split"].sum())
        if r["confusion"] is not None:
            for name, values in metrics_from_confusion(np.asarray(r["confusion"]), config.class_names).items():
                row[f"{name}_f1"] = values["f1"]
                row[f"{name}_iou"] = values["iou"]
        rows.append(row)
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
        "merged_nuclei": int(nuclei["merged"].sum()),
        "split_nuclei": int(nuclei["split"].sum()),
    }
    if config.ctc_seg:
        summary["ctc_seg"] = float(nuclei["ctc_jaccard"].mean()) if len(nuclei) else 0.0
    confusions = [np.asarray(r["confusion"], np.int64) for r in results if r["confusion"] is not None]
    if confusions:
        total = np.sum(confusions, axis=0)
        summary["pixel_metrics"] = metrics_from_confusion(total, config.class_names)
        summary["pixel_confusion"] = total.tolist()
    overlay = next((r for r in results if r.get("overlay") is not None), None)
    timings: dict[str, float] = {}
    for r in results:
        for key, value in r.get("timings", {}).items():
            timings[key] = timings.get(key, 0.0) + float(value)
    return Evaluation(pooled, per_image, pd.DataFrame(rows), nuclei, predicted, summary, overlay, timings)


def matching_table(evaluation: Evaluation) -> pd.DataFrame:
    """Long table: every threshold of every volume, then the pooled rows (``image = "all"``)."""
    rows = []
    for (_, image), per in zip(evaluation.images.iterrows(), evaluation.per_image):
        for m in per.values():
            rows.append({"image": image["image"], "channel": image["channel"], "t": image["t"], **m.as_dict()})
    for m in evaluation.pooled.values():
        rows.append({"image": "all", "channel": "all", "t": -1, **m.as_dict()})
    return pd.DataFrame(rows)


def overlay_index(items: list[EvalItem], config: EvaluateConfig) -> int | None:
    """Which item the overlay shows (None without figures)."""
    return min(config.plots.overlay_image, len(items) - 1) if config.plots.enabled and items else None


def run_evaluation(
    items: list[EvalItem],
    config: EvaluateConfig,
    *,
    client=None,
    progress: bool = True,
    results: VolumeResults | None = None,
) -> Evaluation:
    """Evaluate every item not already kept in ``results`` and pool them all.

    Parameters
    ----------
    items : list of EvalItem
        The pairs (the one the overlay shows with its raw image attached, if any).
    config : EvaluateConfig
        The settings.
    client : distributed.Client, optional
        Run on this cluster; without one, a single pair runs in this process and several
        (even when only one is left to do) on the cluster of ``config.cluster``.
    progress : bool
        Show a progress bar.
    results : VolumeResults, optional
        Where volume results are kept (already opened); none: nothing is kept.

    Raises
    ------
    InputError
        From the first volume with bad labels (the remaining tasks are cancelled; the
        volumes finished before are kept).
    """
    plain = config_to_dict(config)
    shown = overlay_index(items, config)
    wanted = list(config.plots.overlay_slices or [])
    stamps = [item_stamp(item) for item in items]
    keys = [overlay_key(item, wanted) if i == shown else None for i, item in enumerate(items)]
    records: list[dict[str, Any] | None] = [None] * len(items)
    if results is not None:
        records = [results.load(item, stamp, key) for item, stamp, key in zip(items, stamps, keys)]
        kept = sum(r is not None for r in records)
        if kept:
            LOG.info("%d of %d volume(s) already evaluated: kept", kept, len(items))
    todo = [i for i, r in enumerate(records) if r is None]

    def keep(j: int, record: dict[str, Any]) -> None:
        i = todo[j]
        records[i] = record
        if results is not None:
            results.save(items[i], record, stamps[i], keys[i])

    tasks = [replace(items[i], overlay=tuple(wanted)) if i == shown else items[i] for i in todo]
    if todo and len(items) == 1 and client is None:
        keep(0, evaluate_item(tasks[0], plain))
    elif todo:
        from pipeline.cluster import use_client
        from pipeline.runner import run_tasks

        in_memory = any(ref is not None and ref.location is not None and ref.location.in_memory for it in items for ref in (it.truth, it.pred, it.raw))
        with use_client(client, config.cluster, in_process=in_memory) as own:
            run_tasks(own, evaluate_item, tasks, desc="evaluate", progress=progress, on_result=keep, config=plain)
    return pool_results(records, config)


def write_outputs(evaluation: Evaluation, out: str | Path, config: EvaluateConfig, *, provenance: dict[str, Any] | None = None) -> list[Path]:
    """Write tables, figures and ``summary.json`` to ``out`` as one consistent set.

    Everything is written to a scratch folder first; then the old ``summary.json`` is
    removed, the other files are renamed into place, and ``summary.json`` comes last. A
    stop at any point leaves either the previous complete set, or files without a
    ``summary.json`` (not a finished evaluation); never a mix that looks finished.

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".evaluate-*"):  # scratch folders of runs killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=out))
    try:
        summary = dict(evaluation.summary)
        if provenance is not None:
            summary["provenance"] = provenance
        evaluation.nuclei.to_csv(scratch / "nuclei.csv", index=False)
        evaluation.predicted.to_csv(scratch / "predicted.csv", index=False)
        evaluation.images.to_csv(scratch / "per_image.csv", index=False)
        matching_table(evaluation).to_csv(scratch / "matching.csv", index=False)
        if config.plots.enabled:
            draw_figures(evaluation, scratch, config)
        (scratch / SUMMARY).write_text(json.dumps(summary, indent=2))
        (out / SUMMARY).unlink(missing_ok=True)
        for name in OUTPUTS:  # what this run does not write must not stay from an earlier one
            if not (scratch / name).exists():
                (out / name).unlink(missing_ok=True)
        written = []
        for name in OUTPUTS:
            if (scratch / name).exists():
                os.replace(scratch / name, out / name)
                written.append(out / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return written


def draw_figures(evaluation: Evaluation, folder: Path, config: EvaluateConfig) -> None:
    """The PNG figures of an evaluation into ``folder``."""
    from pipeline.evaluate.overlay import plot_overlay
    from pipeline.evaluate.plots import plot_errors, plot_metrics, plot_score_histogram

    dpi, rep = config.plots.dpi, config.report_threshold
    plot_metrics(evaluation.pooled, folder / "metrics_vs_threshold.png", per_image=evaluation.per_image, dpi=dpi)
    plot_score_histogram(evaluation.nuclei, folder / "score_histogram.png", bins=config.plots.histogram_bins, f1=evaluation.pooled[rep].f1, report_threshold=rep, dpi=dpi)
    plot_errors(evaluation.nuclei, evaluation.predicted, folder / "errors.png", bins=config.plots.error_bins, report_threshold=rep, dpi=dpi)
    shown = evaluation.overlay
    if shown is not None:
        m = {float(t): v for t, v in shown["matching"].items()}[rep]
        title = f"{shown['image']} channel {shown['channel']} t={shown['t']}: TP {m['tp']}  FP {m['fp']}  FN {m['fn']} in the whole volume"
        plot_overlay(shown["overlay"], shown["nuclei"], shown["predicted"], folder / "overlay.png", title=title, report_threshold=rep, criterion=config.criterion, dpi=dpi)


def timing_line(evaluation: Evaluation, phases: dict[str, float]) -> str:
    """``timing: total 2.1 s, setup 0.3 s, read 0.1 s, ...`` (volume phases added over volumes)."""
    parts = {**phases}
    for key in ("read", "match", "rest"):
        if key in evaluation.timings:
            parts[{"read": "reading", "match": "matching", "rest": "overlay data"}[key]] = evaluation.timings[key]
    order = ["total", "setup", "reading", "matching", "overlay data", "evaluating", "figures and tables", "writing"]
    return "timing: " + ", ".join(f"{k} {parts[k]:.2f} s" for k in order if k in parts)


def evaluate_to(
    items: list[EvalItem],
    config: EvaluateConfig,
    out: str | Path,
    *,
    client=None,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
    results: VolumeResults | None = None,
    started: float | None = None,
) -> Evaluation:
    """:func:`run_evaluation` then :func:`write_outputs`, logging where the time went.

    ``started`` (a ``time.perf_counter()`` value) is when the command began: the time
    before this call is reported as its set-up.
    """
    start = time.perf_counter()
    evaluation = run_evaluation(items, config, client=client, progress=progress, results=results)
    evaluated = time.perf_counter()
    written = write_outputs(evaluation, out, config, provenance=provenance)
    done = time.perf_counter()
    LOG.info("wrote %s in %s", ", ".join(p.name for p in written), out)
    phases = {"evaluating": evaluated - start, "figures and tables": done - evaluated}
    if started is not None:
        phases.update(total=done - started, setup=start - started)
    LOG.info(timing_line(evaluation, phases))
    return evaluation

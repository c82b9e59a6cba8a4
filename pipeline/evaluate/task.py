"""What a worker computes for one volume pair, returned as small arrays (never the volumes).

:func:`evaluate_item` is the Dask task: it reads its own pair (and, for the volumes
shown in the overlay, the raw image), evaluates it and returns the per-threshold
matching records, the per-nucleus and per-predicted-object tables as arrays, the
semantic confusion matrix, a few slices for the overlay and its own timings.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.evaluate import EvaluateConfig
from pipeline.errors import InputError
from pipeline.evaluate.failures import PRED_COLUMNS, TRUTH_COLUMNS, centroid_z, classify, status
from pipeline.evaluate.matching import match_overlap, match_thresholds
from pipeline.evaluate.overlap import label_overlap
from pipeline.evaluate.pixel import confusion_matrix
from pipeline.evaluate.score import NUCLEUS_COLUMNS, ScoreWeights, nucleus_scores
from pipeline.evaluate.sources import EvalItem

#: Percentiles of the raw volume mapped to black and white in the overlay.
DISPLAY_RANGE = (0.5, 99.8)


def evaluate_pair(y_true: np.ndarray, y_pred: np.ndarray, config: EvaluateConfig, *, names: tuple[str, str] = ("y_true", "y_pred")) -> dict[str, Any]:
    """Everything the evaluation keeps of one volume pair.

    Parameters
    ----------
    y_true, y_pred : numpy.ndarray
        Ground-truth and predicted labels of the same shape (``z, y, x``).
    config : EvaluateConfig
        Thresholds, criterion, score weights.
    names : tuple of str
        How the two arrays are named in errors.

    Returns
    -------
    dict
        ``matching`` (``{thresh: Matching}``), ``report`` (the Matching at
        ``report_threshold``, with its pairs), ``nuclei`` (DataFrame: the score columns,
        then depth, status, split, merged) and ``predicted`` (DataFrame, one row per
        predicted object).
    """
    overlap = label_overlap(y_true, y_pred, names=names)
    per_thr = match_thresholds(overlap, thresholds=config.thresholds, criterion=config.criterion)
    report = match_overlap(overlap, config.report_threshold, config.criterion, report_matches=True)
    weights = ScoreWeights(config.sub_weight, config.full_weight, config.sub_region)
    nuclei = nucleus_scores(y_true, y_pred, overlap=overlap, match=report, weights=weights)
    flags = classify(overlap, report)
    z_true = centroid_z(y_true if y_true.ndim == 3 else y_true[None], overlap.true_labels, overlap.true_area)
    z_pred = centroid_z(y_pred if y_pred.ndim == 3 else y_pred[None], overlap.pred_labels, overlap.pred_area)
    nuclei["z"] = z_true
    nuclei["status"] = status(flags["true_matched"], "fn")
    nuclei["split"] = flags["true_split"]
    nuclei["merged"] = flags["true_merged"]
    predicted = pd.DataFrame(
        {
            "pred_id": overlap.pred_labels,
            "volume": overlap.pred_area,
            "z": z_pred,
            "matched_id": flags["pred_matched"],
            "iou": flags["pred_iou"],
            "status": status(flags["pred_matched"], "fp"),
            "merge": flags["pred_merge"],
            "fragment": flags["pred_fragment"],
        },
        columns=list(PRED_COLUMNS),
    )
    return {"matching": per_thr, "report": report, "nuclei": nuclei, "predicted": predicted}


def overlay_slices(y_true: np.ndarray, wanted: list[int] | None) -> list[int]:
    """The z slices the overlay shows: ``wanted`` (clipped to the volume), or three through
    the ground truth's extent in z: near its top, its middle and near its bottom."""
    n_z = y_true.shape[0]
    if wanted:
        return sorted({min(max(int(z), 0), n_z - 1) for z in wanted})
    filled = np.flatnonzero((y_true != 0).reshape(n_z, -1).any(1))
    if not len(filled):
        return [n_z // 2]
    lo, hi = int(filled[0]), int(filled[-1])
    return sorted({int(round(lo + f * (hi - lo))) for f in (0.15, 0.5, 0.85)})


def display_image(volume: np.ndarray, slices: list[int]) -> np.ndarray:
    """The raw slices as uint8 grey values, scaled by percentiles of the whole volume."""
    volume = np.asarray(volume, np.float32)
    step = max(1, volume.size // 2_000_000)  # percentiles of a subsample: enough for a display range
    lo, hi = np.percentile(volume.reshape(-1)[::step], DISPLAY_RANGE)
    scaled = (volume[slices] - lo) / max(float(hi - lo), 1e-12)
    return np.clip(scaled * 255 + 0.5, 0, 255).astype(np.uint8)


def evaluate_item(item: EvalItem, config: dict[str, Any]) -> dict[str, Any]:
    """Dask task: read one pair, evaluate it, return small plain results (no volumes).

    Parameters
    ----------
    item : EvalItem
        What to read; with ``item.overlay`` set, also the overlay's slices of this volume
        (``()``: the default top, middle and bottom slices; else those z).
    config : dict
        The :class:`EvaluateConfig` as plain data.

    Returns
    -------
    dict
        ``image``, ``channel``, ``t``; ``matching`` (``{thresh: record}``); ``nuclei`` and
        ``predicted`` (``{column: array}``); ``confusion`` (list or None); ``overlay``
        (``{"z", "truth", "pred", "image"}`` arrays, or None); ``timings`` (seconds).

    Raises
    ------
    InputError
        Bad labels, naming the file or store volume.
    """
    cfg = EvaluateConfig.model_validate(config)
    start = time.perf_counter()
    y_true, y_pred = item.truth.load(), item.pred.load()
    if y_true.shape != y_pred.shape:
        raise InputError(f"{item.truth.label} has shape {y_true.shape} but {item.pred.label} has shape {y_pred.shape}")
    read = time.perf_counter()
    result = evaluate_pair(y_true, y_pred, cfg, names=(item.truth.label, item.pred.label))
    matched = time.perf_counter()
    confusion = None
    if item.semantic_truth is not None and item.semantic_pred is not None:
        confusion = confusion_matrix(
            item.semantic_truth.load(), item.semantic_pred.load(), len(cfg.class_names), names=(item.semantic_truth.label, item.semantic_pred.label)
        ).tolist()
    shown = None
    if item.overlay is not None:
        zs = overlay_slices(y_true, list(item.overlay))
        image = None
        if item.raw is not None:
            raw = item.raw.load()
            if raw.shape != y_true.shape:
                raise InputError(f"{item.raw.label} has shape {raw.shape} but {item.truth.label} has shape {y_true.shape}")
            image = display_image(raw, zs)
        shown = {"z": np.asarray(zs, np.int64), "truth": y_true[zs].copy(), "pred": y_pred[zs].copy(), "image": image}
    done = time.perf_counter()
    nuclei, predicted = result["nuclei"], result["predicted"]
    return {
        "image": item.image,
        "channel": item.channel,
        "t": item.t,
        "matching": {t: m.as_dict() for t, m in result["matching"].items()},
        "nuclei": {c: nuclei[c].to_numpy() for c in (*NUCLEUS_COLUMNS, *TRUTH_COLUMNS)},
        "predicted": {c: predicted[c].to_numpy() for c in PRED_COLUMNS},
        "confusion": confusion,
        "overlay": shown,
        "timings": {"read": read - start, "match": matched - read, "rest": done - matched},
    }

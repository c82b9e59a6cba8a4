"""Validation on whole volumes: per-class pixel metrics and instance matching after labelling."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.config.train import LabelingConfig
from pipeline.evaluate import matching, pool
from pipeline.evaluate.pixel import confusion_matrix, metrics_from_confusion
from pipeline.segment.instances import finish_labels, label_with
from pipeline.segment.unet.predict import predict_volume
from pipeline.train.data import Volume
from pipeline.train.losses import CombinedLoss

LOG = logging.getLogger(__name__)

CLASSES = ("background", "edge", "nucleus")
#: Metrics where larger is better (all but the loss).
PIXEL_KEYS = ("precision", "recall", "f1", "iou")
MATCH_KEYS = ("f1", "precision", "recall", "accuracy", "panoptic_quality")


def metric_names(classes: Sequence[str] = CLASSES) -> list[str]:
    """All metric names :func:`validate` reports (what ``validation.metric`` may name)."""
    names = ["loss", "mean_f1"]
    names += [f"{k}_{c}" for c in classes for k in PIXEL_KEYS]
    names += [f"match_{k}" for k in MATCH_KEYS]
    return names


def higher_is_better(metric: str) -> bool:
    """False only for the loss."""
    return metric != "loss"


def class_metrics(conf: np.ndarray, classes: Sequence[str] = CLASSES) -> dict[str, float]:
    """Flat per-class ``precision_/recall_/f1_/iou_<class>`` (thesis Eqs. 2-5) and ``mean_f1``.

    Computed by :func:`pipeline.evaluate.pixel.metrics_from_confusion` (a class absent
    from truth and prediction scores 0). ``mean_f1`` is the mean F1 of the classes other
    than background (edge and nucleus, what the thesis tracked).
    """
    per_class = metrics_from_confusion(conf, classes)
    out = {f"{key}_{name}": float(per_class[name][key]) for name in classes for key in PIXEL_KEYS}
    out["mean_f1"] = float(np.mean([out[f"f1_{c}"] for c in classes[1:]]))
    return out


def _tile(tile: Sequence[int] | None, shape: Sequence[int], overlap: float, model) -> Sequence[int]:
    from pipeline.segment.unet.apply import inference_tile

    return tile if tile is not None else inference_tile(None, shape, overlap, getattr(model, "divisor", (1, 1, 1)))


def validate(
    model: torch.nn.Module,
    volumes: Sequence[Volume],
    *,
    tile: Sequence[int] | None,
    overlap: float = 0.25,
    device: str | torch.device = "cpu",
    labeling: LabelingConfig | None = None,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    match_threshold: float = 0.5,
    loss: CombinedLoss | None = None,
    batch_size: int = 1,
    precision: str = "fp32",
) -> dict[str, float]:
    """Predict each volume whole and score it against its target and instances.

    Parameters
    ----------
    model : torch.nn.Module
        The network (put in eval mode for the prediction, restored afterwards).
    volumes : sequence of Volume
        Validation volumes (only their unpadded region is scored).
    tile, overlap, device, batch_size, precision
        Sliding-window settings (:func:`pipeline.segment.unet.predict.predict_volume`); ``tile=None``
        takes each volume's tile by :func:`pipeline.segment.unet.apply.inference_tile`, as ``spheroid
        segment`` does.
    labeling : LabelingConfig, optional
        Instance labelling of the probabilities.
    voxel_size : sequence of float
        For the distance-based watershed.
    match_threshold : float
        IoU threshold of the instance matching.
    loss : CombinedLoss, optional
        Also report the loss of the whole-volume prediction (``log p`` as logits).

    Returns
    -------
    dict
        ``loss`` (if given), per-class ``precision_/recall_/f1_/iou_<class>``, ``mean_f1``,
        ``match_*`` pooled over the volumes, ``n_true`` and ``n_pred``.
    """
    labeling = labeling or LabelingConfig()
    conf = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    matches = []
    losses = []
    for vol in volumes:
        z, y, x = vol.shape
        image = vol.image[:, :z, :y, :x]
        target = vol.semantic[:z, :y, :x]
        probs = predict_volume(model, image, tile=_tile(tile, image.shape[1:], overlap, model), overlap=overlap, device=device, batch_size=batch_size, precision=precision)
        conf += confusion_matrix(target, np.argmax(probs[: len(CLASSES)], 0), len(CLASSES))
        labels = label_with(probs, labeling, voxel_size)
        matches.append(matching(vol.instances[:z, :y, :x], labels, thresh=match_threshold))
        if loss is not None:
            with torch.no_grad():
                logits = torch.from_numpy(np.log(np.clip(probs[: len(CLASSES)], 1e-7, 1.0)))[None]
                value, _ = loss(logits, torch.from_numpy(target.astype(np.int64))[None])
            losses.append(float(value) * target.size)
    out = class_metrics(conf)
    if losses:
        out["loss"] = float(sum(losses) / sum(v.shape[0] * v.shape[1] * v.shape[2] for v in volumes))
    pooled = pool(matches)
    for key in MATCH_KEYS:
        out[f"match_{key}"] = float(getattr(pooled, key))
    out["n_true"] = int(pooled.n_true)
    out["n_pred"] = int(pooled.n_pred)
    return out


#: The labelling search's grid (:func:`tune_labeling`, :func:`choose_labeling`).
SEED_THRESHOLDS = (0.2, 0.35, 0.5, 0.65, 0.8)
FOREGROUND_THRESHOLDS = (0.35, 0.5, 0.65, 0.8)
SEED_MODES = ("interior", "maxima")
Z_TRIMS = (0.0, 0.3, 0.5)
MIN_PEAKS = (0.0, 0.4, 0.5, 0.6)


def tune_labeling(
    model: torch.nn.Module,
    volumes: Sequence[Volume],
    *,
    tile: Sequence[int] | None,
    labeling: LabelingConfig,
    overlap: float = 0.25,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    **search: Any,
) -> tuple[LabelingConfig, list[dict[str, float]]]:
    """Choose the labelling thresholds with the best instance F1 on validation volumes.

    Each volume is predicted once; every combination of ``seed_thresholds`` (of the
    predicted centre map, ``seed_centre``, for a model with that output) and
    ``foreground_thresholds`` is then labelled and matched (pooled over the volumes), for each
    of ``seed_modes`` (interior components or local maxima of p(nucleus); a model with the
    centre map seeds from it). Ties keep the earlier combination, and ``labeling`` itself is
    among the candidates. Each is tried with every ``z_trims`` (the end-slice cut of
    :func:`~pipeline.segment.instances.trim_z`); the best is then tried with every
    ``min_peaks`` (instances whose highest p(nucleus) stays below it dropped). ``search``: the
    keyword arguments of :func:`choose_labeling` (``voxel_size``, ``match_threshold``,
    ``seed_thresholds``, ``foreground_thresholds``, ``seed_modes``, ``z_trims``, ``min_peaks``).

    Returns
    -------
    (LabelingConfig, list of dict)
        The best settings and one row per combination (``seeds``, ``seed_threshold``,
        ``foreground_threshold``, ``z_trim``, ``match_f1``, ``n_pred``).
    """
    cases = []
    for vol in volumes:
        z, y, x = vol.shape
        image = vol.image[:, :z, :y, :x]
        probs = predict_volume(model, image, tile=_tile(tile, image.shape[1:], overlap, model), overlap=overlap, device=device, precision=precision)
        cases.append((probs, vol.instances[:z, :y, :x]))
    return choose_labeling(cases, labeling, **search)


def choose_labeling(
    cases: Sequence[tuple[np.ndarray, np.ndarray]],
    labeling: LabelingConfig,
    *,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    match_threshold: float = 0.5,
    seed_thresholds: Sequence[float] = SEED_THRESHOLDS,
    foreground_thresholds: Sequence[float] = FOREGROUND_THRESHOLDS,
    seed_modes: Sequence[str] = SEED_MODES,
    z_trims: Sequence[float] = Z_TRIMS,
    min_peaks: Sequence[float] = MIN_PEAKS,
) -> tuple[LabelingConfig, list[dict[str, float]]]:
    """The grid search of :func:`tune_labeling` over (probabilities, true instances) pairs already predicted."""
    seed_key = "seed_centre" if cases and cases[0][0].shape[0] > len(CLASSES) else "seed_threshold"
    if seed_key == "seed_centre":  # a centre map's peaks may stay well below 1
        seed_thresholds = sorted(set(seed_thresholds) | {0.2, 0.3, 0.4})
    modes = [labeling.seeds] if seed_key == "seed_centre" else list(dict.fromkeys([labeling.seeds, *seed_modes]))
    first = (labeling.seeds, getattr(labeling, seed_key), labeling.foreground_threshold, labeling.z_trim)
    trims = list(dict.fromkeys([labeling.z_trim, *z_trims]))
    candidates = [first] + [(m, s, f, z) for m in modes for s in seed_thresholds for f in foreground_thresholds for z in trims if (m, s, f, z) != first]
    rows = []
    best, best_f1 = labeling, -1.0
    untrimmed_key, untrimmed = None, []  # one watershed per (mode, seed, foreground), reused for each z-trim
    for mode, seed, fg, trim in candidates:
        trial = labeling.model_copy(update={"seeds": mode, seed_key: float(seed), "foreground_threshold": float(fg), "z_trim": float(trim)})
        if (mode, seed, fg) != untrimmed_key:
            untrimmed_key = (mode, seed, fg)
            untrimmed = [label_with(probs, trial.model_copy(update={"z_trim": 0.0}), voxel_size) for probs, _ in cases]
        labels = [lab if trim == 0 else finish_labels(lab.copy(), trim, trial.min_size) for lab in untrimmed]
        pooled = pool([matching(truth, lab, thresh=match_threshold) for lab, (_, truth) in zip(labels, cases)])
        rows.append({**_row(trial, seed_key), "match_f1": float(pooled.f1), "n_pred": int(pooled.n_pred)})
        if pooled.f1 > best_f1:
            best, best_f1 = trial, float(pooled.f1)
    # the instance-confidence cut, on the best combination (a filter: one more watershed each)
    for peak in dict.fromkeys(float(v) for v in min_peaks):
        if peak == best.min_peak:
            continue
        trial = best.model_copy(update={"min_peak": peak})
        pooled = pool([matching(truth, label_with(probs, trial, voxel_size), thresh=match_threshold) for probs, truth in cases])
        rows.append({**_row(trial, seed_key), "match_f1": float(pooled.f1), "n_pred": int(pooled.n_pred)})
        if pooled.f1 > best_f1:
            best, best_f1 = trial, float(pooled.f1)
    LOG.info("labelling tuned on %d val volume(s): %s seeds, %s %.2f, foreground %.2f, z-trim %.2f, min peak %.2f -> instance F1 %.3f",
             len(cases), best.seeds, seed_key, getattr(best, seed_key), best.foreground_threshold, best.z_trim, best.min_peak, best_f1)
    return best, rows


def _row(trial: LabelingConfig, seed_key: str) -> dict[str, Any]:
    return {
        "seeds": trial.seeds, seed_key: float(getattr(trial, seed_key)), "foreground_threshold": float(trial.foreground_threshold),
        "z_trim": float(trial.z_trim), "min_peak": float(trial.min_peak),
    }

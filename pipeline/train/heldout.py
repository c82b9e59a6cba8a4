"""Score a trained model (any backend) on a split of a training set it did not train on (held-out data).

The model runs as ``spheroid segment`` runs it: the same backend object, tile rule
(:func:`pipeline.segment.unet.apply.inference_tile`), precision and labelling, on the
items brought to the card's voxel size and normalised with its percentiles.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.segment import SegmentConfig
from pipeline.errors import InputError
from pipeline.evaluate import matching, pool
from pipeline.evaluate.pixel import confusion_matrix
from pipeline.groundtruth.trainset import TrainingSet
from pipeline.segment.card import card_backend, read_card_json, validate_card, write_card_json
from pipeline.train.data import load_volumes
from pipeline.train.validate import CLASSES, MATCH_KEYS, class_metrics

LOG = logging.getLogger(__name__)

#: Metrics kept per group in the card (the full set is returned).
CARD_KEYS = ("f1_background", "f1_edge", "f1_nucleus", "iou_nucleus", "mean_f1", "match_f1", "match_precision", "match_recall", "n_true", "n_pred")


def _score(segmenter, volumes, threshold: float) -> dict[str, Any]:
    unet = hasattr(segmenter, "probabilities")
    conf = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    results = []
    for vol in volumes:
        z, y, x = vol.shape
        image = vol.image[0, :z, :y, :x]
        if unet:
            probs = segmenter.probabilities(image)
            conf += confusion_matrix(vol.semantic[:z, :y, :x], np.argmax(probs[: len(CLASSES)], 0), len(CLASSES))
            labels = segmenter.label(probs)
        else:
            labels = segmenter.segment(image)
        results.append(matching(vol.instances[:z, :y, :x], labels, thresh=threshold))
    out: dict[str, Any] = class_metrics(conf) if unet else {}
    pooled = pool(results)
    out.update({f"match_{k}": float(getattr(pooled, k)) for k in MATCH_KEYS})
    out.update(n_true=int(pooled.n_true), n_pred=int(pooled.n_pred))
    return out


def evaluate_model(
    model_dir: str | Path,
    trainset: str | Path,
    *,
    split: str = "test",
    device: str = "cpu",
    threshold: float = 0.5,
    tta: int = 1,
) -> dict[str, Any]:
    """Instance F1 (and, for the U-Net, per-class pixel scores) of a model on one split, per source and overall.

    Parameters
    ----------
    model_dir : str or Path
        Model folder (``model.json`` + weights) of any backend.
    trainset : str or Path
        Training-set folder.
    split : str
        Split to score (``test``: data neither trained on nor used to select the model).
    device : str
        Where to run the network (``cpu``, ``cuda``, ``auto``).
    threshold : float
        IoU threshold of the matching.
    tta : int
        U-Net: passes of test-time augmentation (``SegmentConfig.tta``), to measure what they buy.

    Returns
    -------
    dict
        ``{"split", "trainset", "backend", "settings", "items": {source: [ids]}, "metrics": {source or "all": {...}}}``.

    Raises
    ------
    InputError
        When the split has no item of the model's channel(s), or ``tta`` is asked of another backend.
    """
    from pipeline.segment.backends import BACKENDS

    backend = card_backend(model_dir)
    if tta > 1 and backend != "unet":
        raise InputError(f"{model_dir}: test-time augmentation (--tta) applies to U-Net models, not {backend}")
    segmenter = BACKENDS[backend](SegmentConfig(backend=backend, model=str(model_dir), device=device, tta=tta))
    card = segmenter.card
    ts = TrainingSet.open(trainset)
    volumes = _split_volumes(card, ts, split)
    groups: dict[str, list] = {}
    for vol in volumes:
        groups.setdefault(vol.source, []).append(vol)
    metrics = {source: _score(segmenter, vols, threshold) for source, vols in groups.items()}
    if len(groups) > 1:
        metrics["all"] = _score(segmenter, volumes, threshold)
    for name, values in metrics.items():
        LOG.info("%s %s: instance F1@%.1f %.3f (%d true, %d predicted)", split, name, threshold, values["match_f1"], values["n_true"], values["n_pred"])
    return {
        "split": split,
        "trainset": str(ts.root),
        "backend": backend,
        "settings": segmenter.settings(),
        "items": {source: [v.id for v in vols] for source, vols in groups.items()},
        "metrics": metrics,
    }


def _split_volumes(card, ts: TrainingSet, split: str) -> list:
    """The items of ``split`` in the model's channel(s), at its voxel size and normalisation."""
    wanted = {name for spec in card.channels for name in spec.split("|")}
    volumes = [v for v in load_volumes(ts, split, normalization=card.normalization, voxel_size=card.voxel_size, tolerance=card.voxel_tolerance)
               if v.channel in wanted or not wanted]
    if not volumes:
        raise InputError(f"{ts.root}: no {split!r} items of channel(s) {card.channels}")
    return volumes


def tune_model_labeling(model_dir: str | Path, trainset: str | Path, *, split: str = "val", device: str = "cpu", threshold: float = 0.5) -> dict[str, Any]:
    """Choose a trained U-Net's labelling again on one split and store it in its card.

    The grid of :func:`pipeline.train.validate.choose_labeling` (seed mode, seed and
    foreground thresholds, z-trim) on the probabilities ``spheroid segment`` computes; the best
    settings replace the card's ``labeling``, the grid goes under ``metrics.labeling_tuning``
    and ``MODEL.md`` is rewritten. Only a split the model was not trained on should be used
    (``val``: the one training selected the model on).

    Returns
    -------
    dict
        ``{"split", "trainset", "items", "before", "after", "match_f1_before", "match_f1", "rows"}``.

    Raises
    ------
    InputError
        When the model is not a U-Net or the split has no item of its channel(s).
    """
    from pipeline.segment.backends import BACKENDS
    from pipeline.segment.instances import label_with
    from pipeline.segment.unet.card import ModelCard
    from pipeline.train.validate import choose_labeling

    backend = card_backend(model_dir)
    if backend != "unet":
        raise InputError(f"{model_dir}: tune-labeling applies to U-Net models (the labelling of {backend} is its own)")
    segmenter = BACKENDS[backend](SegmentConfig(backend=backend, model=str(model_dir), device=device))
    card = segmenter.card
    ts = TrainingSet.open(trainset)
    volumes = _split_volumes(card, ts, split)
    cases = []
    for vol in volumes:
        z, y, x = vol.shape
        cases.append((segmenter.probabilities(vol.image[0, :z, :y, :x]), vol.instances[:z, :y, :x]))
    best, rows = choose_labeling(cases, card.labeling, voxel_size=card.voxel_size, match_threshold=threshold)
    before = rows[0]["match_f1"]  # the card's own settings come first
    pooled = pool([matching(truth, label_with(probs, best, card.voxel_size), thresh=threshold) for probs, truth in cases])
    after = float(pooled.f1)
    own = {**{f"match_{k}": round(float(getattr(pooled, k)), 5) for k in MATCH_KEYS}, "n_true": int(pooled.n_true), "n_pred": int(pooled.n_pred),
           "computed_with": f"the card's labeling, inference tiles and precision (spheroid tune-labeling on split {split})"}
    metrics = {**card.metrics, "labeling_tuning": rows, "card_labeling": own,
               "labeling_tuned_on": {"split": split, "trainset": str(ts.root), "items": [v.id for v in volumes], "match_f1_before": round(before, 4), "match_f1": round(after, 4)}}
    if isinstance(metrics.get("best"), dict) and str(metrics["best"].get("computed_with", "")).startswith("the card's labeling"):
        metrics["best"] = {**metrics["best"], "computed_with": "the labeling the card had before spheroid tune-labeling"}
    write_card_json(card.model_copy(update={"labeling": best, "metrics": metrics}), model_dir)
    validate_card(ModelCard, model_dir)
    from pipeline.train.modelcard import write_model_md

    write_model_md(model_dir)
    LOG.info("%s: labelling %s -> %s seeds, seed %.2f, foreground %.2f, z-trim %.2f, min peak %.2f: instance F1 %.3f -> %.3f on %d %s volume(s)",
             model_dir, card.labeling.seeds, best.seeds, best.seed_threshold, best.foreground_threshold, best.z_trim, best.min_peak,
             before, after, len(volumes), split)
    return {"split": split, "trainset": str(ts.root), "items": [v.id for v in volumes], "before": card.labeling.model_dump(),
            "after": best.model_dump(), "match_f1_before": before, "match_f1": after, "rows": rows}


def record_in_card(model_dir: str | Path, result: dict[str, Any]) -> None:
    """Store a held-out result (main metrics only) under ``metrics.heldout`` of the model card (and rewrite ``MODEL.md``)."""
    backend = card_backend(model_dir)
    data = read_card_json(model_dir)
    slim = {
        "split": result["split"],
        "items": result["items"],
        "settings": result.get("settings", {}),
        "metrics": {g: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if k in CARD_KEYS} for g, m in result["metrics"].items()},
    }
    data["metrics"] = {**data.get("metrics", {}), "heldout": slim}
    card = validate_card(card_classes()[backend], model_dir)
    write_card_json(card.model_copy(update={"metrics": data["metrics"]}), model_dir)
    from pipeline.train.modelcard import write_model_md

    write_model_md(model_dir)


def card_classes() -> dict[str, type]:
    """Backend name -> its card class."""
    from pipeline.segment.backends.cellpose import CellposeCard
    from pipeline.segment.backends.stardist import StarDistCard
    from pipeline.segment.unet.card import ModelCard

    return {"unet": ModelCard, "stardist": StarDistCard, "cellpose": CellposeCard}

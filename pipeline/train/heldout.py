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
from pipeline.segment.card import card_backend, read_card_json, write_card_json
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

    Returns
    -------
    dict
        ``{"split", "trainset", "backend", "items": {source: [ids]}, "metrics": {source or "all": {...}}}``.

    Raises
    ------
    InputError
        When the split has no item of the model's channel(s).
    """
    from pipeline.segment.backends import BACKENDS

    backend = card_backend(model_dir)
    segmenter = BACKENDS[backend](SegmentConfig(backend=backend, model=str(model_dir), device=device))
    card = segmenter.card
    ts = TrainingSet.open(trainset)
    wanted = {name for spec in card.channels for name in spec.split("|")}
    volumes = [v for v in load_volumes(ts, split, normalization=card.normalization, voxel_size=card.voxel_size, tolerance=card.voxel_tolerance)
               if v.channel in wanted or not wanted]
    if not volumes:
        raise InputError(f"{ts.root}: no {split!r} items of channel(s) {card.channels}")
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


def record_in_card(model_dir: str | Path, result: dict[str, Any]) -> None:
    """Store a held-out result (main metrics only) under ``metrics.heldout`` of the model card (and rewrite ``MODEL.md``)."""
    from pipeline.segment.card import validate_card

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

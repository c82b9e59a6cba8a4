"""Score a trained model on a split of a training set it did not train on (held-out data)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import InputError
from pipeline.groundtruth.trainset import TrainingSet
from pipeline.segment.unet.card import load_card, load_model
from pipeline.train.artefact import write_card
from pipeline.train.data import load_volumes
from pipeline.train.validate import validate

LOG = logging.getLogger(__name__)

#: Metrics kept per group in the card (the full set is returned).
CARD_KEYS = ("f1_background", "f1_edge", "f1_nucleus", "iou_nucleus", "mean_f1", "match_f1", "match_precision", "match_recall", "n_true", "n_pred")


def evaluate_model(
    model_dir: str | Path,
    trainset: str | Path,
    *,
    split: str = "test",
    device: str | torch.device = "cpu",
    tile: Sequence[int] | None = None,
    overlap: float = 0.25,
) -> dict[str, Any]:
    """Per-class pixel scores and instance F1 of a model on one split, per source and overall.

    Parameters
    ----------
    model_dir : str or Path
        Model folder (``model.json`` + weights).
    trainset : str or Path
        Training-set folder.
    split : str
        Split to score (``test``: data neither trained on nor used to select the model).
    device : str or torch.device
        Where to run the network.
    tile : sequence of int, optional
        Sliding-window tile; the card's when omitted.
    overlap : float
        Tile overlap.

    Returns
    -------
    dict
        ``{"split", "trainset", "items": {source: [ids]}, "metrics": {source or "all": {...}}}``.

    Raises
    ------
    InputError
        When the split has no item the model can take (channel, voxel size).
    """
    model, card = load_model(model_dir, device=device)
    ts = TrainingSet.open(trainset)
    volumes = load_volumes(ts, split, normalization=card.normalization)
    usable = []
    for vol in volumes:
        if not any(vol.channel in spec.split("|") for spec in card.channels):
            LOG.info("%s: channel %s, the model takes %s: skipped", vol.id, vol.channel, card.channels)
            continue
        if vol.rescale_mode != "nucleus_size":  # those match the target's pixel scale, not its voxel size
            card.check_input(voxel_size=vol.voxel_size, source=f"{ts.root}: item {vol.id!r}")
        usable.append(vol)
    if not usable:
        raise InputError(f"{ts.root}: no {split!r} items of channel(s) {card.channels}")
    groups: dict[str, list] = {}
    for vol in usable:
        groups.setdefault(vol.source, []).append(vol)
    settings = dict(tile=card.tile if tile is None else tile, overlap=overlap, device=device, labeling=card.labeling, voxel_size=card.voxel_size)
    metrics = {source: validate(model, vols, **settings) for source, vols in groups.items()}
    if len(groups) > 1:
        metrics["all"] = validate(model, usable, **settings)
    for name, values in metrics.items():
        LOG.info("%s %s: F1 edge %.3f, nucleus %.3f; instance F1@0.5 %.3f (%d true, %d predicted)",
                 split, name, values["f1_edge"], values["f1_nucleus"], values["match_f1"], values["n_true"], values["n_pred"])
    return {
        "split": split,
        "trainset": str(ts.root),
        "items": {source: [v.id for v in vols] for source, vols in groups.items()},
        "metrics": metrics,
    }


def record_in_card(model_dir: str | Path, result: dict[str, Any]) -> None:
    """Store a held-out result (main metrics only) under ``metrics.heldout`` of the model card."""
    card = load_card(model_dir)
    slim = {
        "split": result["split"],
        "items": result["items"],
        "metrics": {g: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if k in CARD_KEYS} for g, m in result["metrics"].items()},
    }
    write_card(card.model_copy(update={"metrics": {**card.metrics, "heldout": slim}}), model_dir)

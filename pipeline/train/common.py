"""What the trainers of every backend share: data at the model's scale, scoring, the card's training record."""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import pipeline
from pipeline.config.train import TrainConfig
from pipeline.errors import ConfigError, InputError
from pipeline.evaluate import matching, pool
from pipeline.groundtruth.trainset import TrainingSet
from pipeline.train.data import Volume, load_volumes, nucleus_size, summarize, target_voxel_size

LOG = logging.getLogger(__name__)

MATCH_KEYS = ("f1", "precision", "recall", "accuracy", "panoptic_quality")


def load_split_volumes(
    config: TrainConfig, patch_size: Sequence[int] = (1, 1, 1), *, centre: bool = False,
) -> tuple[TrainingSet, list[float], list[Volume], list[Volume]]:
    """``(trainset, voxel_size, train volumes, val volumes)`` at the model's voxel size, normalised
    (with the U-Net's centre target when ``centre``).

    Raises
    ------
    ConfigError, InputError
        No training set given, or no train items.
    """
    if not config.trainset:
        raise ConfigError("trainset: no training set given (set 'trainset' in the config or pass --trainset)")
    trainset = TrainingSet.open(config.trainset)
    voxel = target_voxel_size(trainset, ("train", "val"), config.voxel_size, config.channel)
    kwargs = dict(
        normalization=config.normalization, patch_size=patch_size, channel=config.channel, seed=config.seed,
        voxel_size=voxel, tolerance=config.voxel_tolerance, resample=config.resample, centre=centre,
    )
    train_vols = load_volumes(trainset, "train", **kwargs)
    val_vols = load_volumes(trainset, "val", **kwargs)
    if not train_vols:
        raise InputError(f"{trainset.root}: no 'train' items" + (f" of channel {config.channel!r}" if config.channel else ""))
    if config.validation.max_volumes is not None:
        val_vols = val_vols[: config.validation.max_volumes]
    return trainset, voxel, train_vols, val_vols


def unpadded(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """A volume's image ``(z, y, x)`` and instances without the padding to the patch."""
    z, y, x = vol.shape
    return vol.image[0, :z, :y, :x], vol.instances[:z, :y, :x]


def score(segment: Callable[[np.ndarray], np.ndarray], volumes: Sequence[Volume], threshold: float = 0.5) -> dict[str, Any]:
    """Instance matching (IoU ``threshold``) of ``segment`` (image -> labels) on the volumes, pooled."""
    return score_labels([segment(unpadded(v)[0]) for v in volumes], volumes, threshold)


def score_labels(predictions: Sequence[np.ndarray], volumes: Sequence[Volume], threshold: float = 0.5) -> dict[str, Any]:
    """Instance matching of predicted labels (one per volume) pooled: ``match_*``, ``n_true``, ``n_pred``."""
    results = [matching(unpadded(v)[1], labels, thresh=threshold) for labels, v in zip(predictions, volumes)]
    pooled = pool(results)
    out: dict[str, Any] = {f"match_{k}": round(float(getattr(pooled, k)), 5) for k in MATCH_KEYS}
    out.update(n_true=int(pooled.n_true), n_pred=int(pooled.n_pred))
    return out


def channel_names(config: TrainConfig, volumes: Sequence[Volume]) -> list[str]:
    """The card's channel name: the configured one, else the stains seen in training ("A|B": any of them)."""
    names = [config.channel] if config.channel else sorted({v.channel for v in volumes})
    return ["|".join(names)]


def card_fields(
    config: TrainConfig,
    *,
    trainset: TrainingSet,
    voxel_size: Sequence[float],
    train_vols: Sequence[Volume],
    val_vols: Sequence[Volume],
    steps: int,
    time_s: float,
    cpu_s: float,
    device: str,
    metrics: dict[str, Any],
    libraries: dict[str, str],
    init_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields every card shares (see :class:`pipeline.segment.card.CardBase`)."""
    items = summarize(train_vols) + summarize(val_vols)
    size = nucleus_size(train_vols, voxel_size)
    return dict(
        name=config.name,
        voxel_size=[float(v) for v in voxel_size],
        voxel_tolerance=config.voxel_tolerance,
        nucleus_diameter_um=size[0] if size else None,
        nucleus_diameters_um=size[1] if size else None,
        channels=channel_names(config, train_vols),
        normalization=config.normalization,
        training={
            "trainset": str(trainset.root),
            "items": items,
            "sources": sorted({i["source"] for i in items}),
            "splits": {s: sum(1 for i in items if i["split"] == s) for s in ("train", "val")},
            "steps": int(steps),
            "time_s": round(float(time_s), 1),
            "cpu_s": round(float(cpu_s), 1),
            "device": device,
            **({"init_from": init_from} if init_from else {}),
            "config": config.model_dump(mode="json"),
        },
        metrics=metrics,
        versions={"spheroid": pipeline.__version__, **libraries},
        command=config.command,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def fresh_folder(path: Path) -> Path:
    """Remove an earlier model folder at ``path`` (a new run replaces it) and return ``path``."""
    import shutil

    if path.exists():
        LOG.warning("removing earlier output %s", path)
        shutil.rmtree(path)
    return path

"""The model card a training run writes, and housekeeping of the output folder."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import pipeline
from pipeline.config.train import TrainConfig
from pipeline.segment.unet.card import CARD_NAME, ModelCard
from pipeline.train.data import summarize

LOG = logging.getLogger(__name__)

#: Settings that must not change when a run is resumed (they define what is being trained).
RESUME_KEYS = (
    "backend", "init_from", "trainset", "channel", "model", "loss", "sampling", "augment", "normalization", "optim", "seed",
    "voxel_size", "resample", "stardist", "cellpose",
)


def _channels(config: TrainConfig, volumes) -> list[str]:
    """The card's channel names: the configured one, else the stains seen in training ("A|B": any of them)."""
    if config.channel:
        names = [config.channel]
    else:
        names = sorted({v.channel for v in volumes})
    return ["|".join(names)] * config.model.in_channels


def make_card(config: TrainConfig, voxel_size: Sequence[float], summary: dict[str, Any], state: dict[str, Any], device: torch.device) -> ModelCard:
    """The model card for the current state of a run.

    Parameters
    ----------
    config : TrainConfig
        The run's configuration.
    voxel_size : sequence of float
        The voxel size the model is trained for.
    summary : dict
        ``{"train": volumes, "val": volumes, "trainset": TrainingSet, "diameter": float or None, "diameters": list or None,
        "init_from": dict or None}``.
    state : dict
        The loop's bookkeeping (step, best, history, elapsed).
    device : torch.device
        Where it trained.
    """
    val_rows = [r for r in state["history"] if r.get("kind") == "val"]
    items = summarize(summary["train"]) + summarize(summary["val"])
    return ModelCard(
        name=config.name,
        architecture=config.model,
        voxel_size=list(voxel_size),
        voxel_tolerance=config.voxel_tolerance,
        nucleus_diameter_um=summary.get("diameter"),
        nucleus_diameters_um=summary.get("diameters"),
        channels=_channels(config, summary["train"]),
        normalization=config.normalization,
        patch_size=list(config.sampling.patch_size),
        tile=list(config.validation.tile or config.sampling.patch_size),
        labeling=config.labeling,
        training={
            "trainset": str(summary["trainset"].root),
            "items": items,
            "sources": sorted({i["source"] for i in items}),
            "splits": {s: sum(1 for i in items if i["split"] == s) for s in ("train", "val")},
            "steps": int(state["step"]),
            "time_s": round(float(state["elapsed"]), 1),
            "cpu_s": round(float(state.get("cpu_s", 0.0)), 1),
            "device": str(device),
            **({"init_from": summary["init_from"]} if summary.get("init_from") else {}),
            "config": config.model_dump(mode="json"),
        },
        metrics={
            "selected_by": config.validation.metric,
            "best_step": state["best_step"],
            "best": _plain(state["best"]),
            "final": _plain({k: v for k, v in val_rows[-1].items() if k not in ("kind",)}) if val_rows else {},
            **({"labeling_tuning": state["labeling_tuning"]} if state.get("labeling_tuning") else {}),
        },
        versions={"spheroid": pipeline.__version__, "torch": torch.__version__},
        command=config.command,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in values.items()}


def write_card(card: ModelCard, folder: str | Path) -> None:
    """Rewrite ``folder/model.json`` atomically (the weights stay)."""
    path = Path(folder) / CARD_NAME
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, path)


def remove_outputs(out: Path, names: Sequence[str]) -> None:
    """Delete earlier outputs of a run in ``out`` before a fresh start."""
    for name in names:
        path = out / name
        if path.is_dir():
            LOG.warning("removing earlier output %s (not resuming)", path)
            shutil.rmtree(path)
        elif path.exists():
            LOG.warning("removing earlier output %s (not resuming)", path)
            path.unlink()

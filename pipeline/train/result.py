"""What a training run returns (every backend's trainer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did.

    Attributes
    ----------
    out : Path
        Output folder.
    model_dir : Path
        The model folder (best checkpoint).
    step : int
        Steps done in total.
    best_step : int or None
        Step of the best validation.
    best : dict
        Metrics of the best validation (empty without a val split).
    interrupted : bool
        Stopped by a signal; a checkpoint was saved, run again to resume.
    stopped_early : bool
        Stopped by early stopping.
    time_s : float
        Training wall time over all sessions of this run.
    history : list of dict
        The metrics rows.
    """

    out: Path
    model_dir: Path
    step: int
    best_step: int | None
    best: dict[str, Any]
    interrupted: bool
    stopped_early: bool
    time_s: float
    history: list[dict[str, Any]]

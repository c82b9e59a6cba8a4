"""What a training run leaves besides the model: the metrics CSV, the learning curve, TensorBoard."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import require

LOG = logging.getLogger(__name__)


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """All history rows (train and validation) as one CSV, columns in first-seen order."""
    import pandas as pd

    path = Path(path)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pd.DataFrame(list(rows), columns=columns).to_csv(tmp, index=False)
    os.replace(tmp, path)


def plot_learning_curve(rows: Sequence[dict[str, Any]], path: str | Path, *, metric: str | None = None) -> None:
    """Loss (train and validation) and validation F1 scores against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    if train:
        ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    if val and "loss" in val[0]:
        ax1.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="validation loss")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.legend()
    keys = ["f1_edge", "f1_nucleus", "match_f1"]
    for key in keys:
        if val and key in val[0]:
            ax2.plot([r["step"] for r in val], [r[key] for r in val], "o-", label=key)
    if metric and val and metric in val[0] and metric not in keys and metric != "loss":
        ax2.plot([r["step"] for r in val], [r[metric] for r in val], "o--", label=metric)
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation score")
    ax2.set_ylim(0, 1)
    if val:
        ax2.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class TensorBoard:
    """Optional TensorBoard logging (the ``[tensorboard]`` extra), imported only when enabled."""

    def __init__(self, log_dir: str | Path, enabled: bool):
        self.writer = None
        if enabled:
            module = require("torch.utils.tensorboard", "tensorboard")
            self.writer = module.SummaryWriter(log_dir=str(log_dir))

    def log(self, prefix: str, values: dict[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and key not in ("step", "kind"):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

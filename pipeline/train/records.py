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


#: What each validation score of the learning curve measures, in plain words (the figure's caption).
SCORE_CAPTION = (
    "Validation scores, on the val volumes, every few steps. f1_edge / f1_nucleus: voxel F1 of the "
    "edge and nucleus classes (how well each voxel's class is predicted; 1 = every voxel right). "
    "match_f1: instance F1, the share of nuclei found one to one (a predicted nucleus counts when it "
    "overlaps a true one with IoU >= 0.5), the score closest to counting nuclei right."
)


def plot_learning_curve(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    metric: str | None = None,
    best_step: int | None = None,
    title: str | None = None,
) -> None:
    """Loss (train and validation) and validation scores against the step, as a PNG.

    See :func:`learning_curve_figure` for what it shows.
    """
    import matplotlib.pyplot as plt

    fig = learning_curve_figure(rows, metric=metric, best_step=best_step, title=title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def learning_curve_figure(
    rows: Sequence[dict[str, Any]],
    *,
    metric: str | None = None,
    best_step: int | None = None,
    title: str | None = None,
):
    """The learning-curve figure: a title, loss on the left, validation scores on the right.

    The step whose weights became the model (``best_step``) is marked on both panels; a
    caption says what f1_edge, f1_nucleus and match_f1 measure. Without validation rows the
    right panel holds a note saying so instead of empty axes.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    fig.suptitle(title or "Learning curve")
    if train:
        ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="training loss (mean over steps)", lw=1)
    if val and "loss" in val[0]:
        ax1.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="validation loss")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss (lower is better)")
    ax1.set_title("loss")
    keys = [k for k in ("f1_edge", "f1_nucleus", "match_f1") if val and k in val[0]]
    if metric and val and metric in val[0] and metric not in keys and metric != "loss":
        keys.append(metric)
    for key in keys:
        ax2.plot([r["step"] for r in val], [r[key] for r in val], "o-" if key in ("f1_edge", "f1_nucleus", "match_f1") else "o--", label=key)
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation score (higher is better)")
    ax2.set_ylim(0, 1)
    ax2.set_title("validation scores")
    if best_step is not None and val:
        chosen = next((r for r in val if r["step"] == best_step), None)
        for ax in (ax1, ax2):
            ax.axvline(best_step, color="0.3", ls=":", lw=1.2, label=f"best step {best_step} (the model)" if ax is ax2 else None)
        if chosen is not None and metric in chosen:
            ax2.annotate(
                f"{metric} {chosen[metric]:.3f}", (best_step, chosen[metric] if metric != "loss" else 0.5),
                xytext=(-6, 8), textcoords="offset points", ha="right", fontsize=8,
            )
    if val:
        ax2.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0)  # beside, never over the curves
        caption = SCORE_CAPTION + (f" The model is the weights of the best step by {metric}." if metric else "")
    else:
        ax2.set_xticks([])
        ax2.set_yticks([])
        ax2.text(
            0.5, 0.5, "no validation data\n(the training set has no 'val' items):\nno scores; the last step's weights are the model",
            ha="center", va="center", transform=ax2.transAxes, fontsize=10, wrap=True,
        )
        caption = "Without validation items nothing measures how well the model segments; add some with --split val."
    if train or (val and "loss" in val[0]):
        ax1.legend(fontsize=8)
    fig.text(0.01, 0.0, caption, ha="left", va="bottom", fontsize=8, wrap=True)
    fig.get_layout_engine().set(rect=(0, 0.1, 1, 0.9))
    return fig


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

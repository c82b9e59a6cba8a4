"""Figures of an evaluation: metrics against threshold, score histogram, where the errors lie.

Each figure carries a caption that says what its measures mean, so that it can be read
without the documentation. Drawn with matplotlib's object API on the Agg canvas (no
pyplot state, safe in threads and without a display). The overlay of outlines on the raw
image is in :mod:`pipeline.evaluate.overlay`.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.evaluate.failures import f1_by_bin
from pipeline.evaluate.matching import Matching

LOG = logging.getLogger(__name__)

CURVES = ("f1", "precision", "recall", "accuracy", "panoptic_quality", "mean_matched_score")
STYLES = {
    "f1": {"color": "k", "lw": 2.0},
    "precision": {"color": "#0072B2"},
    "recall": {"color": "#D55E00"},
    "accuracy": {"color": "#009E73", "ls": "--"},
    "panoptic_quality": {"color": "#CC79A7", "ls": "-."},
    "mean_matched_score": {"color": "#E69F00", "ls": ":", "lw": 2.0},
}
#: What each measure means, in the captions.
DEFINITIONS = {
    "f1": "F1 = 2 TP / (2 TP + FP + FN): detection, found and false nuclei together.",
    "precision": "precision = TP / (TP + FP): the share of predicted nuclei that match a true one.",
    "recall": "recall = TP / (TP + FN): the share of true nuclei found.",
    "accuracy": "accuracy = TP / (TP + FP + FN) (the 'average precision' of the DSB 2018 and StarDist papers).",
    "mean_matched_score": "mean matched score: the mean IoU of the matched pairs only, i.e. how well the nuclei that were "
    "found are outlined; misses and false positives do not lower it.",
    "panoptic_quality": "panoptic quality = sum of matched IoUs / (TP + FP/2 + FN/2) = F1 x mean matched score: "
    "detection and outline quality in one number.",
}
SCORE_CAPTION = (
    "Evaluation Score (thesis Eq. 9) = (0.95 x sub-region Dice + 1.05 x full Dice) / 2, per ground-truth nucleus. "
    "Full Dice: the nucleus against the predicted object that overlaps it most (at any overlap, no threshold), so a "
    "nucleus cut in two or merged with its neighbour still scores about 0.5-0.7. Sub-region Dice: predicted against "
    "true foreground inside the nucleus' bounding box, whatever the cut into objects. Because partly found nuclei "
    "still score, the mean Evaluation Score reads higher than F1, which counts a nucleus only when it is matched one "
    "to one at IoU >= the threshold: the two answer different questions (outline overlap vs. objects found)."
)
OBJECT_COLOURS = {"tp": "#009E73", "fn": "#CC79A7", "fp": "#E69F00"}


#: Height of one caption line (7.5 pt text) in inches.
LINE = 0.135


class Sheet:
    """A figure laid out in inches: a body of plots above a wrapped caption.

    The layout is fixed, so the PNG is drawn once (``bbox_inches="tight"`` would draw
    every figure twice: ~30 % of the time the figures take).
    """

    def __init__(self, width: float, body: float, text: str = "", *, wrap: int = 120):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        wrapped = "\n".join(textwrap.fill(par, wrap) for par in text.split("\n")) if text else ""
        self.caption_height = (wrapped.count("\n") + 1) * LINE + 0.2 if wrapped else 0.05
        self.width, self.height = width, body + self.caption_height
        self.fig = Figure(figsize=(self.width, self.height))
        FigureCanvasAgg(self.fig)
        if wrapped:
            self.fig.text(0.1 / width, (self.caption_height - 0.08) / self.height, wrapped, ha="left", va="top", fontsize=7.5, color="0.2")

    def box(self, left: float, bottom: float, width: float, height: float) -> tuple[float, float, float, float]:
        """An area given in inches from the body's lower left corner, as figure fractions."""
        return (left / self.width, (self.caption_height + bottom) / self.height, width / self.width, height / self.height)

    def axes(self, left: float, bottom: float, width: float, height: float):
        return self.fig.add_axes(self.box(left, bottom, width, height))

    def title(self, text: str, *, fontsize: float = 9) -> None:
        self.fig.suptitle(text, fontsize=fontsize, y=1 - 0.1 / self.height, va="top")


def save(fig, path: str | Path, dpi: int) -> Path:
    """Write the figure (PNG); logged at debug level, the caller reports the final paths."""
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    LOG.debug("drew %s", path.name)
    return path


def plot_metrics(pooled: dict[float, Matching], path: str | Path, *, per_image: Sequence[dict[float, Matching]] = (), title: str = "", dpi: int = 120) -> Path:
    """Pooled F1, precision, recall, accuracy, PQ and mean matched score against the threshold.

    With more than one volume, each volume's F1 is drawn faintly behind (up to 100).
    """
    lines = [
        "TP: pairs of a true and a predicted nucleus matched one to one; FP: predicted nuclei left unmatched; "
        "FN: true nuclei left unmatched. Counts are added over all volumes before the ratios are taken.",
        *(DEFINITIONS[k] for k in CURVES),
    ]
    sheet = Sheet(8.4, 4.2, "\n".join(lines), wrap=125)
    ax = sheet.axes(0.65, 0.55, 5.0, 3.3)
    thresholds = sorted(pooled)
    images = list(per_image)
    if len(images) > 1:
        for one in images[:100]:
            ts = sorted(one)
            ax.plot(ts, [one[t].f1 for t in ts], color="0.82", lw=0.7, zorder=1)
    for key in CURVES:
        ax.plot(thresholds, [getattr(pooled[t], key) for t in thresholds], marker="o", ms=3, label=key.replace("_", " "), zorder=2, **STYLES[key])
    if len(images) > 1:
        ax.plot([], [], color="0.82", lw=0.7, label=f"F1 of each volume ({min(len(images), 100)})")
    first = pooled[thresholds[0]]
    ax.set_xlabel(f"{first.criterion.upper()} threshold (a pair matches when its {first.criterion.upper()} >= threshold)")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(min(thresholds) - 0.02, max(thresholds) + 0.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    volumes = f"{len(images)} volumes" if len(images) > 1 else "1 volume"
    ax.set_title(title or f"Matching of {first.n_true} true and {first.n_pred} predicted nuclei ({volumes}, pooled)", fontsize=9)
    return save(sheet.fig, path, dpi)


def plot_score_histogram(nuclei: pd.DataFrame, path: str | Path, *, bins: int = 20, f1: float | None = None, report_threshold: float = 0.5, dpi: int = 120) -> Path:
    """Histogram of the per-nucleus Evaluation Score, full-image and sub-region Dice."""
    sheet = Sheet(8.4, 3.9, SCORE_CAPTION, wrap=125)
    ax = sheet.axes(0.65, 0.55, 5.0, 3.0)
    edges = np.linspace(0, 1, bins + 1)
    for column, style in (("evaluation_score", {"color": "k", "lw": 1.8}), ("full_dice", {"color": "#0072B2"}), ("sub_dice", {"color": "#E69F00"})):
        values = nuclei[column].to_numpy(float) if column in nuclei and len(nuclei) else np.zeros(0)
        label = f"{column.replace('_', ' ')} (mean {values.mean():.3f})" if len(values) else column.replace("_", " ")
        ax.hist(values, bins=edges, histtype="step", label=label, **style)
    if f1 is not None:
        ax.plot([], [], " ", label=f"for comparison: F1 at IoU {report_threshold:g} = {f1:.3f}")
    ax.set_xlabel("score per ground-truth nucleus")
    ax.set_ylabel("nuclei")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.set_title(f"Per-nucleus scores of {len(nuclei)} ground-truth nuclei", fontsize=9)
    return save(sheet.fig, path, dpi)


def _edges(values: np.ndarray, bins: int, *, log: bool) -> np.ndarray:
    if not len(values):
        return np.array([0.0, 1.0])
    lo, hi = float(values.min()), float(values.max())
    if log:
        lo, hi = max(lo, 1.0), max(hi, 1.0)
        return np.geomspace(lo, hi * 1.0001 if hi > lo else lo * 2, bins + 1)
    if hi - lo < 1:
        return np.array([lo - 0.5, lo + 0.5])
    return np.linspace(lo, hi + 1e-9, min(bins, int(np.ceil(hi - lo)) + 1) + 1)


def _error_panel(ax_f1, ax_n, binned: dict[str, np.ndarray], edges: np.ndarray, *, log: bool, xlabel: str) -> None:
    centres = np.sqrt(edges[:-1] * edges[1:]) if log else (edges[:-1] + edges[1:]) / 2
    widths = np.diff(edges) * 0.9
    ax_f1.plot(centres, binned["f1"], "o-", color="k", lw=1.8, ms=4)
    ax_f1.set_ylim(-0.02, 1.02)
    ax_f1.set_ylabel("F1 in the bin")
    ax_f1.grid(alpha=0.3)
    bottom = np.zeros(len(centres))
    for key, name in (("tp", "true positive"), ("fn", "false negative (missed)"), ("fp", "false positive")):
        ax_n.bar(centres, binned[key], width=widths, bottom=bottom, color=OBJECT_COLOURS[key], label=name, align="center")
        bottom = bottom + binned[key]
    ax_n.set_ylabel("nuclei")
    ax_n.set_xlabel(xlabel)
    if log:
        for ax in (ax_f1, ax_n):
            ax.set_xscale("log")
    ax_f1.set_xlim(edges[0], edges[-1])
    ax_n.set_xlim(edges[0], edges[-1])


def plot_errors(nuclei: pd.DataFrame, predicted: pd.DataFrame, path: str | Path, *, bins: int = 10, report_threshold: float = 0.5, dpi: int = 120) -> Path:
    """F1 against depth (z) and against nucleus size, with the counts behind each bin."""
    text = (
        "Each bin's F1 = 2 TP / (2 TP + FP + FN) over the objects in it; true positives and misses are placed by the "
        "ground-truth nucleus, false positives by the predicted object. A dip in F1 at the top or bottom of the volume "
        "points to the fainter, blurrier deep slices; at small sizes, to fragments and debris; at large sizes, to merged "
        "neighbours. Merged: a true nucleus of which a prediction holds more than half, when that prediction also holds "
        "more than half of another. Split: a true nucleus in which two or more predictions each lie mostly."
    )
    sheet = Sheet(10.0, 5.9, text, wrap=150)
    t_status = nuclei["status"].to_numpy(str) if len(nuclei) else np.zeros(0, str)
    p_status = predicted["status"].to_numpy(str) if len(predicted) else np.zeros(0, str)
    panels = (("z", False, "depth: z centroid of the nucleus (slice; 0 = first slice of the volume)"), ("volume", True, "size: voxels of the nucleus (log scale)"))
    for col, (column, log, xlabel) in enumerate(panels):
        t_val = nuclei[column].to_numpy(float) if len(nuclei) else np.zeros(0)
        p_val = predicted[column].to_numpy(float) if len(predicted) else np.zeros(0)
        edges = _edges(np.concatenate([t_val, p_val]), bins, log=log)
        binned = f1_by_bin(t_val[t_status == "tp"], t_val[t_status == "fn"], p_val[p_status == "fp"], edges)
        left = 0.8 + col * 4.9
        ax_n = sheet.axes(left, 0.95, 4.1, 1.7)
        ax_f1 = sheet.axes(left, 2.75, 4.1, 2.45)
        _error_panel(ax_f1, ax_n, binned, edges, log=log, xlabel=xlabel)
        ax_f1.tick_params(labelbottom=False)
        ax_f1.set_title("F1 against depth" if column == "z" else "F1 against nucleus size", fontsize=9)
        if col == 0:
            ax_n.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(0.0, -0.32), ncol=3, frameon=False)
    n_tp, n_fn, n_fp = int((t_status == "tp").sum()), int((t_status == "fn").sum()), int((p_status == "fp").sum())
    merged = int(nuclei["merged"].sum()) if "merged" in nuclei else 0
    split = int(nuclei["split"].sum()) if "split" in nuclei else 0
    merges = int(predicted["merge"].sum()) if "merge" in predicted else 0
    sheet.title(
        f"Where the errors are, at IoU >= {report_threshold:g}: {n_tp} matched, {n_fn} missed, {n_fp} false positives; "
        f"{merged} true nuclei merged (into {merges} predictions), {split} split"
    )
    return save(sheet.fig, path, dpi)

"""Figures of an evaluation: metrics against threshold, score histogram, TP/FP/FN overlay.

Drawn with matplotlib's object API on the Agg canvas (no pyplot state, safe in
threads and without a display).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.evaluate.matching import Matching

LOG = logging.getLogger(__name__)

#: Overlay categories: value -> (name, RGB colour). Colours follow the thesis' figures
#: (overlap yellow, false positives green, false negatives purple).
OVERLAY = {
    0: ("background", (0.0, 0.0, 0.0)),
    1: ("true positive (overlap)", (1.0, 0.85, 0.0)),
    2: ("true positive (disagreement)", (0.55, 0.55, 0.55)),
    3: ("false positive", (0.1, 0.8, 0.2)),
    4: ("false negative", (0.6, 0.2, 0.85)),
}
CURVES = ("precision", "recall", "accuracy", "f1", "panoptic_quality", "mean_matched_score")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    LOG.info("wrote %s", path)
    return path


def plot_metrics(pooled: dict[float, Matching], path: str | Path, *, per_image: Sequence[dict[float, Matching]] = (), title: str = "", dpi: int = 120) -> Path:
    """Pooled precision, recall, accuracy, F1, PQ and mean matched score against the threshold.

    Per-image accuracy curves are drawn faintly behind (up to 100 images).
    """
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    thresholds = sorted(pooled)
    for images in list(per_image)[:100]:
        ts = sorted(images)
        ax.plot(ts, [images[t].accuracy for t in ts], color="0.8", lw=0.7, zorder=1)
    styles = ("-", "--", "-", ":", "-", "-.")
    for key, style in zip(CURVES, styles):
        ax.plot(thresholds, [getattr(pooled[t], key) for t in thresholds], ls=style, marker="o", ms=3, label=key.replace("_", " "), zorder=2)
    ax.set_xlabel(f"{pooled[thresholds[0]].criterion.upper()} threshold")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(min(thresholds) - 0.02, max(thresholds) + 0.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or "matching, pooled over all volumes (grey: accuracy per volume)", fontsize=9)
    return _save(fig, path, dpi)


def plot_score_histogram(nuclei: pd.DataFrame, path: str | Path, *, bins: int = 20, dpi: int = 120) -> Path:
    """Histogram of the per-nucleus Evaluation Score, full-image and sub-region Dice."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    edges = np.linspace(0, 1, bins + 1)
    for column, style in (("evaluation_score", {"color": "k", "lw": 1.8}), ("full_dice", {"color": "tab:blue"}), ("sub_dice", {"color": "tab:orange"})):
        values = nuclei[column].to_numpy(float) if column in nuclei and len(nuclei) else np.zeros(0)
        label = f"{column.replace('_', ' ')} (mean {values.mean():.3f})" if len(values) else column.replace("_", " ")
        ax.hist(values, bins=edges, histtype="step", label=label, **style)
    ax.set_xlabel("score per ground-truth nucleus")
    ax.set_ylabel("nuclei")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{len(nuclei)} ground-truth nuclei", fontsize=9)
    return _save(fig, path, dpi)


def overlay_categories(truth: np.ndarray, pred: np.ndarray, matched_pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Classify the pixels of a slice for the overlay (values of :data:`OVERLAY`).

    Parameters
    ----------
    truth, pred : numpy.ndarray
        Ground-truth and predicted labels of one slice.
    matched_pairs : sequence of (int, int)
        ``(true id, predicted id)`` of the matches (of the whole volume).

    Returns
    -------
    numpy.ndarray
        uint8: 1 where a true object and its matched prediction overlap, 2 elsewhere on
        matched objects, 3 on unmatched predictions, 4 on unmatched true objects, 0 background.
    """
    pairs = np.asarray(list(matched_pairs), np.int64).reshape(-1, 2)
    t_matched = np.isin(truth, pairs[:, 0]) & (truth > 0)
    p_matched = np.isin(pred, pairs[:, 1]) & (pred > 0)
    partner = np.zeros(truth.shape, np.int64)
    if len(pairs):
        order = np.argsort(pairs[:, 0])
        idx = np.clip(np.searchsorted(pairs[order, 0], truth), 0, len(pairs) - 1)
        partner = np.where(t_matched, pairs[order, 1][idx], 0)
    out = np.zeros(truth.shape, np.uint8)
    out[(t_matched | p_matched)] = 2
    out[(pred > 0) & ~p_matched] = 3
    out[(truth > 0) & ~t_matched] = 4
    out[t_matched & (pred == partner)] = 1
    return out


def plot_overlay(categories: np.ndarray, truth: np.ndarray, path: str | Path, *, title: str = "", dpi: int = 120) -> Path:
    """The overlay image with a legend and the ground-truth outlines."""
    from matplotlib.patches import Patch
    from skimage.segmentation import find_boundaries

    colours = np.array([OVERLAY[k][1] for k in sorted(OVERLAY)])
    rgb = colours[categories]
    rgb[find_boundaries(truth, mode="inner") & (truth > 0)] = (1.0, 1.0, 1.0)
    height, width = categories.shape
    fig = _figure(7.0, 7.0 * height / max(width, 1) + 0.8)
    ax = fig.add_subplot()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    counts = {k: int((categories == k).sum()) for k in OVERLAY if k}
    handles = [Patch(color=OVERLAY[k][1], label=f"{OVERLAY[k][0]} ({counts[k]} px)") for k in sorted(counts)]
    handles.append(Patch(facecolor="white", edgecolor="0.5", label="ground-truth outline"))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=3, frameon=False)
    ax.set_title(title, fontsize=9)
    return _save(fig, path, dpi)

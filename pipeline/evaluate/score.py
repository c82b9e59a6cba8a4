"""Per-nucleus scores: the thesis' Evaluation Score (Eq. 9) and the Cell Tracking Challenge SEG.

For every ground-truth nucleus (thesis section 2.10):

* **full Dice**: Dice of the nucleus against the predicted instance that overlaps it
  most, over the whole image; merged or split predictions lower it;
* **sub-region Dice**: Dice of the *binary* ground truth against the *binary*
  prediction (any instance) inside the nucleus' tight bounding box; it ignores how
  the foreground was cut into instances. By default (``sub_region="foreground"``)
  every ground-truth voxel in the box counts, so a perfect prediction scores 1 even
  where nuclei touch and their neighbours reach into the box; with
  ``sub_region="nucleus"`` only the nucleus itself is the truth, and predicted
  neighbours inside its box count as false positives;
* **Evaluation Score** ``(0.95 * sub + 1.05 * full) / 2``.

Everything is vectorised: full Dice comes from the overlap table, the predicted
foreground inside each box from a summed-area table of the binary prediction, so
no Python loop runs over the nuclei or the voxels.

The thesis (section 2.10) describes the sub-region as the nucleus' tight bounding box
and the prediction as binary, without saying which ground truth the box holds; the
default reading keeps the invariant that identical inputs score 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import product
from typing import Literal

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from pipeline.evaluate.matching import Matching
from pipeline.evaluate.overlap import Overlap, check_pair, label_overlap, relabel

LOG = logging.getLogger(__name__)

SUB_WEIGHT = 0.95
FULL_WEIGHT = 1.05
#: Columns of the per-nucleus table (``nuclei.csv`` adds the image, channel and time point first).
NUCLEUS_COLUMNS = (
    "true_id",
    "volume",
    "matched_id",
    "iou",
    "best_pred_id",
    "full_dice",
    "sub_dice",
    "evaluation_score",
    "ctc_jaccard",
)


def evaluation_score(sub_dice, full_dice, sub_weight: float = SUB_WEIGHT, full_weight: float = FULL_WEIGHT):
    """Thesis Eq. 9: ``(sub_weight * sub_dice + full_weight * full_dice) / 2``."""
    return (sub_weight * np.asarray(sub_dice, float) + full_weight * np.asarray(full_dice, float)) / 2.0


def bounding_boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """Tight boxes of labels ``1..n`` as ``(n, 2, ndim)``: start (inclusive) and stop (exclusive).

    Absent labels get an empty box at the origin.
    """
    boxes = np.zeros((n, 2, labels.ndim), np.int64)
    for i, sl in enumerate(ndi.find_objects(labels, max_label=n)):  # C loop over voxels; list of n slices
        if sl is not None:
            boxes[i, 0] = [s.start for s in sl]
            boxes[i, 1] = [s.stop for s in sl]
    return boxes


def box_sums(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Number of true voxels of ``mask`` inside each box, from one summed-area table.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean array of any dimension.
    boxes : numpy.ndarray
        ``(n, 2, ndim)`` start/stop corners as from :func:`bounding_boxes`.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 counts.
    """
    dtype = np.int32 if mask.size < np.iinfo(np.int32).max else np.int64
    sat = np.zeros(tuple(s + 1 for s in mask.shape), dtype)
    inner = sat[(slice(1, None),) * mask.ndim]
    inner[...] = mask
    for axis in range(mask.ndim):
        np.cumsum(inner, axis=axis, out=inner)
    total = np.zeros(len(boxes), np.int64)
    for corner in product((0, 1), repeat=mask.ndim):  # inclusion-exclusion over the 2**ndim corners
        index = tuple(boxes[:, c, d] for d, c in enumerate(corner))
        sign = -1 if (mask.ndim - sum(corner)) % 2 else 1
        total += sign * sat[index].astype(np.int64)
    return total


def _best_pairs(overlap: Overlap) -> np.ndarray:
    """Per true object, the index of the pair with the largest intersection (ties: larger Dice, then smaller id); -1 if none."""
    best = np.full(overlap.n_true, -1, np.int64)
    if len(overlap.rows) == 0:
        return best
    order = np.lexsort((overlap.cols, -overlap.dice(), -overlap.inter, overlap.rows))
    rows = overlap.rows[order]
    first = np.r_[True, rows[1:] != rows[:-1]]
    best[rows[first]] = order[first]
    return best


def ctc_jaccard(overlap: Overlap) -> np.ndarray:
    """Per ground-truth object, the Jaccard index (IoU) of the predicted object covering more
    than half of it (Cell Tracking Challenge SEG), 0 where none does."""
    out = np.zeros(overlap.n_true)
    hit = 2 * overlap.inter > overlap.true_area[overlap.rows]
    out[overlap.rows[hit]] = overlap.iou()[hit]
    return out


def ctc_seg(y_true: np.ndarray | Overlap, y_pred: np.ndarray | None = None) -> float:
    """Cell Tracking Challenge SEG: mean of :func:`ctc_jaccard` over the reference objects (0 if none)."""
    overlap = y_true if isinstance(y_true, Overlap) else label_overlap(y_true, y_pred)
    jac = ctc_jaccard(overlap)
    return float(jac.mean()) if len(jac) else 0.0


@dataclass(frozen=True)
class ScoreWeights:
    """Weights of Eq. 9 (thesis: 0.95 for the sub-region, 1.05 for the full image), and
    what the sub-region's ground truth is: ``"foreground"`` (every true voxel in the box)
    or ``"nucleus"`` (the nucleus alone)."""

    sub: float = SUB_WEIGHT
    full: float = FULL_WEIGHT
    sub_region: Literal["foreground", "nucleus"] = "foreground"


def nucleus_scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    overlap: Overlap | None = None,
    match: Matching | None = None,
    weights: ScoreWeights = ScoreWeights(),
) -> pd.DataFrame:
    """One row per ground-truth nucleus: matching, full and sub-region Dice, Evaluation Score.

    Parameters
    ----------
    y_true, y_pred : numpy.ndarray
        Ground-truth and predicted label images of the same shape.
    overlap : Overlap, optional
        Their overlap table, when already computed.
    match : Matching, optional
        A matching with ``report_matches=True``; fills ``matched_id`` and ``iou`` (the
        IoU of the matched pair whatever the matching criterion; 0 for unmatched nuclei).
        Without it both columns are 0.
    weights : ScoreWeights
        Weights of Eq. 9.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`NUCLEUS_COLUMNS`, rows in increasing ``true_id``.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((1, 4, 8), np.uint8); t[0, :, :4] = 1
    >>> p = np.zeros_like(t); p[0, :, :2] = 3; p[0, :, 2:4] = 4
    >>> row = nucleus_scores(t, p).iloc[0]
    >>> float(row.full_dice), float(row.sub_dice), float(row.evaluation_score)
    (0.6666666666666666, 1.0, 0.825)
    """
    y_true, y_pred = check_pair(y_true, y_pred)
    overlap = label_overlap(y_true, y_pred) if overlap is None else overlap
    n = overlap.n_true
    flat, _, _ = relabel(y_true)
    boxes = bounding_boxes(flat.reshape(y_true.shape), n)
    pred_fg = y_pred > 0
    pred_in_box = box_sums(pred_fg, boxes)
    area = overlap.true_area
    if weights.sub_region == "nucleus":
        true_in_box = area
        inter_in_box = np.bincount(overlap.rows, weights=overlap.inter, minlength=n).round().astype(np.int64)
    else:
        true_fg = y_true > 0
        true_in_box = box_sums(true_fg, boxes)
        inter_in_box = box_sums(true_fg & pred_fg, boxes)
    sub = 2.0 * inter_in_box / (true_in_box + pred_in_box) if n else np.zeros(0)
    best = _best_pairs(overlap)
    has = best >= 0
    full = np.zeros(n)
    full[has] = overlap.dice()[best[has]]
    best_id = np.zeros(n, np.int64)
    best_id[has] = overlap.pred_labels[overlap.cols[best[has]]]
    matched_id = np.zeros(n, np.int64)
    iou = np.zeros(n)
    if match is not None and match.matched_pairs:
        pairs = np.asarray(match.matched_pairs, np.int64)
        r = np.searchsorted(overlap.true_labels, pairs[:, 0])
        c = np.searchsorted(overlap.pred_labels, pairs[:, 1])
        matched_id[r] = pairs[:, 1]
        keys = overlap.rows * overlap.n_pred + overlap.cols  # sorted: the table is ordered by row, then column
        k = np.clip(np.searchsorted(keys, r * overlap.n_pred + c), 0, max(len(keys) - 1, 0))
        found = (keys[k] == r * overlap.n_pred + c) if len(keys) else np.zeros(len(r), bool)
        iou[r[found]] = overlap.iou()[k[found]]
    return pd.DataFrame(
        {
            "true_id": overlap.true_labels,
            "volume": area,
            "matched_id": matched_id,
            "iou": iou,
            "best_pred_id": best_id,
            "full_dice": full,
            "sub_dice": sub,
            "evaluation_score": evaluation_score(sub, full, weights.sub, weights.full),
            "ctc_jaccard": ctc_jaccard(overlap),
        },
        columns=list(NUCLEUS_COLUMNS),
    )


def channel_scores(nuclei: pd.DataFrame, column: str = "evaluation_score", by: str = "channel") -> tuple[float, dict[str, float]]:
    """Average a per-nucleus score per channel, then over channels (thesis Table 7).

    Parameters
    ----------
    nuclei : pandas.DataFrame
        Per-nucleus rows of every image, with a ``by`` column.
    column : str
        The score to average.
    by : str
        The channel column.

    Returns
    -------
    mean : float
        Mean of the channel means (0 when there are no nuclei).
    per_channel : dict
        ``{channel: mean over that channel's nuclei}``.
    """
    if nuclei.empty:
        return 0.0, {}
    per = nuclei.groupby(by, sort=False)[column].mean()
    per_channel = {str(k): float(v) for k, v in per.items()}
    return float(np.mean(list(per_channel.values()))), per_channel

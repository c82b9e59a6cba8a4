"""Where a prediction fails: each object's status, merges and splits, its depth and size.

At the report threshold every ground-truth nucleus is a true positive (``tp``: matched
one-to-one) or a false negative (``fn``), every predicted object a true positive or a
false positive (``fp``). Two kinds of error are told apart on top, from the overlap
table alone:

* a predicted object is a **merge** when it holds more than half of each of two or more
  ground-truth nuclei; those nuclei are **merged**;
* a ground-truth nucleus is **split** when two or more predicted objects each lie more
  than half inside it; those objects are its **fragments**.

Both can hold for matched objects too (one half of a split nucleus often still matches at
IoU 0.5). Depth is the z centroid of each object (in slices), size its voxel count, so
that failures can be located in the volume (``errors.png``).
"""

from __future__ import annotations

import numpy as np

from pipeline.evaluate.matching import Matching
from pipeline.evaluate.overlap import Overlap

#: Columns added to the per-nucleus table (``nuclei.csv``) after the score columns.
TRUTH_COLUMNS = ("z", "status", "split", "merged")
#: Columns of the per-predicted-object table (``predicted.csv``, after image, channel, t).
PRED_COLUMNS = ("pred_id", "volume", "z", "matched_id", "iou", "status", "merge", "fragment")


def centroid_z(labels: np.ndarray, ids: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """z centroid (in slices) of each object ``ids`` of a ``(z, y, x)`` label volume.

    One ``bincount`` per slice, so memory stays that of one slice whatever the volume.

    Parameters
    ----------
    labels : numpy.ndarray
        Non-negative integer labels, ``(z, y, x)``.
    ids : numpy.ndarray
        Sorted ids present (without 0), as ``Overlap.true_labels``.
    areas : numpy.ndarray
        Voxels per id.

    Returns
    -------
    numpy.ndarray
        float64, one per id.
    """
    out = np.zeros(len(ids))
    if not len(ids):
        return out
    top = int(ids[-1])
    direct = top < 4 * len(ids) + 4096  # a bincount table no larger than a few times the ids
    for z in range(labels.shape[0]):
        plane = labels[z].reshape(-1)
        plane = plane[plane != 0]
        if not plane.size:
            continue
        if direct:
            counts = np.bincount(plane.astype(np.int64, copy=False), minlength=top + 1)[ids]
        else:
            counts = np.bincount(np.searchsorted(ids, plane), minlength=len(ids))
        out += z * counts
    return out / np.maximum(areas, 1)


def classify(overlap: Overlap, report: Matching) -> dict[str, np.ndarray]:
    """Status, merge and split flags of every object at the report threshold.

    Parameters
    ----------
    overlap : Overlap
        The overlap table of the pair.
    report : Matching
        The matching at the report threshold, with ``report_matches=True``.

    Returns
    -------
    dict
        ``true_matched`` (partner id or 0), ``true_split``, ``true_merged`` (one per
        ground-truth nucleus); ``pred_matched``, ``pred_iou``, ``pred_merge``,
        ``pred_fragment`` (one per predicted object), all in the order of the table's ids.
    """
    n_t, n_p = overlap.n_true, overlap.n_pred
    rows, cols, inter = overlap.rows, overlap.cols, overlap.inter
    most_of_true = 2 * inter > overlap.true_area[rows]  # the prediction holds most of this nucleus
    most_of_pred = 2 * inter > overlap.pred_area[cols]  # the prediction lies mostly in this nucleus
    pred_merge = np.bincount(cols[most_of_true], minlength=n_p) >= 2
    true_split = np.bincount(rows[most_of_pred], minlength=n_t) >= 2
    true_merged = np.zeros(n_t, bool)
    hit = most_of_true & pred_merge[cols]
    true_merged[rows[hit]] = True
    pred_fragment = np.zeros(n_p, bool)
    hit = most_of_pred & true_split[rows]
    pred_fragment[cols[hit]] = True

    true_matched = np.zeros(n_t, np.int64)
    pred_matched = np.zeros(n_p, np.int64)
    pred_iou = np.zeros(n_p)
    if report.matched_pairs:
        pairs = np.asarray(report.matched_pairs, np.int64)
        r = np.searchsorted(overlap.true_labels, pairs[:, 0])
        c = np.searchsorted(overlap.pred_labels, pairs[:, 1])
        true_matched[r] = pairs[:, 1]
        pred_matched[c] = pairs[:, 0]
        keys = rows * n_p + cols  # sorted: the table is ordered by row, then column
        k = np.searchsorted(keys, r * n_p + c)
        pred_iou[c] = overlap.iou()[k]
    return {
        "true_matched": true_matched,
        "true_split": true_split,
        "true_merged": true_merged,
        "pred_matched": pred_matched,
        "pred_iou": pred_iou,
        "pred_merge": pred_merge,
        "pred_fragment": pred_fragment,
    }


def status(matched: np.ndarray, unmatched: str) -> np.ndarray:
    """``"tp"`` where ``matched`` is non-zero, else ``unmatched`` (``"fn"`` or ``"fp"``)."""
    return np.where(matched != 0, "tp", unmatched)


def f1_by_bin(values_tp: np.ndarray, values_fn: np.ndarray, values_fp: np.ndarray, edges: np.ndarray) -> dict[str, np.ndarray]:
    """Counts and F1 ``2 TP / (2 TP + FP + FN)`` of objects binned by a value (depth, size).

    True positives and false negatives are binned by the ground-truth nucleus' value,
    false positives by the predicted object's. Values outside ``edges`` fall in the first
    or last bin.

    Returns
    -------
    dict
        ``tp``, ``fn``, ``fp`` (int arrays, one per bin) and ``f1`` (NaN where a bin is empty).
    """
    n = len(edges) - 1

    def count(v: np.ndarray) -> np.ndarray:
        idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, n - 1)
        return np.bincount(idx, minlength=n)

    tp, fn, fp = count(values_tp), count(values_fn), count(values_fp)
    den = 2 * tp + fp + fn
    f1 = np.full(n, np.nan)
    np.divide(2 * tp, den, out=f1, where=den > 0)
    return {"tp": tp, "fn": fn, "fp": fp, "f1": f1}

"""Which ground-truth and predicted objects match: StarDist's one-to-one assignment, solved sparsely.

StarDist builds the dense ``n_true x n_pred`` score matrix and solves one assignment with
cost ``-(score >= thresh) - score / (2 min(n_true, n_pred))``. The optimum is the same when
the candidate pairs (score ``>= thresh``) are already one-to-one (then every one of them is
taken), and otherwise separates over the connected groups of overlapping objects: only the
groups that hold a conflict go to the Hungarian algorithm.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.evaluate.overlap import Overlap


def assign_pairs(overlap: Overlap, scores: np.ndarray, thresh: np.float32) -> np.ndarray:
    """Indices (into the pair arrays) of the matched pairs, sorted by true object.

    Reproduces the optimum of StarDist's dense assignment (cost
    ``-(s >= thresh) - s / (2 min(n_true, n_pred))``) without building it when possible.
    """
    n_true, n_pred = overlap.n_true, overlap.n_pred
    n_matched = min(n_true, n_pred)
    cand = np.flatnonzero(scores >= thresh)  # float32 comparison, as StarDist's
    rows, cols = overlap.rows, overlap.cols
    deg_t = np.bincount(rows[cand], minlength=n_true)
    deg_p = np.bincount(cols[cand], minlength=n_pred)
    if not len(cand) or (deg_t.max() <= 1 and deg_p.max() <= 1):
        return cand  # the candidates are one-to-one: every optimal assignment takes all of them
    # groups of objects linked by overlap; only those holding a conflict need the Hungarian
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, n_true + cols)), shape=(n_true + n_pred,) * 2)
    _, comp = connected_components(graph, directed=False)
    conflict = np.zeros(comp.max() + 1, bool)
    conflict[comp[np.flatnonzero(deg_t > 1)]] = True
    conflict[comp[n_true + np.flatnonzero(deg_p > 1)]] = True
    pair_comp = comp[rows]
    keep = [cand[~conflict[pair_comp[cand]]]]
    order = np.argsort(pair_comp, kind="stable")
    bounds = np.searchsorted(pair_comp[order], np.arange(comp.max() + 2))
    for c in np.flatnonzero(conflict):
        idx = order[bounds[c] : bounds[c + 1]]
        t_ids, t_loc = np.unique(rows[idx], return_inverse=True)
        p_ids, p_loc = np.unique(cols[idx], return_inverse=True)
        sub = np.zeros((len(t_ids), len(p_ids)), np.float32)
        sub[t_loc, p_loc] = scores[idx]
        costs = -(sub >= thresh).astype(float) - sub / (2 * n_matched)
        ti, pj = linear_sum_assignment(costs)
        ok = sub[ti, pj] >= thresh
        pair_index = np.full(sub.shape, -1, np.int64)
        pair_index[t_loc, p_loc] = idx
        keep.append(pair_index[ti[ok], pj[ok]])
    chosen = np.concatenate(keep)
    return chosen[np.argsort(rows[chosen], kind="stable")]


def dense_assign(overlap: Overlap, scores: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """StarDist's full assignment (needed when ``thresh <= 0``: every pair is then a candidate)."""
    dense = overlap.dense(scores)
    n_matched = min(overlap.n_true, overlap.n_pred)
    costs = -(dense >= thresh).astype(float) - dense / (2 * n_matched)
    ti, pj = linear_sum_assignment(costs)
    ok = dense[ti, pj] >= thresh
    return ti[ok], pj[ok], dense[ti, pj][ok]

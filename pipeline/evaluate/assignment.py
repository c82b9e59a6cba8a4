"""Which ground-truth and predicted objects match: StarDist's one-to-one assignment, solved sparsely.

StarDist builds the dense ``n_true x n_pred`` score matrix and solves one assignment with
cost ``-(score >= thresh) - score / (2 min(n_true, n_pred))``. The optimum is the same when
the candidate pairs (score ``>= thresh``) are already one-to-one (then every one of them is
taken), and otherwise separates over the connected groups of overlapping objects. The
groups that hold a conflict are solved together as one sparse assignment (SciPy's LAPJVsp,
``min_weight_full_bipartite_matching``) over the overlapping pairs only: pairs that do not
overlap have score 0 and cost 0 in StarDist's matrix, so they never change the optimum.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

from pipeline.evaluate.overlap import Overlap

#: Cost of the padding edges of the sparse problem (LAPJVsp needs non-zero weights); it is
#: below every real cost's rounding, so it stands for StarDist's 0 without changing any sum.
_PAD = float(np.finfo(float).tiny)


def assign_pairs(overlap: Overlap, scores: np.ndarray, thresh: np.float32) -> np.ndarray:
    """Indices (into the pair arrays) of the matched pairs, sorted by true object.

    Reproduces the optimum of StarDist's dense assignment (cost
    ``-(s >= thresh) - s / (2 min(n_true, n_pred))``) without building it.
    """
    n_true, n_pred = overlap.n_true, overlap.n_pred
    cand = np.flatnonzero(scores >= thresh)  # float32 comparison, as StarDist's
    rows, cols = overlap.rows, overlap.cols
    deg_t = np.bincount(rows[cand], minlength=n_true)
    deg_p = np.bincount(cols[cand], minlength=n_pred)
    if not len(cand) or (deg_t.max() <= 1 and deg_p.max() <= 1):
        return cand  # the candidates are one-to-one: every optimal assignment takes all of them
    # groups of objects linked by overlap; only those holding a conflict need solving
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, n_true + cols)), shape=(n_true + n_pred,) * 2)
    _, comp = connected_components(graph, directed=False)
    conflict = np.zeros(comp.max() + 1, bool)
    conflict[comp[np.flatnonzero(deg_t > 1)]] = True
    conflict[comp[n_true + np.flatnonzero(deg_p > 1)]] = True
    in_conflict = conflict[comp[rows]]
    free = cand[~in_conflict[cand]]
    solved = _solve_sparse(overlap, scores, thresh, np.flatnonzero(in_conflict), min(n_true, n_pred))
    chosen = np.concatenate([free, solved])
    return chosen[np.argsort(rows[chosen], kind="stable")]


def _solve_sparse(overlap: Overlap, scores: np.ndarray, thresh: np.float32, idx: np.ndarray, n_matched: int) -> np.ndarray:
    """Optimal assignment over the pairs ``idx`` (StarDist's costs); the matched pair indices.

    A maximum-weight matching that may leave objects unmatched, as a full matching of a
    padded graph: every true object ``i`` gets a private column ``i'`` and every predicted
    object ``j`` a private row ``j'`` (cost ~0), and each pair ``(i, j)`` a twin edge
    ``(j', i')`` so that the private nodes of two matched objects can pair up. Every full
    matching of it then has cost equal to the sum of its real edges.
    """
    t_ids, r = np.unique(overlap.rows[idx], return_inverse=True)
    p_ids, c = np.unique(overlap.cols[idx], return_inverse=True)
    nt, npr = len(t_ids), len(p_ids)
    s = scores[idx]
    cost = -(s >= thresh).astype(float) - s / (2 * n_matched)  # StarDist's expression, float32 tie-breaker
    ar_t, ar_p = np.arange(nt), np.arange(npr)
    graph = csr_matrix(
        (
            np.concatenate([cost, np.full(nt + npr + len(idx), _PAD)]),
            (np.concatenate([r, ar_t, nt + ar_p, nt + c]), np.concatenate([c, npr + ar_t, ar_p, npr + r])),
        ),
        shape=(nt + npr, npr + nt),
    )
    ri, ci = min_weight_full_bipartite_matching(graph)
    real = (ri < nt) & (ci < npr)
    ri, ci = ri[real], ci[real]
    key = r * npr + c  # position of each pair in idx, by (row, column)
    order = np.argsort(key)
    pos = order[np.searchsorted(key[order], ri * npr + ci)]
    ok = s[pos] >= thresh
    return idx[pos[ok]]


def dense_assign(overlap: Overlap, scores: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """StarDist's full assignment (needed when ``thresh <= 0``: every pair is then a candidate)."""
    from scipy.optimize import linear_sum_assignment  # ~0.3 s to import, and rarely needed

    dense = overlap.dense(scores)
    n_matched = min(overlap.n_true, overlap.n_pred)
    costs = -(dense >= thresh).astype(float) - dense / (2 * n_matched)
    ti, pj = linear_sum_assignment(costs)
    ok = dense[ti, pj] >= thresh
    return ti[ok], pj[ok], dense[ti, pj][ok]

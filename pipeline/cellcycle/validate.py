"""Scores of phase calls and tracks against ground truth.

Phases: accuracy overall and per true phase, and the confusion table.

Tracks: the Cell Tracking Challenge measures (DET, TRA, LNK, branching correctness BC(i))
from py-ctcmetrics (``pip install 'spheroid[validate]'``), plus link and division
precision, recall and F1 from the edge sets. Both trackings must be over the same
detections, identified by ``(t, label)`` (the tracker's labels may be shuffled per
frame: ``node`` columns map them back). The tables are turned into the CTC
representation first: a CTC track is an unbroken run of frames, so a track with a
gap becomes two CTC tracks, the second with the first as its parent (one child: not
a division).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from pipeline.cellcycle.phase import PHASES
from pipeline.errors import require


def phase_scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy overall and per true phase; ``confusion`` rows are true, columns predicted."""
    truth = np.asarray(truth, dtype=object)
    predicted = np.asarray(predicted, dtype=object)
    confusion = pd.crosstab(pd.Series(truth, name="true"), pd.Series(predicted, name="predicted")).reindex(index=list(PHASES), columns=list(PHASES), fill_value=0)
    per = {p: float((predicted[truth == p] == p).mean()) if (truth == p).any() else float("nan") for p in PHASES}
    return {"accuracy": float((truth == predicted).mean()) if truth.size else float("nan"), "per_phase": per, "n": int(truth.size), "confusion": confusion}


def edges(table: pd.DataFrame, node: str = "node") -> set[tuple[int, int]]:
    """Links ``(node of the earlier, node of the later)``: consecutive sightings of a track,
    and each daughter's first sighting from its mother's last."""
    tab = table.sort_values("t")
    last: dict[int, int] = {}
    out = set()
    for n, k, p in zip(tab[node].to_numpy(), tab["track_id"].to_numpy(), tab["parent_track_id"].to_numpy()):
        if k in last:
            out.add((last[k], int(n)))
        elif p > 0 and p in last:
            out.add((last[p], int(n)))
        last[k] = int(n)
    return out


def divisions(links: set[tuple[int, int]]) -> dict[int, frozenset]:
    """Mother node -> its two (or more) daughter nodes."""
    children: dict[int, set] = defaultdict(set)
    for a, b in links:
        children[a].add(b)
    return {a: frozenset(b) for a, b in children.items() if len(b) >= 2}


def _f1(tp: int, n_pred: int, n_true: int) -> dict:
    p = tp / n_pred if n_pred else float("nan")
    r = tp / n_true if n_true else float("nan")
    f = 2 * p * r / (p + r) if n_pred and n_true and (p + r) > 0 else 0.0
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "predicted": n_pred, "true": n_true}


def link_scores(truth: pd.DataFrame, predicted: pd.DataFrame, node: str = "node") -> dict:
    """Link and division precision / recall / F1 over the same nodes.

    A predicted division counts when its mother and both daughters are those of a true one.
    """
    t_links, p_links = edges(truth, node), edges(predicted, node)
    t_div, p_div = divisions(t_links), divisions(p_links)
    good = sum(1 for mother, kids in p_div.items() if t_div.get(mother) == kids)
    return {"link": _f1(len(t_links & p_links), len(p_links), len(t_links)), "division": _f1(good, len(p_div), len(t_div))}


def tracks_from_links(nodes: pd.DataFrame, links, node: str = "node") -> pd.DataFrame:
    """Track ids in the convention of :mod:`pipeline.cellcycle.track` from a graph of links.

    Parameters
    ----------
    nodes : pandas.DataFrame
        One row per detection: ``t`` and ``node`` (a unique id).
    links : iterable of (node, node)
        Earlier -> later detection (a gap may span frames; a mother has two or more).

    Returns
    -------
    pandas.DataFrame
        ``nodes`` with ``track_id`` and ``parent_track_id``: a detection continues its
        predecessor's track when it is that predecessor's only successor; the successors of
        a division start new tracks whose parent is the mother's; a detection without
        predecessor starts a track without parent.

    Raises
    ------
    ValueError
        A detection with two predecessors (a merge: not a lineage).
    """
    pred: dict[int, int] = {}
    n_succ: dict[int, int] = defaultdict(int)
    for a, b in links:
        a, b = int(a), int(b)
        if b in pred and pred[b] != a:
            raise ValueError(f"detection {b} has two predecessors ({pred[b]} and {a}): merges are not lineages")
        pred[b] = a
        n_succ[a] += 1
    tab = nodes.sort_values("t", kind="stable")
    track: dict[int, int] = {}
    parent: dict[int, int] = {}
    next_id = 1
    for n in tab[node].to_numpy().tolist():
        a = pred.get(n)
        if a is not None and a in track and n_succ[a] == 1:
            track[n], parent[n] = track[a], parent[a]
            continue
        track[n], parent[n] = next_id, (track[a] if a is not None and a in track else 0)
        next_id += 1
    out = nodes.copy()
    out["track_id"] = out[node].map(track).astype(np.int64)
    out["parent_track_id"] = out[node].map(parent).astype(np.int64)
    return out


def ctc_representation(table: pd.DataFrame, node: str = "node") -> tuple[np.ndarray, dict[int, int]]:
    """CTC tracks ``(label, birth, end, parent)`` and node -> CTC label.

    Every unbroken run of a track becomes one CTC track; a run after a gap has the run
    before it as parent; a daughter's first run has the mother's last run as parent.
    """
    tab = table.sort_values(["track_id", "t"])
    rows: list[list[int]] = []
    label_of: dict[int, int] = {}
    last_run: dict[int, int] = {}
    first_run: dict[int, int] = {}
    parent_track = dict(zip(tab["track_id"].to_numpy().tolist(), tab["parent_track_id"].to_numpy().tolist()))
    for tid, grp in tab.groupby("track_id", sort=True):
        ts = grp["t"].to_numpy()
        nodes = grp[node].to_numpy()
        breaks = np.flatnonzero(np.diff(ts) > 1) + 1
        prev = 0
        for run_t, run_n in zip(np.split(ts, breaks), np.split(nodes, breaks)):
            label = len(rows) + 1
            rows.append([label, int(run_t[0]), int(run_t[-1]), prev])
            for n in run_n.tolist():
                label_of[int(n)] = label
            if prev == 0:
                first_run[int(tid)] = label
            prev = label
        last_run[int(tid)] = prev
    tracks = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    for tid, label in first_run.items():
        mother = parent_track.get(tid, 0)
        if mother > 0 and mother in last_run and tracks[label - 1, 3] == 0:
            if tracks[last_run[mother] - 1, 2] < tracks[label - 1, 1]:
                tracks[label - 1, 3] = last_run[mother]
    return tracks, label_of


def ctc_scores(truth: pd.DataFrame, predicted: pd.DataFrame, node: str = "node", *, max_i: int = 1) -> dict:
    """DET, TRA, LNK and BC(0..max_i) from py-ctcmetrics, on the same detections.

    Parameters
    ----------
    truth, predicted : pandas.DataFrame
        ``t``, ``node`` (the same set in both), ``track_id``, ``parent_track_id``.
    node : str
        Column identifying a detection in both tables.
    max_i : int
        Largest temporal tolerance of the branching correctness BC(i).
    """
    require("ctc_metrics", "validate")
    from ctc_metrics.scripts.evaluate import calculate_metrics

    ref_tracks, ref_label = ctc_representation(truth, node)
    comp_tracks, comp_label = ctc_representation(predicted, node)
    n_t = int(max(truth["t"].max(), predicted["t"].max())) + 1
    by_t = [[] for _ in range(n_t)]
    for t, n in zip(truth["t"].to_numpy(), truth[node].to_numpy()):
        by_t[int(t)].append(int(n))
    labels_ref, labels_comp, mapped_ref, mapped_comp = [], [], [], []
    for nodes in by_t:
        ref = [ref_label[n] for n in nodes]
        comp = [comp_label[n] for n in nodes if n in comp_label]
        # py-ctcmetrics expects each frame's labels in ascending order (as np.unique gives them)
        labels_ref.append(np.sort(np.asarray(ref, dtype=np.int64)))
        labels_comp.append(np.sort(np.asarray(comp, dtype=np.int64)))
        pairs = [(ref_label[n], comp_label[n]) for n in nodes if n in comp_label]
        mapped_ref.append([a for a, _ in pairs])
        mapped_comp.append([b for _, b in pairs])
    traj = {"labels_ref": labels_ref, "labels_comp": labels_comp, "mapped_ref": mapped_ref, "mapped_comp": mapped_comp}
    metrics = ["DET", "TRA", "LNK", *[f"BC({i})" for i in range(max_i + 1)]]
    result = calculate_metrics(comp_tracks, ref_tracks, traj, {}, metrics, is_valid=1)
    keep = ["DET", "TRA", "LNK", "AOGM", "AOGM_FN", "AOGM_FP", "AOGM_ED", "AOGM_EA", "AOGM_EC", "gt_divisions"]
    keep += [f"BC({i})" for i in range(max_i + 1)]
    return {k: (float(result[k]) if result.get(k) is not None else None) for k in keep}

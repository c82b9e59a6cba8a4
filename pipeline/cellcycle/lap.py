"""laptrack's LAP tracker with its gap-closing candidates found by a k-d tree.

laptrack 0.17 finds, for every track segment, the segments that may continue it after a
gap with one pandas ``apply`` over *all* segments (a row filter, a second ``apply`` and
a ``cdist`` per segment): its time grows with the square of the number of segments, and
at 5,000 nuclei per frame it was most of the tracking time (docs/CELLCYCLE.md, Scale).
:class:`SparseLapTrack` changes only how those candidates are found: one
``scipy.spatial.cKDTree`` query between the segment ends of one frame and the segment
starts of each of the next ``gap_closing_max_frame_count`` frames, for the default
squared-Euclidean metric. The candidates, their costs and the cost matrix they go into
are the same as laptrack's (tested), and the assignment is still laptrack's. Other
metrics or parallel backends fall back to laptrack's own code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import networkx as nx
from laptrack import LapTrack, ParallelBackend
from laptrack._coo_matrix_builder import coo_matrix_builder
from laptrack._cost_matrix import build_frame_cost_matrix
from laptrack._optimization import lap_optimization
from laptrack.utils import _coord_is_empty
from scipy.spatial import cKDTree


def _nodes_mask(frames: np.ndarray, indices: np.ndarray, nodes) -> np.ndarray:
    """Which ``(frame, index)`` pairs are in ``nodes``."""
    wanted = {(int(f), int(i)) for f, i in nodes}
    if not wanted:
        return np.zeros(len(frames), dtype=bool)
    return np.fromiter(((int(f), int(i)) in wanted for f, i in zip(frames, indices)), dtype=bool, count=len(frames))


def _close_pairs(a: np.ndarray, b: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``a`` and ``b`` closer than ``cutoff`` in squared distance, sorted by (row, col), and their squared distances."""
    if not len(a) or not len(b):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    pairs = cKDTree(a).sparse_distance_matrix(cKDTree(b), float(np.sqrt(cutoff)) * (1 + 1e-9), output_type="coo_matrix")
    r, c = pairs.row.astype(np.int64), pairs.col.astype(np.int64)
    d = np.sum((a[r] - b[c]) ** 2, axis=1)
    keep = d < cutoff
    r, c, d = r[keep], c[keep], d[keep]
    order = np.lexsort((c, r))
    return r[order], c[order], d[order]


class SparseLapTrack(LapTrack):
    """:class:`laptrack.LapTrack` whose frame-to-frame and gap-closing candidates come from a k-d tree (see the module)."""

    def _predict_links(self, coords, segment_connected_edges, split_merge_edges) -> nx.Graph:
        fast = self.metric == "sqeuclidean" and self.parallel_backend == ParallelBackend.serial
        if not fast:
            return super()._predict_links(coords, segment_connected_edges, split_merge_edges)
        track_tree = nx.Graph()
        for frame, coord in enumerate(coords):
            if not _coord_is_empty(coord):
                track_tree.add_nodes_from((frame, j) for j in range(coord.shape[0]))
        edges_list = list(segment_connected_edges) + list(split_merge_edges)
        ends: dict[int, list[int]] = {}
        starts: dict[int, list[int]] = {}
        for a, b in edges_list:
            ends.setdefault(int(a[0]), []).append(int(a[1]))
            starts.setdefault(int(b[0]), []).append(int(b[1]))
        all_edges = []
        for frame, (coord1, coord2) in enumerate(zip(coords[:-1], coords[1:])):
            if _coord_is_empty(coord1) or _coord_is_empty(coord2):
                continue
            c1, c2 = np.asarray(coord1, dtype=np.float64), np.asarray(coord2, dtype=np.float64)
            r, c, d = _close_pairs(c1, c2, float(self.cutoff))
            keep = ~np.isin(r, ends.get(frame, [])) & ~np.isin(c, starts.get(frame + 1, []))
            dist_matrix = coo_matrix_builder((len(c1), len(c2)), row=r[keep], col=c[keep], data=d[keep], dtype=np.float64)
            cost_matrix = build_frame_cost_matrix(dist_matrix, track_start_cost=self.track_start_cost, track_end_cost=self.track_end_cost)
            xs, _ = lap_optimization(cost_matrix)
            count1, count2 = dist_matrix.shape
            all_edges.extend(((frame, int(i)), (frame + 1, int(xs[i]))) for i in range(count1) if xs[i] < count2)
        track_tree.add_edges_from(all_edges)
        track_tree.add_edges_from(segment_connected_edges)
        return track_tree

    def _get_gap_closing_matrix(self, segments_df, *, force_end_nodes=[], force_start_nodes=[]):  # noqa: B006 - laptrack's signature
        fast = self.gap_closing_cutoff and self.gap_closing_metric == "sqeuclidean" and self.parallel_backend == ParallelBackend.serial
        if not fast:
            return super()._get_gap_closing_matrix(segments_df, force_end_nodes=force_end_nodes, force_start_nodes=force_start_nodes)
        n = len(segments_df)
        cutoff = float(self.gap_closing_cutoff)
        last_frame = segments_df["last_frame"].to_numpy(dtype=np.int64)
        first_frame = segments_df["first_frame"].to_numpy(dtype=np.int64)
        index = segments_df.index.to_numpy()
        if n:
            last_xyz = np.stack(segments_df["last_frame_coords"].to_numpy()).astype(np.float64)
            first_xyz = np.stack(segments_df["first_frame_coords"].to_numpy()).astype(np.float64)
        can_end = ~_nodes_mask(last_frame, segments_df["last_index"].to_numpy(), force_end_nodes)
        can_start = ~_nodes_mask(first_frame, segments_df["first_index"].to_numpy(), force_start_nodes)
        starts = {int(f): np.flatnonzero(can_start & (first_frame == f)) for f in np.unique(first_frame[can_start])} if n else {}
        trees = {f: cKDTree(first_xyz[idx]) for f, idx in starts.items()}
        radius = float(np.sqrt(cutoff)) * (1 + 1e-9)
        rows, cols, costs = [], [], []
        for f in np.unique(last_frame[can_end]) if n else []:
            ends = np.flatnonzero(can_end & (last_frame == f))
            tree = cKDTree(last_xyz[ends])
            for gap in range(1, int(self.gap_closing_max_frame_count) + 1):
                other = int(f) + gap
                if other not in trees:
                    continue
                pairs = tree.sparse_distance_matrix(trees[other], radius, output_type="coo_matrix")
                r, c = ends[pairs.row], starts[other][pairs.col]
                d = np.sum((last_xyz[r] - first_xyz[c]) ** 2, axis=1)
                keep = d < cutoff
                rows.append(r[keep])
                cols.append(c[keep])
                costs.append(d[keep])
        row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        cost = np.concatenate(costs) if costs else np.zeros(0)
        order = np.lexsort((col, row))  # laptrack's order: by segment, candidates in segment order
        row, col, cost = row[order], col[order], cost[order]
        bounds = np.searchsorted(row, np.arange(n + 1))
        segments_df["gap_closing_candidates"] = pd.Series(
            [(index[col[bounds[i] : bounds[i + 1]]], cost[bounds[i] : bounds[i + 1]]) for i in range(n)], index=segments_df.index, dtype=object
        )
        matrix = coo_matrix_builder((n, n), dtype=np.float32)
        matrix[(index[row], index[col])] = cost
        return segments_df, matrix

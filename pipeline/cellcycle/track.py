"""Link nuclei over time: laptrack's LAP tracker over a sliding window of frames.

Linking is laptrack's (Jaqaman et al. 2008, as in TrackMate): a linear assignment from
each frame to the next on squared distances in um, then one more assignment over the
track segments that closes gaps (a nucleus missed for up to ``gap_frames - 1``
frames) and attaches daughters to their mother (divisions). Nothing here solves an
assignment itself.

Memory stays flat in the number of time points: frames arrive one at a time
(:func:`track_frames` takes an iterator), and laptrack sees ``window`` frames at once.
A window's links are committed up to ``gap_frames + 1`` frames before its end (so every
committed decision saw that much of the future), the next window starts ``gap_frames``
frames before the committed end, and the committed links that fall inside it are handed
to laptrack as fixed (``connected_edges``), so the tracks continue across windows.

Track ids follow the Cell Tracking Challenge convention: a track is an unbranched run
of one nucleus (gaps included); a division ends the mother's track and starts two
daughter tracks whose ``parent_track_id`` is the mother's track; 0 means no parent.

FUCCI check (``division_phase_check``): a mother divides at the end of S/G2/M, green.
When the frames carry a ``phase``, a division whose mother was last seen in early G1
or G1 (or flagged dead) is undone: the daughter farther from the mother starts a
track of its own and the nearer one continues the mother's track.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from pipeline.config.cellcycle import TrackConfig

LOG = logging.getLogger(__name__)

COORDS = ("centroid_z", "centroid_y", "centroid_x")
DIVIDING_PHASES = ("S/G2/M", "G1/S")
"""Phases a mother may be in when last seen before dividing."""

Node = tuple[int, int]
"""``(t, label)``."""


@dataclass
class _Frame:
    t: int
    labels: np.ndarray
    coords: np.ndarray
    phase: np.ndarray | None
    dead: np.ndarray | None


def _as_frame(table: pd.DataFrame) -> _Frame:
    ts = np.unique(table["t"].to_numpy()) if len(table) else np.array([])
    if ts.size > 1:
        raise ValueError(f"a frame holds one time point; got t = {ts.tolist()}")
    t = int(ts[0]) if ts.size else int(table.attrs.get("t", -1))
    return _Frame(
        t,
        table["label"].to_numpy(dtype=np.int64),
        table[list(COORDS)].to_numpy(dtype=np.float64),
        table["phase"].to_numpy() if "phase" in table else None,
        table["dead"].to_numpy(dtype=bool) if "dead" in table else None,
    )


def make_tracker(config: TrackConfig):
    """The :class:`laptrack.LapTrack` the settings describe (its gap-closing candidates found
    by a k-d tree: :class:`pipeline.cellcycle.lap.SparseLapTrack`, the same links)."""
    from pipeline.cellcycle.lap import SparseLapTrack

    gap = config.gap_distance_um or config.max_distance_um
    return SparseLapTrack(
        cutoff=config.max_distance_um**2,
        gap_closing_cutoff=gap**2 if config.gap_frames > 0 else False,
        gap_closing_max_frame_count=max(1, config.gap_frames),
        splitting_cutoff=config.division_distance_um**2 if config.divisions else False,
    )


def _link_window(tracker, frames: list[_Frame], fixed: list[tuple[Node, Node]]) -> list[tuple[Node, Node]]:
    """laptrack over consecutive ``frames``; edges as ``((t, label), (t, label))``."""
    coords = [f.coords if len(f.labels) else np.zeros((0, 3)) for f in frames]
    t0 = frames[0].t
    index = [{int(lab): i for i, lab in enumerate(f.labels)} for f in frames]
    connected = [((a[0] - t0, index[a[0] - t0][a[1]]), (b[0] - t0, index[b[0] - t0][b[1]])) for a, b in fixed]
    tree = tracker.predict(coords, connected_edges=connected or None)
    out = []
    for (fa, ia), (fb, ib) in tree.edges():
        out.append(((t0 + fa, int(frames[fa].labels[ia])), (t0 + fb, int(frames[fb].labels[ib]))))
    return out


def _link_maybe_tiled(tracker, frames: list[_Frame], fixed: list[tuple[Node, Node]], config: TrackConfig) -> list[tuple[Node, Node]]:
    """:func:`_link_window`, in y/x tiles when the frames hold many nuclei (``config.tile_nuclei``)."""
    from pipeline.cellcycle.tiles import link_tiled

    n = float(np.mean([len(f.labels) for f in frames])) if frames else 0.0
    if config.tile_nuclei is None or n <= 2 * config.tile_nuclei:
        return _link_window(tracker, frames, fixed)
    coords = np.concatenate([f.coords for f in frames if len(f.labels)])
    extent = np.maximum(np.ptp(coords[:, 1:], axis=0), 1.0)
    tile_um = float(np.sqrt(extent[0] * extent[1] * config.tile_nuclei / n))
    reach = max(config.max_distance_um, config.division_distance_um, config.gap_distance_um or 0.0)
    link = lambda sub, sub_fixed: _link_window(tracker, sub, sub_fixed)  # noqa: E731
    return link_tiled(link, frames, fixed, tile_um=tile_um, margin_um=config.tile_margin * reach)


def _check_divisions(edges: list[tuple[Node, Node]], frames: dict[int, _Frame]) -> list[tuple[Node, Node]]:
    """Undo divisions whose mother was not last seen in a dividing phase (see the module)."""
    children: dict[Node, list[Node]] = defaultdict(list)
    for a, b in edges:
        children[a].append(b)
    drop = set()
    for mother, kids in children.items():
        if len(kids) < 2:
            continue
        frame = frames[mother[0]]
        i = int(np.flatnonzero(frame.labels == mother[1])[0])
        dead = bool(frame.dead[i]) if frame.dead is not None else False
        if frame.phase is not None and (str(frame.phase[i]) not in DIVIDING_PHASES or dead):
            pos = frame.coords[i]

            def dist(node: Node) -> float:
                f = frames[node[0]]
                return float(np.sum((f.coords[int(np.flatnonzero(f.labels == node[1])[0])] - pos) ** 2))

            far = sorted(kids, key=dist)[1:]
            drop.update((mother, k) for k in far)
    return [e for e in edges if e not in drop]


def track_frames(frames: Iterable[pd.DataFrame], config: TrackConfig | None = None) -> Iterator[pd.DataFrame]:
    """Track nuclei frame by frame; yield each frame's ids as soon as they are final.

    Parameters
    ----------
    frames : iterable of pandas.DataFrame
        One table per time point, in time order, with ``t``, ``label`` and
        ``centroid_z/y/x`` in um (2-D data: ``centroid_z`` 0); optionally ``phase`` and
        ``dead`` (for ``division_phase_check``). Time points need not be consecutive
        integers, but each frame is one time point.
    config : TrackConfig, optional
        Tracking settings.

    Yields
    ------
    pandas.DataFrame
        Per frame, in order: ``t, label, track_id, parent_track_id`` (int64).
    """
    config = config or TrackConfig()
    tracker = make_tracker(config)
    gap = max(1, config.gap_frames)
    window = max(config.window, 2 * gap + 4)
    buffer: list[_Frame] = []
    committed: list[tuple[Node, Node]] = []
    parent_of: dict[Node, Node] = {}
    n_children: dict[Node, int] = defaultdict(int)
    ids: dict[Node, tuple[int, int]] = {}
    state = {"next": 1, "committed_upto": -1, "emitted": 0}

    def commit(new_edges, upto_index):
        """Keep the edges whose later node lies in (committed_upto, upto_index] (buffer positions)."""
        lo = state["committed_upto"]
        by_t = {f.t: i for i, f in enumerate(buffer)}
        for a, b in new_edges:
            if lo < by_t[b[0]] <= upto_index and b not in parent_of:
                committed.append((a, b))
                parent_of[b] = a
                n_children[a] += 1
        state["committed_upto"] = upto_index

    def emit(upto_index) -> Iterator[pd.DataFrame]:
        """Assign ids to buffer frames up to ``upto_index`` not yet emitted, and yield them."""
        for i in range(state["emitted"], upto_index + 1):
            f = buffer[i]
            track = np.zeros(len(f.labels), dtype=np.int64)
            parent = np.zeros(len(f.labels), dtype=np.int64)
            for j, lab in enumerate(f.labels.tolist()):
                node = (f.t, lab)
                mother = parent_of.get(node)
                if mother is None:
                    tid, pid = state["next"], 0
                    state["next"] += 1
                elif n_children[mother] == 1:
                    tid, pid = ids[mother]
                else:
                    tid, pid = state["next"], ids[mother][0]
                    state["next"] += 1
                ids[node] = (tid, pid)
                track[j], parent[j] = tid, pid
            state["emitted"] = i + 1
            yield pd.DataFrame({"t": np.full(len(f.labels), f.t, dtype=np.int64), "label": f.labels, "track_id": track, "parent_track_id": parent})

    def run_window(final: bool) -> Iterator[pd.DataFrame]:
        fixed = [(a, b) for a, b in committed if a[0] >= buffer[0].t]
        edges = _link_maybe_tiled(tracker, buffer, fixed, config)
        if config.division_phase_check:
            edges = _check_divisions(edges, {f.t: f for f in buffer})
        upto = len(buffer) - 1 if final else len(buffer) - 1 - (gap + 1)
        commit(edges, upto)
        # a frame's ids are final once every sibling of its nodes is committed
        yield from emit(len(buffer) - 1 if final else upto - gap)

    def trim():
        """Drop frames before the next window's start (``gap`` frames before the committed end)."""
        keep_from = max(0, state["committed_upto"] - gap)
        keep_from = min(keep_from, state["emitted"])
        if keep_from <= 0:
            return
        t_first = buffer[keep_from].t
        # ids and parent links are needed only for nodes that may still gain children
        t_keep = buffer[max(0, keep_from - gap - 1)].t
        del buffer[:keep_from]
        state["committed_upto"] -= keep_from
        state["emitted"] -= keep_from
        committed[:] = [(a, b) for a, b in committed if a[0] >= t_first]
        for d in (parent_of, ids):
            for node in [n for n in d if n[0] < t_keep]:
                del d[node]
        for node in [n for n in n_children if n[0] < t_keep]:
            del n_children[node]

    for table in frames:
        frame = _as_frame(table)
        if buffer and frame.t <= buffer[-1].t:
            raise ValueError(f"frames must come in increasing time order (t={frame.t} after t={buffer[-1].t})")
        buffer.append(frame)
        if len(buffer) >= window:
            yield from run_window(final=False)
            trim()
    if buffer:
        if len(buffer) >= 2:
            yield from run_window(final=True)
        else:
            yield from emit(len(buffer) - 1)


def track_table(table: pd.DataFrame, config: TrackConfig | None = None) -> pd.DataFrame:
    """Track a whole table of nuclei (all time points) at once; see :func:`track_frames`.

    Returns
    -------
    pandas.DataFrame
        ``table`` with ``track_id`` and ``parent_track_id`` set, in ``t, label`` order; with
        ``phase_track`` and ``confidence_track`` too when the table has the reporters'
        probabilities (``p_red``, ``p_green``) and smoothing is enabled
        (:func:`pipeline.cellcycle.smooth.smooth_tracks`).
    """
    config = config or TrackConfig()
    table = table.sort_values(["t", "label"]).reset_index(drop=True)
    frames = (g for _, g in table.groupby("t", sort=True))
    ids = pd.concat(list(track_frames(frames, config)), ignore_index=True)
    out = table.drop(columns=[c for c in ("track_id", "parent_track_id") if c in table])
    out = out.merge(ids, on=["t", "label"], how="left", validate="one_to_one")
    return smooth_if_possible(out, config)


def smooth_if_possible(table: pd.DataFrame, config: TrackConfig) -> pd.DataFrame:
    """``table`` with ``phase_track`` / ``confidence_track`` when it has what the HMM needs."""
    from pipeline.cellcycle.smooth import PROBABILITY_COLUMNS, smooth_tracks

    if config.smoothing.enabled and all(c in table for c in (*PROBABILITY_COLUMNS, "phase")):
        return smooth_tracks(table, config.smoothing)
    return table

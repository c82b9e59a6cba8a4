"""Per track: its phase sequence and the time spent in each phase; phase fractions.

A track (see :mod:`pipeline.cellcycle.track`) is one nucleus between its birth (or
first sighting) and its division (or last sighting). Its phase sequence is the run-
length encoding of its per-frame calls (``G1 x5 > G1/S x2 > S/G2/M x9``). Time in a
phase is the number of frames called that phase times the frame interval; a track
seen from birth to division (``complete``) gives a full cycle, the others only bounds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.cellcycle.phase import PHASES

DURATION_COLUMNS = tuple(f"hours_{p}" for p in PHASES)


def _runs(phases: list[str]) -> str:
    out: list[list] = []
    for p in phases:
        if out and out[-1][0] == p:
            out[-1][1] += 1
        else:
            out.append([p, 1])
    return " > ".join(f"{p} x{n}" for p, n in out)


def track_summary(table: pd.DataFrame, *, time_step_s: float = 1800.0, n_timepoints: int | None = None, phase: str = "phase") -> pd.DataFrame:
    """One row per track.

    Parameters
    ----------
    table : pandas.DataFrame
        Nuclei with ``t``, ``track_id``, ``parent_track_id``, ``phase`` (and ``dead``).
    time_step_s : float
        Seconds between time points.
    n_timepoints : int, optional
        Number of time points of the series (a track seen at its last one may go on).
    phase : str
        Column of the phase calls: ``phase`` (single frame) or ``phase_track`` (decoded
        along the track, :mod:`pipeline.cellcycle.smooth`).

    Returns
    -------
    pandas.DataFrame
        ``track_id, parent_track_id, t_start, t_end, frames, divides, complete,
        phase_sequence``, the hours called in each phase (``hours_G1``...), ``hours_total``
        and ``dead_frames``.
    """
    if not len(table):
        return pd.DataFrame(columns=["track_id", "parent_track_id", "t_start", "t_end", "frames", "divides", "complete", "phase_sequence", *DURATION_COLUMNS, "hours_total", "dead_frames"])
    tab = table.sort_values(["track_id", "t"])
    hours = float(time_step_s) / 3600.0
    last_t = int(tab["t"].max()) if n_timepoints is None else int(n_timepoints) - 1
    first_t = int(tab["t"].min())
    parents = set(tab.loc[tab["parent_track_id"] > 0, "parent_track_id"].unique().tolist())
    grouped = tab.groupby("track_id", sort=True)
    out = grouped.agg(parent_track_id=("parent_track_id", "first"), t_start=("t", "min"), t_end=("t", "max"), frames=("t", "size"))
    out["divides"] = out.index.isin(parents)
    out["complete"] = (out["parent_track_id"] > 0) & out["divides"] & (out["t_start"] > first_t) & (out["t_end"] < last_t)
    out["phase_sequence"] = grouped[phase].agg(lambda s: _runs(s.astype(str).tolist()))
    counts = pd.crosstab(tab["track_id"], tab[phase]).reindex(columns=list(PHASES), fill_value=0)
    for p, col in zip(PHASES, DURATION_COLUMNS):
        out[col] = counts[p].reindex(out.index, fill_value=0).to_numpy() * hours
    out["hours_total"] = (out["t_end"] - out["t_start"] + 1) * hours
    out["dead_frames"] = grouped["dead"].sum().astype(np.int64) if "dead" in tab else 0
    return out.reset_index()


def phase_fractions(table: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Fraction of live nuclei in each phase (dead nuclei counted apart in ``dead``).

    Parameters
    ----------
    table : pandas.DataFrame
        Nuclei with ``phase`` (and ``dead``).
    by : list of str, optional
        Columns to group by (e.g. ``["t"]``); one row overall when omitted.

    Returns
    -------
    pandas.DataFrame
        ``by`` columns, ``live``, ``dead`` and one fraction column per phase.
    """
    tab = table.copy()
    dead = tab["dead"].to_numpy(dtype=bool) if "dead" in tab else np.zeros(len(tab), dtype=bool)
    tab["_dead"] = dead
    keys = list(by or [])
    if not keys:
        tab["_all"] = 0
        keys = ["_all"]
    live = tab[~tab["_dead"]]
    counts = pd.crosstab([live[k] for k in keys], live["phase"]).reindex(columns=list(PHASES), fill_value=0)
    n_live = counts.sum(axis=1)
    fractions = counts.div(n_live.replace(0, np.nan), axis=0).fillna(0.0)
    n_dead = tab.groupby(keys)["_dead"].sum()
    out = fractions.assign(live=n_live, dead=n_dead.reindex(fractions.index, fill_value=0)).reset_index()
    return out.drop(columns=["_all"], errors="ignore")

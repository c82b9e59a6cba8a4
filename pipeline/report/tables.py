"""The report's tables: per well over time, by depth below the rim, per track.

Everything is computed from the per-field nucleus tables (``tables/nuclei.parquet``:
``t``, ``label``, centroid in um, ``phase``, ``dead``) and track tables; no image is read.

Spheroid geometry per field and time point, from the nucleus centres (um):

* volume: of their convex hull (scipy's Qhull) inside the imaged stack;
* radius: of the disc with the area of their hull seen from above (y/x);
* depth of a nucleus below the rim: its distance to the nearest face of the 3-D hull,
  leaving out hull faces that lie on faces of the stack that cut through the spheroid
  (``report.depth.cut_faces``; by default the top of the stack: an inverted microscope
  images a spheroid from below, and the stack ends inside it).

Fractions: phase fractions are of the live nuclei; the dead fraction is of all nuclei.
Within a well, fields are pooled (counts added; geometry averaged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.report import DepthConfig, ReportConfig, TimePoint

LOG = logging.getLogger(__name__)

PHASES = ("early-G1", "G1", "G1/S", "S/G2/M")
"""FUCCI phases as ``spheroid cellcycle`` calls them."""
CATEGORIES = (*PHASES, "dead")
"""Rows of the long tables: the four phases (fractions of live nuclei) and ``dead`` (of all)."""
LAYOUT_COLUMNS = ("condition", "drug", "dose", "unit", "control", "replicate")
AXES = {"z": 0, "y": 1, "x": 2}
CUT_NORMAL = 0.2
"""A hull face lies on a cut face of the stack when all its corners are near that face and its
outward normal points out through it (a component above this along the face's normal): the
flat cap where the stack cuts the spheroid, and the thin faces joining it to the true surface."""


@dataclass
class FieldData:
    """One field's nuclei, tracks and image geometry."""

    well: str
    field: str
    nuclei: pd.DataFrame
    tracks: pd.DataFrame | None
    extent_um: tuple[float, float, float]
    """Position of the last voxel centre along z, y, x (um; the first is at 0)."""
    time_step_s: float
    n_timepoints: int


def time_index(point: TimePoint, n_timepoints: int) -> int:
    """A configured time point as a 0-based index (``first``, ``last``, or an index, clipped)."""
    if point == "first":
        return 0
    if point == "last":
        return n_timepoints - 1
    return int(min(max(int(point), 0), n_timepoints - 1))


# -- geometry ------------------------------------------------------------------------------

def hull_geometry(points: np.ndarray, extent_um: tuple[float, float, float], depth: DepthConfig) -> tuple[float, float, np.ndarray]:
    """Volume (um^3), radius (um) and per-point depth below the rim of one spheroid.

    Parameters
    ----------
    points : numpy.ndarray
        ``(N, 3)`` nucleus centres, ``(z, y, x)`` um.
    extent_um : tuple of float
        The stack's last voxel centre along z, y, x (um).
    depth : DepthConfig
        Which stack faces cut the spheroid.

    Returns
    -------
    volume, radius : float
        NaN when the points span no volume (fewer than 4, or flat).
    depth : numpy.ndarray
        ``(N,)`` distance to the nearest hull face not on a cut face (NaN when none is left).
    """
    from scipy.spatial import ConvexHull, QhullError

    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    n = len(points)
    nan = np.full(n, np.nan)
    if n < 5:
        return float("nan"), float("nan"), nan
    try:
        hull = ConvexHull(points)
        top = ConvexHull(points[:, 1:])
    except (QhullError, ValueError):
        return float("nan"), float("nan"), nan
    radius = float(np.sqrt(top.volume / np.pi))  # a 2-D hull's "volume" is its area
    normals, offsets = hull.equations[:, :3], hull.equations[:, 3]
    keep = np.ones(len(normals), dtype=bool)
    corners = points[hull.simplices]  # (faces, 3, 3)
    for face in depth.cut_faces:
        axis = AXES[face[0]] if face not in ("top", "bottom") else 0
        high = face in ("top", "y+", "x+")
        coord = corners[:, :, axis]
        if high:
            on_face = (normals[:, axis] > CUT_NORMAL) & np.all(coord >= extent_um[axis] - depth.cut_margin_um, axis=1)
        else:
            on_face = (normals[:, axis] < -CUT_NORMAL) & np.all(coord <= depth.cut_margin_um, axis=1)
        keep &= ~on_face
    if not keep.any():
        return float(hull.volume), radius, nan
    distance = -(points @ normals[keep].T + offsets[keep])  # >= 0 inside
    return float(hull.volume), radius, np.maximum(distance.min(axis=1), 0.0)


def add_depth(data: FieldData, depth: DepthConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The field's nuclei with ``depth_um``, and its geometry per time point.

    Returns
    -------
    nuclei : pandas.DataFrame
        The nucleus table with ``depth_um``.
    geometry : pandas.DataFrame
        ``t, spheroid_volume_um3, spheroid_radius_um``.
    """
    nuclei = data.nuclei.copy()
    nuclei["depth_um"] = np.nan
    rows = []
    for t, frame in nuclei.groupby("t", sort=True):
        pts = frame[["centroid_z", "centroid_y", "centroid_x"]].to_numpy()
        volume, radius, d = hull_geometry(pts, data.extent_um, depth)
        nuclei.loc[frame.index, "depth_um"] = d
        rows.append({"t": int(t), "spheroid_volume_um3": volume, "spheroid_radius_um": radius})
    geometry = pd.DataFrame(rows, columns=["t", "spheroid_volume_um3", "spheroid_radius_um"])
    return nuclei, geometry


# -- per well --------------------------------------------------------------------------------

def _counts(nuclei: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Counts per ``keys``: ``nuclei``, ``dead``, ``live`` and one column per phase (live only)."""
    dead = nuclei["dead"].astype(bool) if "dead" in nuclei else pd.Series(False, index=nuclei.index)
    live = nuclei[~dead]
    phase = pd.crosstab([live[k] for k in keys], live["phase"]).reindex(columns=list(PHASES), fill_value=0) if len(live) else None
    total = nuclei.groupby(keys).size().rename("nuclei")
    out = pd.DataFrame(total)
    out["dead"] = dead.groupby([nuclei[k] for k in keys]).sum().reindex(out.index, fill_value=0).astype(np.int64)
    out["live"] = out["nuclei"] - out["dead"]
    for p in PHASES:
        out[p] = phase[p].reindex(out.index, fill_value=0).astype(np.int64) if phase is not None else 0
    return out.reset_index()


def well_timecourse(fields: list[FieldData], layout: dict[str, dict[str, Any]], depth: DepthConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per well and time point: counts, fractions and geometry; and every nucleus with its depth.

    Returns
    -------
    wells : pandas.DataFrame
        One row per well and time point: layout columns, ``t``, ``time_h``, ``nuclei``,
        ``live``, ``dead``, counts per phase, ``fraction_<phase>``, ``fraction_dead``,
        ``growth`` (nuclei over the well's first time point), spheroid volume and radius.
    nuclei : pandas.DataFrame
        All nuclei with ``well``, ``field`` and ``depth_um``.
    """
    counts, geometry, all_nuclei = [], [], []
    for data in fields:
        nuclei, geom = add_depth(data, depth)
        nuclei.insert(0, "well", data.well)
        nuclei.insert(1, "field", data.field)
        all_nuclei.append(nuclei)
        counts.append(_counts(nuclei, ["t"]).assign(well=data.well))
        geometry.append(geom.assign(well=data.well, time_h=geom["t"] * data.time_step_s / 3600.0))
    if not counts:
        raise ValueError("no nuclei tables to report on")
    count = pd.concat(counts, ignore_index=True).groupby(["well", "t"], as_index=False).sum(numeric_only=True)
    geom = pd.concat(geometry, ignore_index=True).groupby(["well", "t"], as_index=False).mean(numeric_only=True)
    wells = count.merge(geom, on=["well", "t"], how="left")
    for p in PHASES:
        wells[f"fraction_{p}"] = wells[p] / wells["live"].where(wells["live"] > 0)
    wells["fraction_dead"] = wells["dead"] / wells["nuclei"].where(wells["nuclei"] > 0)
    first = wells.sort_values("t").groupby("well")["nuclei"].transform("first")
    wells["growth"] = wells["nuclei"] / first.where(first > 0)
    wells = _with_layout(wells, layout)
    order = ["well", *LAYOUT_COLUMNS, "t", "time_h", "nuclei", "live", "dead", *PHASES,
             *[f"fraction_{p}" for p in PHASES], "fraction_dead", "growth", "spheroid_volume_um3", "spheroid_radius_um"]
    return wells[order].sort_values(["well", "t"]).reset_index(drop=True), pd.concat(all_nuclei, ignore_index=True)


def _with_layout(table: pd.DataFrame, layout: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = pd.DataFrame([{"well": w, **v} for w, v in layout.items()], columns=["well", *LAYOUT_COLUMNS])
    out = table.merge(rows, on="well", how="left")
    missing = out["condition"].isna()
    out.loc[missing, "condition"] = out.loc[missing, "well"]
    out["control"] = out["control"].astype("boolean").fillna(False).astype(bool)
    out["dose"] = pd.to_numeric(out["dose"], errors="coerce")
    out["replicate"] = pd.to_numeric(out["replicate"], errors="coerce").astype("Int64")
    return out


def long_timecourse(wells: pd.DataFrame) -> pd.DataFrame:
    """One row per well x time point x category (the four phases and ``dead``).

    ``count`` and ``fraction`` (of live nuclei for a phase, of all nuclei for ``dead``),
    beside the well's ``nuclei``, ``growth``, spheroid volume and radius.
    """
    keep = ["well", *LAYOUT_COLUMNS, "t", "time_h", "nuclei", "live", "growth", "spheroid_volume_um3", "spheroid_radius_um"]
    parts = []
    for cat in CATEGORIES:
        part = wells[keep].copy()
        part.insert(part.columns.get_loc("time_h") + 1, "phase", cat)
        part.insert(part.columns.get_loc("phase") + 1, "count", wells[cat].to_numpy())
        part.insert(part.columns.get_loc("count") + 1, "fraction", wells[f"fraction_{cat}"].to_numpy())
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["phase"] = pd.Categorical(out["phase"], categories=list(CATEGORIES))
    return out.sort_values(["well", "t", "phase"]).reset_index(drop=True).astype({"phase": str})


def depth_table(nuclei: pd.DataFrame, wells: pd.DataFrame, depth: DepthConfig) -> pd.DataFrame:
    """Phase fractions by depth class below the rim: one row per well x time x class x category."""
    edges = list(depth.bins_um) + [np.inf]
    names = [f"{a:g}-{b:g}" if np.isfinite(b) else f">{a:g}" for a, b in zip(edges[:-1], edges[1:])]
    tab = nuclei.dropna(subset=["depth_um"]).copy()
    tab["depth_class"] = pd.cut(tab["depth_um"], edges, right=False, labels=names).astype(str)
    counts = _counts(tab, ["well", "t", "depth_class"])
    rows = []
    for cat in CATEGORIES:
        denominator = counts["nuclei"] if cat == "dead" else counts["live"]
        rows.append(counts[["well", "t", "depth_class", "nuclei"]].assign(
            phase=cat, count=counts[cat], fraction=counts[cat] / denominator.where(denominator > 0)))
    out = pd.concat(rows, ignore_index=True)
    layout = wells.drop_duplicates("well").set_index("well")[list(LAYOUT_COLUMNS)]
    out = out.join(layout, on="well")
    out["depth_from_um"] = out["depth_class"].map(dict(zip(names, edges[:-1])))
    out = out.sort_values(["well", "t", "depth_from_um", "phase"])
    return out[["well", *LAYOUT_COLUMNS, "t", "depth_class", "depth_from_um", "nuclei", "phase", "count", "fraction"]].reset_index(drop=True)


def track_table(fields: list[FieldData], wells: pd.DataFrame) -> pd.DataFrame:
    """Every track of every field with its well's layout: phase sequence and hours per phase."""
    parts = [f.tracks.assign(well=f.well, field=f.field) for f in fields if f.tracks is not None and len(f.tracks)]
    if not parts:
        return pd.DataFrame(columns=["well", "field", *LAYOUT_COLUMNS, "track_id"])
    tracks = pd.concat(parts, ignore_index=True)
    layout = wells.drop_duplicates("well").set_index("well")[list(LAYOUT_COLUMNS)]
    tracks = tracks.join(layout, on="well")
    first = ["well", "field", *LAYOUT_COLUMNS]
    return tracks[first + [c for c in tracks.columns if c not in first]]


def duration_summary(tracks: pd.DataFrame) -> pd.DataFrame:
    """Per condition and phase: median and quartiles of the hours in the phase, over the
    complete tracks (seen from birth to division); ``n_tracks`` of them."""
    cols = [f"hours_{p}" for p in PHASES]
    if not len(tracks) or "complete" not in tracks:
        return pd.DataFrame(columns=["condition", "phase", "n_tracks", "median_h", "q25_h", "q75_h"])
    done = tracks[tracks["complete"].astype(bool)]
    rows = []
    for condition, group in tracks.groupby("condition", sort=True):
        full = done[done["condition"] == condition]
        for p, col in zip(PHASES, cols):
            values = full[col].to_numpy(dtype=float)
            rows.append({
                "condition": condition, "phase": p, "n_tracks": int(len(values)),
                "median_h": float(np.median(values)) if len(values) else np.nan,
                "q25_h": float(np.percentile(values, 25)) if len(values) else np.nan,
                "q75_h": float(np.percentile(values, 75)) if len(values) else np.nan,
            })
    return pd.DataFrame(rows)


def resolve_times(config: ReportConfig, n_timepoints: int) -> dict[str, int]:
    """The configured time points as indices."""
    dr = config.dose_response
    return {
        "g1": time_index(dr.g1_time, n_timepoints),
        "growth_from": time_index(dr.growth_from, n_timepoints),
        "growth_to": time_index(dr.growth_to, n_timepoints),
        "depth": time_index(config.depth_time, n_timepoints),
        "thumbnail": time_index(config.thumbnail_time, n_timepoints),
    }

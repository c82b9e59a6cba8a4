"""Read-outs per well, and conditions against the controls with their replicate spread.

The two read-outs of a well (also the dose-response's):

* ``g1_fraction``: fraction of its live nuclei called G1 at ``dose_response.g1_time``;
* ``growth``: its nuclei at ``growth_to`` over its nuclei at ``growth_from``.

Against the controls (the wells marked ``control``, pooled): per condition and time point
the change in G1 fraction (condition minus the controls' mean) and the growth relative to
the controls' mean growth, each as the mean over the condition's replicate wells with their
standard deviation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.report.tables import LAYOUT_COLUMNS

READOUTS = {"g1_fraction": "G1 fraction", "growth": "growth (nuclei ratio)"}
"""Read-out name -> axis label."""


def well_readouts(wells: pd.DataFrame, times: dict[str, int]) -> pd.DataFrame:
    """One row per well: layout, its read-outs and a few figures for the well table.

    Parameters
    ----------
    wells : pandas.DataFrame
        :func:`pipeline.report.tables.well_timecourse`'s per well and time table.
    times : dict
        ``g1``, ``growth_from``, ``growth_to`` as indices (:func:`~pipeline.report.tables.resolve_times`).
    """
    by = wells.set_index(["well", "t"])
    out = wells.drop_duplicates("well")[["well", *LAYOUT_COLUMNS]].set_index("well")
    last = wells.groupby("well")["t"].max()

    def at(column: str, t) -> pd.Series:
        idx = pd.MultiIndex.from_arrays([out.index, np.broadcast_to(np.asarray(t), len(out.index))])
        return pd.Series(by[column].reindex(idx).to_numpy(), index=out.index)

    out["nuclei_first"] = at("nuclei", 0)
    out["nuclei_last"] = at("nuclei", last.reindex(out.index).to_numpy())
    out["g1_fraction"] = at("fraction_G1", times["g1"])
    start, end = at("nuclei", times["growth_from"]), at("nuclei", times["growth_to"])
    out["growth"] = end / start.where(start > 0)
    out["dead_fraction"] = at("fraction_dead", last.reindex(out.index).to_numpy())
    out["radius_um"] = at("spheroid_radius_um", last.reindex(out.index).to_numpy())
    controls = out[out["control"]]
    if len(controls):
        out["delta_g1"] = out["g1_fraction"] - controls["g1_fraction"].mean()
        out["growth_vs_control"] = out["growth"] / controls["growth"].mean()
    else:
        out["delta_g1"] = np.nan
        out["growth_vs_control"] = np.nan
    return out.reset_index()


def condition_table(wells: pd.DataFrame) -> pd.DataFrame:
    """Per condition and time point: replicate mean and standard deviation, and the change
    against the controls.

    Columns: ``condition, drug, dose, unit, control, t, time_h, n_wells``, ``<x>_mean`` and
    ``<x>_sd`` for ``nuclei``, ``growth``, ``fraction_G1``, ``fraction_dead``,
    ``spheroid_radius_um``, ``spheroid_volume_um3``; ``delta_g1_mean/sd`` (G1 fraction minus the controls' mean at that
    time) and ``growth_vs_control_mean/sd`` (growth over the controls' mean growth). The
    comparisons are NaN without control wells.
    """
    values = ["nuclei", "growth", "fraction_G1", "fraction_dead", "spheroid_radius_um", "spheroid_volume_um3"]
    tab = wells.copy()
    control = tab[tab["control"]].groupby("t")[["fraction_G1", "growth"]].mean()
    tab["delta_g1"] = tab["fraction_G1"] - tab["t"].map(control["fraction_G1"]) if len(control) else np.nan
    tab["growth_vs_control"] = tab["growth"] / tab["t"].map(control["growth"]) if len(control) else np.nan
    keys = ["condition", "t"]
    grouped = tab.groupby(keys, sort=True, dropna=False)
    out = grouped[["time_h"]].first()
    out["n_wells"] = grouped["well"].nunique()
    for col in [*values, "delta_g1", "growth_vs_control"]:
        out[f"{col}_mean"] = grouped[col].mean()
        out[f"{col}_sd"] = grouped[col].std(ddof=1)
    meta = tab.drop_duplicates("condition").set_index("condition")[["drug", "dose", "unit", "control"]]
    out = out.reset_index().join(meta, on="condition")
    front = ["condition", "drug", "dose", "unit", "control", "t", "time_h", "n_wells"]
    out = out[front + [c for c in out.columns if c not in front]]
    return out.sort_values(["control", "drug", "dose", "condition", "t"], ascending=[False, True, True, True, True], na_position="first").reset_index(drop=True)

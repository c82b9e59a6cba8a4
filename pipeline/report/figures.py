"""The report's figures (matplotlib ``Figure`` objects, no pyplot state; saved as PNG).

Each function takes the report's tables and returns a figure; :func:`png` turns it into
PNG bytes. Phases have one colour throughout (also in the thumbnails).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.report.compare import READOUTS
from pipeline.report.doseresponse import Fit
from pipeline.report.tables import CATEGORIES, PHASES

PHASE_COLORS = {"early-G1": "#8c8c8c", "G1": "#d62728", "G1/S": "#e0a800", "S/G2/M": "#2ca02c", "dead": "#7b3294"}
"""One colour per phase (FUCCI: red G1, yellow G1/S, green S/G2/M; grey: neither reporter)."""


def png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def condition_colors(conditions: pd.DataFrame) -> dict[str, tuple]:
    """A colour per condition: controls black, each drug's doses along a colour map."""
    from matplotlib import colormaps

    meta = conditions.drop_duplicates("condition")
    out: dict[str, tuple] = {}
    maps = ["viridis", "plasma", "cividis", "cool"]
    for i, (drug, group) in enumerate(meta[meta["drug"].notna()].groupby("drug", sort=True)):
        cmap = colormaps[maps[i % len(maps)]]
        ordered = group.sort_values("dose")["condition"].tolist()
        for j, name in enumerate(ordered):
            out[name] = cmap(0.1 + 0.8 * j / max(len(ordered) - 1, 1))
    others = [c for c in meta["condition"] if c not in out]
    tab = colormaps["tab10"]
    k = 0
    for name in others:
        is_control = bool(meta.loc[meta["condition"] == name, "control"].iloc[0])
        out[name] = (0.0, 0.0, 0.0, 1.0) if is_control else tab(k % 10)
        k += 0 if is_control else 1
    return out


def _order(conditions: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(conditions["condition"]))


def timecourse(conditions: pd.DataFrame, columns: list[tuple[str, str]], title: str) -> Figure:
    """Lines over time per condition (replicate mean, +-1 SD band), one panel per column."""
    colors = condition_colors(conditions)
    fig = Figure(figsize=(4.2 * len(columns), 3.4))
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    for ax, (col, label) in zip(axes, columns):
        for name in _order(conditions):
            sub = conditions[conditions["condition"] == name].sort_values("t")
            mean, sd = sub[f"{col}_mean"].to_numpy(float), sub[f"{col}_sd"].fillna(0).to_numpy(float)
            ax.plot(sub["time_h"], mean, color=colors[name], label=name, lw=1.6)
            ax.fill_between(sub["time_h"], mean - sd, mean + sd, color=colors[name], alpha=0.15, lw=0)
        ax.set_xlabel("time (h)")
        ax.set_ylabel(label)
    axes[-1].legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title)
    return fig


def phase_panels(wells: pd.DataFrame) -> Figure:
    """Phase and dead fractions over time, one panel per condition (replicate wells pooled by mean)."""
    names = list(dict.fromkeys(wells.sort_values(["control", "drug", "dose"], ascending=[False, True, True])["condition"]))
    n = len(names)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)).ravel()
    for ax, name in zip(axes, names):
        sub = wells[wells["condition"] == name].groupby("time_h").mean(numeric_only=True)
        for cat in CATEGORIES:
            ax.plot(sub.index, sub[f"fraction_{cat}"], color=PHASE_COLORS[cat], label=cat, lw=1.6)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, 1)
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, frameon=False)
    fig.supxlabel("time (h)")
    fig.supylabel("fraction (phases: of live nuclei)")
    return fig


def depth_panels(depth: pd.DataFrame, t: int) -> Figure:
    """Phase fractions by depth below the rim at time point ``t``: stacked bars per condition."""
    sub = depth[(depth["t"] == t) & (depth["phase"] != "dead")]
    names = list(dict.fromkeys(sub.sort_values(["control", "drug", "dose"], ascending=[False, True, True])["condition"]))
    n = max(len(names), 1)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharey=True)).ravel()
    for ax, name in zip(axes, names):
        part = sub[sub["condition"] == name]
        counts = part.pivot_table(index=["depth_from_um", "depth_class"], columns="phase", values="count", aggfunc="sum").reindex(columns=list(PHASES), fill_value=0)
        fractions = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0).fillna(0)
        x = np.arange(len(fractions))
        bottom = np.zeros(len(fractions))
        for p in PHASES:
            ax.bar(x, fractions[p], bottom=bottom, color=PHASE_COLORS[p], label=p, width=0.85)
            bottom += fractions[p].to_numpy()
        ax.set_xticks(x, [c for _, c in fractions.index], rotation=45, fontsize=7)
        ax.set_title(name, fontsize=9)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, frameon=False)
    fig.supxlabel("depth below the rim (um)")
    fig.supylabel("fraction of live nuclei")
    return fig


def duration_boxes(tracks: pd.DataFrame) -> Figure:
    """Hours in each phase of the complete tracks (birth to division), per condition."""
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, len(PHASES), sharey=True)
    done = tracks[tracks["complete"].astype(bool)] if "complete" in tracks else tracks.iloc[:0]
    names = list(dict.fromkeys(tracks["condition"])) if len(tracks) else []
    for ax, p in zip(axes, PHASES):
        data = [done.loc[done["condition"] == n, f"hours_{p}"].to_numpy(float) for n in names]
        if any(len(d) for d in data):
            ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=False)
            ax.set_xticks(np.arange(1, len(names) + 1), names, rotation=60, fontsize=6, ha="right")
        else:
            ax.text(0.5, 0.5, "no complete tracks", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            ax.set_xticks([])
        ax.set_title(p, color=PHASE_COLORS[p], fontsize=10)
    axes[0].set_ylabel("hours in phase (complete tracks)")
    return fig


def against_controls(readouts: pd.DataFrame) -> Figure:
    """Change in G1 fraction and growth relative to the controls: replicate wells and their mean +- SD."""
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    order = list(dict.fromkeys(readouts.sort_values(["control", "drug", "dose"], ascending=[False, True, True])["condition"]))
    for ax, col, label, ref in ((axes[0], "delta_g1", "G1 fraction - controls' mean", 0.0), (axes[1], "growth_vs_control", "growth / controls' mean growth", 1.0)):
        for i, name in enumerate(order):
            values = readouts.loc[readouts["condition"] == name, col].to_numpy(float)
            values = values[np.isfinite(values)]
            if not len(values):
                continue
            ax.scatter(np.full(len(values), i), values, s=14, color="0.4", zorder=3)
            sd = values.std(ddof=1) if len(values) > 1 else 0.0
            ax.errorbar(i, values.mean(), yerr=sd, fmt="_", color="k", markersize=16, capsize=4, zorder=4)
        ax.axhline(ref, color="0.6", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(order)), order, rotation=60, fontsize=7, ha="right")
        ax.set_ylabel(label)
    return fig


def dose_response(readouts: pd.DataFrame, fits: list[Fit], drug: str, *, confidence: float = 0.95) -> Figure:
    """One drug's read-outs against dose (controls at the left edge), the fitted curves, the
    EC50 with its interval, or the reason no EC50 is given."""
    mine = [f for f in fits if f.drug == drug]
    fig = Figure(figsize=(4.3 * max(len(mine), 1), 3.4))
    axes = np.atleast_1d(fig.subplots(1, max(len(mine), 1), squeeze=False)[0])
    treated = readouts[(readouts["drug"] == drug) & ~readouts["control"]]
    controls = readouts[readouts["control"]]
    for ax, fit in zip(axes, mine):
        doses = treated["dose"].to_numpy(float)
        lo, hi = doses[doses > 0].min(), doses.max()
        x_control = lo / 10 ** 0.75
        ax.scatter(doses, treated[fit.readout], color="C0", s=16, zorder=3, label="wells")
        if len(controls):
            ax.scatter(np.full(len(controls), x_control), controls[fit.readout], color="k", marker="s", s=14, zorder=3, label="controls")
        grid = np.logspace(np.log10(lo) - 0.5, np.log10(hi) + 0.5, 200)
        if np.isfinite(fit.estimate):
            ax.plot(grid, fit.curve(grid), color="C1", lw=1.6, label="4PL fit")
        if fit.ok:
            ax.axvline(fit.ec50, color="C3", lw=1)
            ax.axvspan(fit.ec50_low, fit.ec50_high, color="C3", alpha=0.15, lw=0)
            text = f"EC50 {fit.ec50:.3g} {fit.unit or ''}\n{100 * confidence:.0f}% CI {fit.ec50_low:.3g}-{fit.ec50_high:.3g}"
        else:
            text = f"no EC50: {fit.status}"
        ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(f"dose ({fit.unit or 'unit'}); controls at left")
        ax.set_ylabel(READOUTS.get(fit.readout, fit.readout))
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    fig.suptitle(drug)
    return fig

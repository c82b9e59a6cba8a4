"""The per-experiment phase model: floors, depth fits and thresholds, fitted on all nuclei at once.

:func:`fit_phase_model` looks at the measured table of every nucleus of every well
and time point (only the few columns it needs) and returns a :class:`PhaseModel`;
:func:`apply_phase_model` then adds ``phase``, ``confidence`` and ``dead`` to any table
measured the same way (a field, a time point). The model is a small JSON-able record,
stored with the tables, so the calls can be reproduced and compared across experiments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cellcycle import phase as ph
from pipeline.cellcycle.depth import NO_CORRECTION, DepthFit, fit_depth
from pipeline.cellcycle.overexposure import GlowFit, fit_glow
from pipeline.config.cellcycle import CellcycleConfig

LOG = logging.getLogger(__name__)

ROLES = ("red", "green")


def column(channel: str, statistic: str) -> str:
    """Table column of one channel's statistic (``"Cy3", "median"`` -> ``"cy3_median"``)."""
    return f"{channel.strip().lower()}_{statistic}"


def noise_floor(values: np.ndarray) -> float:
    """Noise of background-corrected intensities: 1.4826 x the median magnitude of those <= 0.

    Nuclei without the reporter scatter around zero after background subtraction; their
    negative half measures the spread without the expressing nuclei. At least 1.
    """
    v = np.asarray(values, dtype=np.float64)
    neg = v[np.isfinite(v) & (v <= 0)]
    if neg.size < 10:
        return 1.0
    return max(1.0, float(1.4826 * np.median(np.abs(neg))))


def ashman_d(log_values: np.ndarray) -> float:
    """Ashman's D of a two-component Gaussian mixture fitted to ``log_values``.

    Above 2 the two components are cleanly separated; a unimodal distribution gives
    well under 2 (a hard split of it would not: each half looks compact).
    """
    from sklearn.mixture import GaussianMixture

    x = np.asarray(log_values, dtype=np.float64)
    x = x[np.isfinite(x)][:, None]
    if x.shape[0] < 10 or np.ptp(x) <= 0:
        return 0.0
    gmm = GaussianMixture(2, random_state=0, means_init=np.percentile(x, [10, 90])[:, None], reg_covar=1e-4).fit(x)
    m, v = gmm.means_[:, 0], gmm.covariances_.reshape(-1)
    return float(np.sqrt(2.0) * abs(m[1] - m[0]) / np.sqrt(v[0] + v[1]))


@dataclass
class PhaseModel:
    """What turns measured intensities into calls, for one experiment."""

    statistic: str
    channels: dict[str, str]
    """Role (``red``, ``green``, ``dead``) -> channel name."""
    floors: dict[str, float]
    depth: dict[str, DepthFit]
    thresholds: dict[str, ph.ChannelThreshold]
    dead_enabled: bool = False
    n_nuclei: int = 0
    method: str = "gmm"
    notes: list[str] = field(default_factory=list)
    glow: GlowFit | None = None
    """Over-exposure of the nuclear stain (``None``: off, or no nuclear channel)."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able description (stored with the tables)."""
        return {
            "statistic": self.statistic,
            "method": self.method,
            "channels": dict(self.channels),
            "floors": dict(self.floors),
            "depth": {k: v.as_dict() for k, v in self.depth.items()},
            "thresholds": {k: {**v.as_dict(), "intensity": float(10**v.threshold)} for k, v in self.thresholds.items()},
            "dead_enabled": self.dead_enabled,
            "overexposure": self.glow.as_dict() if self.glow is not None else None,
            "n_nuclei": self.n_nuclei,
            "notes": list(self.notes),
        }

    def excess(self, table: pd.DataFrame) -> np.ndarray:
        """log10 factor by which each nucleus is over-exposed (0 for most; see :mod:`~pipeline.cellcycle.overexposure`)."""
        if self.glow is None:
            return np.zeros(len(table))
        x = ph.log_intensity(table[column(self.channels["nuclear"], self.statistic)].to_numpy(), self.floors["nuclear"])
        return self.glow.excess(x, table["centroid_z"].to_numpy())

    def log_values(self, table: pd.DataFrame, role: str, *, depth: bool = True) -> np.ndarray:
        """Floored log10 intensity of one role's channel, depth-corrected when ``depth``; the
        reporters (``red``, ``green``) of over-exposed nuclei scaled back."""
        x = ph.log_intensity(table[column(self.channels[role], self.statistic)].to_numpy(), self.floors[role])
        if role in ROLES and self.glow is not None:
            x = x - self.excess(table)
        fit = self.depth.get(role, NO_CORRECTION) if depth else NO_CORRECTION
        return fit.correct(x, table["centroid_z"].to_numpy()) if fit is not NO_CORRECTION else x


def _threshold_fn(config: CellcycleConfig, role: str):
    th = config.threshold
    if th.method == "fixed" or (role == "dead" and th.dead is not None):
        value = {"red": th.red, "green": th.green, "dead": th.dead}[role]
        return partial(ph.fixed_threshold, intensity=value)
    method = "otsu" if th.method == "otsu" else "gmm"
    return partial(ph.fit_threshold, method=method, components=th.components)


def fit_phase_model(table: pd.DataFrame, config: CellcycleConfig) -> PhaseModel:
    """Fit floors, depth corrections and thresholds on all nuclei in ``table``.

    Parameters
    ----------
    table : pandas.DataFrame
        Measured nuclei of the whole experiment: ``centroid_z`` and the chosen statistic
        of the red, green (and dead) channels.
    config : CellcycleConfig
        Channel roles, statistic, threshold and depth settings.

    Returns
    -------
    PhaseModel

    Raises
    ------
    ValueError
        With too few nuclei to set a threshold.
    """
    th = config.threshold
    roles = {"red": config.channels.red, "green": config.channels.green}
    if config.channels.dead:
        roles["dead"] = config.channels.dead
    model = PhaseModel(th.statistic, roles, {}, {}, {}, n_nuclei=len(table), method=th.method)
    z = table["centroid_z"].to_numpy(dtype=np.float64)
    alive = np.ones(len(table), dtype=bool)
    planar = not np.ptp(z) > 0 if len(z) else True
    if "dead" in roles:
        values = table[column(roles["dead"], th.statistic)].to_numpy()
        model.floors["dead"] = th.floor or noise_floor(values)
        x = ph.log_intensity(values, model.floors["dead"])
        t = _threshold_fn(config, "dead")(x)
        model.thresholds["dead"] = t
        separation = ashman_d(x)
        model.dead_enabled = th.dead is not None or separation >= th.dead_separation
        if not model.dead_enabled:
            model.notes.append(f"dead stain not bimodal (Ashman's D {separation:.2f} < {th.dead_separation}): no nucleus flagged dead")
        else:
            alive = x <= t.threshold
    nuclear = column(config.channels.nuclear, th.statistic) if config.channels.nuclear else None
    if th.overexposed_sigma is not None and nuclear in table:
        values = table[nuclear].to_numpy()
        model.channels["nuclear"] = config.channels.nuclear
        model.floors["nuclear"] = th.floor or noise_floor(values[alive])
        model.glow = fit_glow(ph.log_intensity(values[alive], model.floors["nuclear"]), z[alive], th.overexposed_sigma)
    excess = model.excess(table)
    if model.glow is not None:
        LOG.info("%d nucleus/nuclei over-exposed (nuclear stain > %.1f robust spreads above the median)", int((excess > 0).sum()), th.overexposed_sigma)
    for role in ROLES:
        values = table[column(roles[role], th.statistic)].to_numpy()
        model.floors[role] = th.floor or noise_floor(values[alive & (excess == 0)])
        x = ph.log_intensity(values, model.floors[role]) - excess
        fn = _threshold_fn(config, role)
        if config.depth.enabled and not planar and th.method != "fixed":
            fit, t = fit_depth(x[alive], z[alive], fn, iterations=config.depth.iterations)
        else:
            fit, t = NO_CORRECTION, fn(x[alive])
        model.depth[role] = fit
        model.thresholds[role] = t
        LOG.info(
            "%s (%s): floor %.1f, threshold %.0f, depth length %s um",
            role,
            roles[role],
            model.floors[role],
            10**t.threshold,
            f"{fit.length_um:.0f}" if np.isfinite(fit.length_um) else "inf",
        )
    return model


def apply_phase_model(table: pd.DataFrame, model: PhaseModel) -> pd.DataFrame:
    """``table`` with ``phase``, ``confidence``, ``dead`` and ``overexposed`` (and the corrected log intensities
    ``red_log`` / ``green_log`` the calls used, and ``p_red`` / ``p_green``, the posterior of
    each reporter's high state, which :mod:`pipeline.cellcycle.smooth` decodes along tracks) added."""
    out = table.copy()
    red = model.log_values(out, "red")
    green = model.log_values(out, "green")
    phase, confidence = ph.classify(red, green, model.thresholds["red"], model.thresholds["green"])
    out["red_log"] = red
    out["p_red"] = model.thresholds["red"].posterior_high(red)
    out["p_green"] = model.thresholds["green"].posterior_high(green)
    out["green_log"] = green
    out["phase"] = phase
    out["confidence"] = confidence
    out["overexposed"] = model.excess(out) > 0
    if model.dead_enabled:
        out["dead"] = model.log_values(out, "dead", depth=False) > model.thresholds["dead"].threshold
    else:
        out["dead"] = np.zeros(len(out), dtype=bool)
    return out

"""Depth correction: reporter intensity falls with depth z in a spheroid; undo it before thresholding.

Light is absorbed and scattered on the way into the spheroid and back, so a nucleus
deep in the stack looks dimmer than the same nucleus near the objective, roughly as
``exp(-z / L)`` per channel. The fall is measured on the data: on the log10 scale the
**high class** of a channel (the nuclei that express the reporter fully) should sit at
the same level at every depth, so its log intensity is regressed on z (Theil-Sen:
robust to the few misclassified nuclei) and the slope removed from every nucleus::

    log10 I_corrected = log10 I - slope * (z - z_ref)

The high class comes from the channel's threshold, and the threshold from the
corrected values, so the two are alternated a few times (a hard-assignment EM). The
low class is not used for the fit: it is mostly background and the light of the
neighbours, whose share changes with depth for reasons that have nothing to do with
attenuation; nor are all nuclei: the mix of phases itself changes with depth
(a quiescent core is deeper than the cycling rim), which a fit over all nuclei
would take for attenuation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.cellcycle.phase import ChannelThreshold

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthFit:
    """The fitted fall of one channel with depth."""

    slope: float
    """d log10(I) / dz, per um (negative when the signal falls with depth)."""
    z_ref: float
    """Depth (um) that corrected values refer to (values there are unchanged)."""
    n: int
    """Nuclei in the high class used for the fit."""

    @property
    def length_um(self) -> float:
        """Attenuation length ``L`` of ``exp(-z / L)`` in um (inf when flat or rising)."""
        return float(-1.0 / (self.slope * np.log(10))) if self.slope < 0 else float("inf")

    def correct(self, log_values: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Corrected log10 intensities."""
        return np.asarray(log_values, dtype=np.float64) - self.slope * (np.asarray(z, dtype=np.float64) - self.z_ref)

    def as_dict(self) -> dict:
        return {"slope_per_um": self.slope, "z_ref_um": self.z_ref, "n": self.n, "length_um": self.length_um}


NO_CORRECTION = DepthFit(0.0, 0.0, 0)


def fit_depth(
    log_values: np.ndarray,
    z: np.ndarray,
    fit_threshold: Callable[[np.ndarray], ChannelThreshold],
    *,
    iterations: int = 3,
    min_nuclei: int = 30,
    z_ref: float = 0.0,
) -> tuple[DepthFit, ChannelThreshold]:
    """Alternate threshold and depth slope for one channel.

    Parameters
    ----------
    log_values : numpy.ndarray
        log10 intensity per nucleus.
    z : numpy.ndarray
        Depth (centroid z, um) per nucleus.
    fit_threshold : callable
        ``log_values -> ChannelThreshold`` (see :func:`pipeline.cellcycle.phase.fit_threshold`).
    iterations : int
        Threshold/slope alternations.
    min_nuclei : int
        Fewer high nuclei (or all at one depth) leave the channel uncorrected.
    z_ref : float
        Depth the corrected values refer to.

    Returns
    -------
    fit : DepthFit
    threshold : ChannelThreshold
        The threshold on the corrected values.
    """
    from scipy.stats import theilslopes

    x = np.asarray(log_values, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    fit = NO_CORRECTION
    threshold = fit_threshold(x)
    for _ in range(max(1, iterations)):
        corrected = fit.correct(x, z)
        high = corrected > threshold.threshold
        if high.sum() < min_nuclei or np.ptp(z[high]) <= 0:
            break
        # Theil-Sen is O(n^2) in memory: a fixed-seed subsample keeps it bounded
        idx = np.flatnonzero(high)
        if idx.size > 2000:
            idx = np.random.default_rng(0).choice(idx, 2000, replace=False)
        slope = float(theilslopes(x[idx], z[idx])[0])
        fit = DepthFit(slope, float(z_ref), int(high.sum()))
        threshold = fit_threshold(fit.correct(x, z))
    return fit, threshold

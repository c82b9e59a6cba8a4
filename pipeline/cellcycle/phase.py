"""FUCCI phase per nucleus from two thresholds, each with its confidence.

Each reporter is either high or low in a nucleus, which gives the four phases:

==============  ===========  ==============
phase           red (Cdt1)   green (Geminin)
==============  ===========  ==============
``early-G1``    low          low
``G1``          high         low
``G1/S``        high         high
``S/G2/M``      low          high
==============  ===========  ==============

Thresholds live on ``log10`` intensity (background-corrected, depth-corrected mean
intensity of the nucleus; values below ``floor`` count as ``floor``), because reporter
levels spread log-normally from cell to cell. They are set per experiment from the
distribution over all nuclei of all wells, per channel, by one of:

``otsu`` (default)
    Otsu's threshold (scikit-image) on the log intensities.
``gmm``
    A Gaussian mixture (scikit-learn, ``components`` of them); the brightest component
    is the high class, and the threshold the lowest value where it is the most likely.
``fixed``
    Thresholds given in the config (intensity units, not log).

In every case the low and high classes are two Gaussians on the log scale, and a
call's **confidence** is the posterior probability of the state chosen for the red
channel times that of the green channel (the two are taken as independent): 1 deep
inside a quadrant, 0.25 at the crossing of both thresholds. The two classes are
described by the mean and spread of the values on each side of the threshold.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

LOG = logging.getLogger(__name__)

PHASES = ("early-G1", "G1", "G1/S", "S/G2/M")
"""Phase names written to the tables, in cycle order."""
THRESHOLD_METHODS = ("gmm", "otsu", "fixed")


@dataclass(frozen=True)
class ChannelThreshold:
    """The low/high split of one channel on the log10 scale, and the two classes it separates."""

    threshold: float
    """log10 intensity where low turns to high."""
    low_mean: float
    low_std: float
    high_mean: float
    high_std: float
    high_weight: float
    """Fraction of nuclei in the high class (the prior)."""

    def posterior_high(self, log_values: np.ndarray) -> np.ndarray:
        """P(high | value) under the two-Gaussian model.

        Values beyond a class mean count as that mean (with unequal spreads the wider
        class would otherwise win again far out in the other tail), and the result is
        kept on the threshold's side of 0.5.
        """
        x = np.clip(np.asarray(log_values, dtype=np.float64), self.low_mean, self.high_mean)
        w = min(max(self.high_weight, 1e-6), 1 - 1e-6)
        log_hi = np.log(w) - np.log(self.high_std) - 0.5 * ((x - self.high_mean) / self.high_std) ** 2
        log_lo = np.log(1 - w) - np.log(self.low_std) - 0.5 * ((x - self.low_mean) / self.low_std) ** 2
        p = 1.0 / (1.0 + np.exp(np.clip(log_lo - log_hi, -700, 700)))
        above = np.asarray(log_values, dtype=np.float64) > self.threshold
        return np.where(above, np.maximum(p, 0.5), np.minimum(p, 0.5))

    def as_dict(self) -> dict:
        return {k: float(v) for k, v in asdict(self).items()}


def log_intensity(values: np.ndarray, floor: float) -> np.ndarray:
    """``log10(max(values, floor))``: background-corrected values may be 0 or negative."""
    return np.log10(np.maximum(np.asarray(values, dtype=np.float64), float(floor)))


def _classes(x: np.ndarray, threshold: float) -> ChannelThreshold:
    lo, hi = x[x <= threshold], x[x > threshold]
    spread = max(float(np.std(x)) * 0.05, 1e-3)
    low_std = max(float(np.std(lo)) if lo.size > 1 else spread, spread)
    high_std = max(float(np.std(hi)) if hi.size > 1 else spread, spread)
    return ChannelThreshold(
        threshold=float(threshold),
        low_mean=float(np.mean(lo)) if lo.size else float(threshold) - low_std,
        low_std=low_std,
        high_mean=float(np.mean(hi)) if hi.size else float(threshold) + high_std,
        high_std=high_std,
        high_weight=float(hi.size / max(x.size, 1)),
    )


def fit_threshold(log_values: np.ndarray, method: str = "gmm", *, components: int = 3, seed: int = 0) -> ChannelThreshold:
    """Split one channel's log10 intensities into low and high.

    Parameters
    ----------
    log_values : numpy.ndarray
        log10 intensities of all nuclei (all wells of the experiment).
    method : {"gmm", "otsu"}
        See the module docstring.
    components : int
        Mixture components for ``gmm``: the one with the highest mean is the high class,
        the others together are the low class; the threshold is the lowest value (below
        the high mean) where the high component is the more likely.
    seed : int
        Seed of the mixture's initialisation (the result is deterministic).

    Returns
    -------
    ChannelThreshold

    Raises
    ------
    ValueError
        With fewer than 10 finite values or an unknown method.
    """
    x = np.asarray(log_values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 10:
        raise ValueError(f"{x.size} nuclei are too few to set a threshold (need at least 10)")
    if method == "otsu":
        from skimage.filters import threshold_otsu

        return _classes(x, float(threshold_otsu(x)))
    if method != "gmm":
        raise ValueError(f"unknown threshold method {method!r} (known: gmm, otsu)")
    from sklearn.mixture import GaussianMixture

    k = int(components)
    init = np.percentile(x, np.linspace(10, 90, k))[:, None]
    gmm = GaussianMixture(k, means_init=init, random_state=seed, reg_covar=1e-4, max_iter=500)
    gmm.fit(x[:, None])
    top = int(np.argmax(gmm.means_[:, 0]))
    top_mean = float(gmm.means_[top, 0])
    grid = np.linspace(float(x.min()), top_mean, 4001)
    p_top = gmm.predict_proba(grid[:, None])[:, top]
    above = np.flatnonzero(p_top >= 0.5)
    threshold = float(grid[above[0]]) if above.size else top_mean
    return _classes(x, threshold)


def fixed_threshold(log_values: np.ndarray, intensity: float) -> ChannelThreshold:
    """A threshold given in intensity units, with the classes it splits ``log_values`` into."""
    return _classes(np.asarray(log_values, dtype=np.float64), float(np.log10(intensity)))


def classify(log_red: np.ndarray, log_green: np.ndarray, red: ChannelThreshold, green: ChannelThreshold) -> tuple[np.ndarray, np.ndarray]:
    """Phase and confidence of every nucleus.

    Returns
    -------
    phase : numpy.ndarray
        object array of :data:`PHASES` names.
    confidence : numpy.ndarray
        float64 in ``[0.25, 1]``.
    """
    p_red = red.posterior_high(log_red)
    p_green = green.posterior_high(log_green)
    red_high = np.asarray(log_red) > red.threshold
    green_high = np.asarray(log_green) > green.threshold
    index = red_high.astype(np.int64) + 2 * green_high.astype(np.int64)  # 0 lo/lo, 1 hi/lo, 2 lo/hi, 3 hi/hi
    names = np.array(["early-G1", "G1", "S/G2/M", "G1/S"], dtype=object)
    confidence = np.where(red_high, p_red, 1 - p_red) * np.where(green_high, p_green, 1 - p_green)
    return names[index], confidence

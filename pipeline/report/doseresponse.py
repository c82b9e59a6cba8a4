"""Four-parameter log-logistic dose-response fits with EC50 and a confidence interval.

The model (as GraphPad's "log(agonist) vs. response, variable slope" and R's ``drc::LL.4``)::

    y(d) = bottom + (top - bottom) / (1 + 10 ** (hill * (log10(ec50) - log10(d))))

with ``y(0) = bottom``: control wells enter every fit at dose 0. ``top`` is the response at
saturating doses, below ``bottom`` for a read-out the drug lowers (growth). The fit is
scipy's :func:`scipy.optimize.curve_fit` (trust-region reflective, with bounds keeping the
Hill slope in ``(0.05, max_hill]`` and the EC50 within 3 decades of the tested range); the
interval is a Wald interval on ``log10(ec50)`` from the fit's covariance with a t quantile
on ``n - 4`` degrees of freedom.

A fit is reported as a number only when it can be trusted; otherwise its ``status`` says
why and the EC50 columns are empty:

* ``too few doses``: fewer distinct positive doses than ``min_doses``, or fewer than 5
  wells (4 parameters);
* ``not converged``: the optimiser failed, or gave no finite covariance;
* ``EC50 outside tested range``: the estimate lies below the lowest or above the highest
  positive dose;
* ``no response``: the interval of ``top - bottom`` includes 0 (no effect to place an
  EC50 on);
* ``interval too wide``: the EC50's interval reaches more than a decade beyond the tested
  doses (a step between two doses, or too much scatter, leaves it undetermined);
* ``ok``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from pipeline.config.report import DoseResponseConfig

LOG = logging.getLogger(__name__)

STATUSES = ("ok", "too few doses", "not converged", "EC50 outside tested range", "no response", "interval too wide")


def log_logistic(dose: np.ndarray, bottom: float, top: float, log_ec50: float, hill: float) -> np.ndarray:
    """The 4-parameter log-logistic curve at ``dose`` (0 gives ``bottom``)."""
    dose = np.asarray(dose, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        exponent = hill * (log_ec50 - np.log10(np.where(dose > 0, dose, np.nan)))
        value = bottom + (top - bottom) / (1.0 + np.power(10.0, np.clip(exponent, -300, 300)))
    return np.where(dose > 0, value, bottom)


@dataclass(frozen=True)
class Fit:
    """One drug and read-out's fit (EC50 columns are NaN unless ``status == "ok"``)."""

    drug: str
    unit: str | None
    readout: str
    n_wells: int
    n_doses: int
    dose_min: float
    dose_max: float
    status: str
    ec50: float = float("nan")
    ec50_low: float = float("nan")
    ec50_high: float = float("nan")
    hill: float = float("nan")
    bottom: float = float("nan")
    top: float = float("nan")
    r2: float = float("nan")
    estimate: float = float("nan")
    """The optimiser's EC50 whatever the status (for diagnosis; not shown in the report)."""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def curve(self, dose: np.ndarray) -> np.ndarray:
        """The fitted curve (NaN unless a curve was fitted)."""
        if not np.isfinite(self.estimate):
            return np.full(np.shape(dose), np.nan)
        return log_logistic(dose, self.bottom, self.top, np.log10(self.estimate), self.hill)


def fit_dose_response(dose, response, config: DoseResponseConfig, *, drug: str = "drug", unit: str | None = None, readout: str = "response") -> Fit:
    """Fit one drug's read-out against dose (controls at dose 0).

    Parameters
    ----------
    dose, response : array-like
        One value per well; NaN responses are left out.
    config : DoseResponseConfig
        Interval level, fewest doses, largest Hill slope.

    Returns
    -------
    Fit
    """
    from scipy import stats
    from scipy.optimize import OptimizeWarning, curve_fit

    dose = np.asarray(dose, dtype=np.float64)
    response = np.asarray(response, dtype=np.float64)
    keep = np.isfinite(dose) & np.isfinite(response) & (dose >= 0)
    dose, response = dose[keep], response[keep]
    positive = np.unique(dose[dose > 0])
    base = {
        "drug": drug, "unit": unit, "readout": readout, "n_wells": int(len(dose)), "n_doses": int(len(positive)),
        "dose_min": float(positive.min()) if len(positive) else np.nan,
        "dose_max": float(positive.max()) if len(positive) else np.nan,
    }
    if len(positive) < config.min_doses or len(dose) < 5:
        return Fit(**base, status="too few doses", message=f"{len(positive)} positive dose(s), {len(dose)} well(s)")
    lo, hi = np.log10(positive.min()), np.log10(positive.max())
    low_mean = response[dose <= positive.min()].mean()
    high_mean = response[dose >= positive.max()].mean()
    span = max(float(np.ptp(response)), 1e-9)
    p0 = [low_mean, high_mean, (lo + hi) / 2.0, 1.0]
    bounds = (
        [response.min() - 2 * span, response.min() - 2 * span, lo - 3.0, 0.05],
        [response.max() + 2 * span, response.max() + 2 * span, hi + 3.0, config.max_hill],
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            params, cov = curve_fit(log_logistic, dose, response, p0=p0, bounds=bounds, maxfev=20000)
    except (RuntimeError, OptimizeWarning, ValueError) as exc:
        return Fit(**base, status="not converged", message=str(exc).splitlines()[0][:200])
    bottom, top, log_ec50, hill = (float(v) for v in params)
    fitted = {"bottom": bottom, "top": top, "hill": hill, "estimate": float(10**log_ec50)}
    residual = response - log_logistic(dose, *params)
    total = float(np.sum((response - response.mean()) ** 2))
    fitted["r2"] = 1.0 - float(np.sum(residual**2)) / total if total > 0 else np.nan
    if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
        return Fit(**base, **fitted, status="not converged", message="no finite covariance of the parameters")
    dof = len(dose) - 4
    q = float(stats.t.ppf(0.5 + config.confidence / 2.0, dof))
    se_log = float(np.sqrt(cov[2, 2]))
    amplitude_se = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    if not lo <= log_ec50 <= hi:
        return Fit(**base, **fitted, status="EC50 outside tested range",
                   message=f"estimate {10**log_ec50:.3g} outside {positive.min():.3g}-{positive.max():.3g}")
    if abs(top - bottom) <= q * amplitude_se:
        return Fit(**base, **fitted, status="no response", message=f"top - bottom = {top - bottom:.3g} +- {q * amplitude_se:.3g}")
    if log_ec50 - q * se_log < lo - 1.0 or log_ec50 + q * se_log > hi + 1.0:
        return Fit(**base, **fitted, status="interval too wide",
                   message=f"interval {10 ** (log_ec50 - q * se_log):.3g}-{10 ** (log_ec50 + q * se_log):.3g} reaches a decade past the tested doses")
    return Fit(
        **base, **fitted, status="ok",
        ec50=float(10**log_ec50), ec50_low=float(10 ** (log_ec50 - q * se_log)), ec50_high=float(10 ** (log_ec50 + q * se_log)),
    )


def fit_plate(readouts: pd.DataFrame, config: DoseResponseConfig) -> tuple[pd.DataFrame, list[Fit]]:
    """Fit every drug of the plate for every configured read-out.

    Parameters
    ----------
    readouts : pandas.DataFrame
        One row per well (:func:`pipeline.report.compare.well_readouts`): ``drug``, ``dose``,
        ``unit``, ``control`` and the read-out columns.

    Returns
    -------
    table : pandas.DataFrame
        One row per drug x read-out (the :class:`Fit` fields, ``estimate`` left out).
    fits : list of Fit
    """
    drugs = sorted(d for d in readouts["drug"].dropna().unique())
    controls = readouts[readouts["control"]]
    fits = []
    for drug in drugs:
        treated = readouts[(readouts["drug"] == drug) & ~readouts["control"]]
        unit = treated["unit"].dropna().iloc[0] if treated["unit"].notna().any() else None
        data = pd.concat([controls.assign(dose=0.0), treated])
        for readout in config.readouts:
            fit = fit_dose_response(data["dose"], data[readout], config, drug=drug, unit=unit, readout=readout)
            LOG.info("%s / %s: %s%s", drug, readout, fit.status, f", EC50 {fit.ec50:.3g} {unit} [{fit.ec50_low:.3g}, {fit.ec50_high:.3g}]" if fit.ok else "")
            fits.append(fit)
    columns = [k for k in Fit.__dataclass_fields__ if k != "estimate"]
    table = pd.DataFrame([{k: v for k, v in asdict(f).items() if k != "estimate"} for f in fits], columns=columns)
    return table, fits

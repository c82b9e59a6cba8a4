"""Dose-response fits: the 4PL model, EC50 recovery with its interval, and the flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config.report import DoseResponseConfig
from pipeline.report.doseresponse import fit_dose_response, fit_plate, log_logistic

DOSES = np.array([0, 0, 0, 0.1, 0.1, 0.3, 0.3, 1, 1, 3, 3, 10, 10, 30, 30.0])
CONFIG = DoseResponseConfig()


def hill(dose, bottom, top, ec50, h):
    return log_logistic(dose, bottom, top, np.log10(ec50), h)


def test_curve_is_bottom_at_zero_and_halfway_at_ec50():
    assert log_logistic(np.array([0.0]), 0.2, 0.9, 0.0, 1.5)[0] == 0.2
    assert log_logistic(np.array([1.0]), 0.2, 0.9, 0.0, 1.5)[0] == pytest.approx(0.55)
    assert log_logistic(np.array([1e6]), 0.2, 0.9, 0.0, 1.5)[0] == pytest.approx(0.9)


@pytest.mark.parametrize("ec50,direction", [(1.0, 1), (3.0, -1), (0.4, 1)])
def test_recovers_ec50_with_the_truth_inside_the_interval(ec50, direction):
    rng = np.random.default_rng(7)
    bottom, top = (0.35, 0.9) if direction > 0 else (1.6, 1.05)
    y = hill(DOSES, bottom, top, ec50, 1.5) + rng.normal(0, 0.02, DOSES.size)
    fit = fit_dose_response(DOSES, y, CONFIG)
    assert fit.status == "ok", fit
    assert max(fit.ec50 / ec50, ec50 / fit.ec50) < 1.3
    assert fit.ec50_low < ec50 < fit.ec50_high
    assert fit.bottom == pytest.approx(bottom, abs=0.05) and fit.top == pytest.approx(top, abs=0.05)


def test_flags_instead_of_numbers():
    rng = np.random.default_rng(0)
    few = fit_dose_response([0, 0, 1, 10], [0.4, 0.4, 0.6, 0.8], CONFIG)
    assert few.status == "too few doses" and np.isnan(few.ec50)
    outside = fit_dose_response(DOSES, hill(DOSES, 0.3, 0.9, 300.0, 1.5) + rng.normal(0, 0.005, DOSES.size), CONFIG)
    assert outside.status == "EC50 outside tested range" and np.isnan(outside.ec50) and outside.estimate > 30
    statuses = {fit_dose_response(DOSES, 0.4 + np.random.default_rng(s).normal(0, 0.01, DOSES.size), CONFIG).status for s in range(6)}
    assert "ok" not in statuses and statuses <= {"no response", "interval too wide", "EC50 outside tested range", "not converged"}
    flat = fit_dose_response(DOSES, np.full(DOSES.size, 0.4), CONFIG)
    assert flat.status in ("no response", "not converged") and np.isnan(flat.ec50)


def test_fit_plate_puts_controls_at_dose_zero_for_every_drug():
    rng = np.random.default_rng(3)
    rows = [{"well": f"B{i}", "drug": None, "dose": 0.0, "unit": None, "control": True} for i in range(3)]
    for drug, ec50 in (("a", 1.0), ("b", 5.0)):
        for i, d in enumerate(DOSES[3:]):
            rows.append({"well": f"{drug}{i}", "drug": drug, "dose": d, "unit": "uM", "control": False})
    table = pd.DataFrame(rows)
    truth = {"a": 1.0, "b": 5.0}
    ec50 = [truth.get(r.drug, 1.0) for r in table.itertuples()]
    table["g1_fraction"] = [hill(np.array([r.dose]), 0.4, 0.9, e, 1.5)[0] + rng.normal(0, 0.01) for r, e in zip(table.itertuples(), ec50)]
    table["growth"] = [hill(np.array([r.dose]), 1.6, 1.1, e, 1.5)[0] + rng.normal(0, 0.01) for r, e in zip(table.itertuples(), ec50)]
    fits, objects = fit_plate(table, CONFIG)
    assert list(fits[["drug", "readout"]].itertuples(index=False, name=None)) == [("a", "g1_fraction"), ("a", "growth"), ("b", "g1_fraction"), ("b", "growth")]
    assert (fits["n_wells"] == 15).all() and (fits["status"] == "ok").all()
    for f in objects:
        assert f.ec50_low < truth[f.drug] < f.ec50_high

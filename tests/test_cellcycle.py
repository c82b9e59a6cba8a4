"""Phase calls: thresholds, confidence, depth correction, and the whole stage on synthetic spheroids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.cellcycle import phase as ph
from pipeline.cellcycle.depth import fit_depth
from pipeline.cellcycle.durations import phase_fractions, track_summary
from pipeline.cellcycle.model import apply_phase_model, fit_phase_model
from pipeline.cellcycle.nuclei import measure_nuclei
from pipeline.config.cellcycle import CellcycleConfig, ThresholdConfig
from pipeline.config.synth import SynthConfig
from pipeline.synth import generate

SMALL = dict(shape=(10, 128, 128), n_nuclei=180, n_timepoints=3)


def _bimodal(rng, n=2000, lo=1.5, hi=3.2, frac=0.4):
    high = rng.random(n) < frac
    return np.where(high, rng.normal(hi, 0.15, n), rng.normal(lo, 0.3, n)), high


@pytest.mark.parametrize("method", ["otsu", "gmm"])
def test_threshold_splits_two_populations(rng, method):
    x, high = _bimodal(rng)
    t = ph.fit_threshold(x, method)
    assert 1.8 < t.threshold < 3.0
    assert ((x > t.threshold) == high).mean() > 0.99
    p = t.posterior_high(np.array([1.0, t.threshold - 1e-9, t.threshold + 1e-9, 4.0]))
    assert p[0] < 0.01 and p[1] <= 0.5 <= p[2] and p[3] > 0.99


def test_threshold_needs_enough_nuclei():
    with pytest.raises(ValueError, match="too few"):
        ph.fit_threshold(np.ones(5))


def test_classify_quadrants():
    red = ph.ChannelThreshold(2.0, 1.0, 0.2, 3.0, 0.2, 0.5)
    green = ph.ChannelThreshold(2.0, 1.0, 0.2, 3.0, 0.2, 0.5)
    phase, conf = ph.classify(np.array([1.0, 3.0, 3.0, 1.0, 2.0001]), np.array([1.0, 1.0, 3.0, 3.0, 2.0001]), red, green)
    assert phase.tolist() == ["early-G1", "G1", "G1/S", "S/G2/M", "G1/S"]
    assert (conf[:4] > 0.99).all() and 0.25 <= conf[4] < 0.3


def test_depth_fit_ignores_composition(rng):
    """The fall with depth is recovered from the high class even when deeper nuclei are mostly low."""
    n = 4000
    z = rng.uniform(0, 100, n)
    high = rng.random(n) < np.interp(z, [0, 100], [0.7, 0.2])
    true = np.where(high, rng.normal(3.2, 0.12, n), rng.normal(1.6, 0.3, n))
    slope = -1.0 / (120.0 * np.log(10))  # exp(-z / 120 um)
    fit, t = fit_depth(true + slope * z, z, lambda v: ph.fit_threshold(v, "otsu"))
    assert fit.length_um == pytest.approx(120.0, rel=0.1)
    assert ((fit.correct(true + slope * z, z) > t.threshold) == high).mean() > 0.99


@pytest.fixture(scope="module")
def synth_small():
    return generate(SynthConfig(**SMALL), seed=11)


def _measured(res, method="local"):
    frames = [measure_nuclei(res.labels[t], res.images[t], [c.lower() for c in res.channels], voxel_size=res.voxel_size, method=method, t=t) for t in range(res.images.shape[0])]
    table = pd.concat(frames, ignore_index=True)
    truth = res.table[["t", "label", "phase"]].rename(columns={"phase": "truth"})
    return table.merge(truth, on=["t", "label"], validate="one_to_one")


def _lower(config):
    return config.model_copy(update={"channels": config.channels.model_copy(update={"red": "cy3", "green": "gfp", "nuclear": "hoechst"})})


def test_phases_on_a_synthetic_spheroid(synth_small):
    """True labels: phases well above chance; confidence is higher where calls are right."""
    table = _measured(synth_small)
    config = _lower(CellcycleConfig())
    model = fit_phase_model(table, config)
    out = apply_phase_model(table, model)
    truth = out["truth"].replace({"early G1": "early-G1"}).to_numpy()
    right = out["phase"].to_numpy() == truth
    assert right.mean() > 0.8
    assert out.loc[right, "confidence"].mean() > out.loc[~right, "confidence"].mean()
    assert set(out["phase"]) <= set(ph.PHASES) and not out["dead"].any()
    assert model.as_dict()["thresholds"]["red"]["intensity"] > 0


def test_fixed_thresholds_and_missing_values():
    with pytest.raises(ValueError, match="fixed"):
        ThresholdConfig(method="fixed", red=100.0)
    table = pd.DataFrame({"centroid_z": np.zeros(40), "cy3_median": np.r_[np.full(20, 50.0), np.full(20, 900.0)], "gfp_median": np.full(40, 10.0)})
    config = _lower(CellcycleConfig(threshold={"method": "fixed", "red": 200.0, "green": 300.0}))
    out = apply_phase_model(table, fit_phase_model(table, config))
    assert out["phase"].tolist() == ["early-G1"] * 20 + ["G1"] * 20


def test_dead_stain_flags_only_when_bimodal(rng):
    n = 400
    base = {"centroid_z": np.zeros(n), "cy3_median": rng.lognormal(6, 1, n), "gfp_median": rng.lognormal(6, 1, n)}
    dead = rng.random(n) < 0.2
    stain = np.where(dead, rng.lognormal(8, 0.2, n), rng.lognormal(3, 0.3, n))
    config = _lower(CellcycleConfig(channels={"dead": "draq7"}))
    config = config.model_copy(update={"channels": config.channels.model_copy(update={"dead": "draq7"})})
    out = apply_phase_model(pd.DataFrame({**base, "draq7_median": stain}), fit_phase_model(pd.DataFrame({**base, "draq7_median": stain}), config))
    assert (out["dead"].to_numpy() == dead).mean() > 0.99
    flat = pd.DataFrame({**base, "draq7_median": rng.lognormal(3, 0.3, n)})
    model = fit_phase_model(flat, config)
    assert not apply_phase_model(flat, model)["dead"].any() and "not bimodal" in model.notes[0]
    fractions = phase_fractions(out)
    flagged = int(out["dead"].sum())
    assert int(fractions["dead"].iloc[0]) == flagged and int(fractions["live"].iloc[0]) == n - flagged
    assert fractions[list(ph.PHASES)].sum(axis=1).iloc[0] == pytest.approx(1.0)


def test_track_summary_durations():
    table = pd.DataFrame(
        {
            "t": [0, 1, 2, 3, 4, 4, 5],
            "track_id": [1, 1, 1, 1, 2, 3, 2],
            "parent_track_id": [0, 0, 0, 0, 1, 1, 1],
            "phase": ["G1", "G1/S", "S/G2/M", "S/G2/M", "early-G1", "early-G1", "G1"],
        }
    )
    summary = track_summary(table, time_step_s=1800, n_timepoints=8).set_index("track_id")
    assert summary.loc[1, "phase_sequence"] == "G1 x1 > G1/S x1 > S/G2/M x2"
    assert summary.loc[1, "hours_S/G2/M"] == 1.0 and summary.loc[1, "divides"] and not summary.loc[1, "complete"]
    assert summary.loc[2, "hours_total"] == 1.0 and summary.loc[2, "parent_track_id"] == 1


def test_overexposed_nuclei_scaled_back(rng):
    """A nucleus 20x too bright in every channel keeps its phase: the nuclear stain shows the glow."""
    n = 3000
    phase = rng.integers(0, 4, n)  # PHASES order: early-G1, G1, G1/S, S/G2/M
    red = np.where(np.isin(phase, (1, 2)), 2000.0, 30.0) * rng.lognormal(0, 0.3, n)
    green = np.where(np.isin(phase, (2, 3)), 1500.0, 20.0) * rng.lognormal(0, 0.3, n)
    hoechst = 800.0 * rng.lognormal(0, 0.25, n)
    glow = rng.random(n) < 0.05
    gain = np.where(glow, 20.0, 1.0)
    table = pd.DataFrame(
        {"t": 0, "label": np.arange(1, n + 1), "centroid_z": rng.uniform(0, 50, n), "hoechst_median": hoechst * gain, "cy3_median": red * gain, "gfp_median": green * gain}
    )
    truth = np.asarray(ph.PHASES, dtype=object)[phase]
    config = _lower(CellcycleConfig())
    out = apply_phase_model(table, fit_phase_model(table, config))
    assert out["overexposed"].to_numpy()[glow].mean() > 0.95 and out["overexposed"].to_numpy()[~glow].mean() < 0.01
    assert (out["phase"].to_numpy()[glow] == truth[glow]).mean() > 0.9
    off = config.model_copy(update={"threshold": config.threshold.model_copy(update={"overexposed_sigma": None})})
    plain = apply_phase_model(table, fit_phase_model(table, off))
    assert not plain["overexposed"].any()
    assert (plain["phase"].to_numpy()[glow] == truth[glow]).mean() < 0.5  # without it, glowing nuclei look yellow

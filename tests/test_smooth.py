"""Phases along tracks: the HMM in the cycle's order (pipeline.cellcycle.smooth)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.cellcycle.phase import PHASES
from pipeline.cellcycle.smooth import phase_probabilities, smooth_tracks, transition_matrix
from pipeline.config.cellcycle import SmoothingConfig

# reporter states (red high, green high) of each phase, in PHASES order
STATES = {"early-G1": (0, 0), "G1": (1, 0), "G1/S": (1, 1), "S/G2/M": (0, 1)}


def _track(sequence: list[str], track_id: int, parent: int = 0, t0: int = 0, sure: float = 0.9) -> pd.DataFrame:
    red = np.array([STATES[p][0] for p in sequence], dtype=float)
    green = np.array([STATES[p][1] for p in sequence], dtype=float)
    p_red = np.where(red > 0, sure, 1 - sure)
    p_green = np.where(green > 0, sure, 1 - sure)
    phase = np.array(PHASES, dtype=object)[phase_probabilities(p_red, p_green).argmax(axis=1)]
    return pd.DataFrame({"t": np.arange(t0, t0 + len(sequence)), "track_id": track_id, "parent_track_id": parent, "p_red": p_red, "p_green": p_green, "phase": phase})


def test_transitions_only_go_forward():
    a = transition_matrix(SmoothingConfig(dwell_frames=4, off_order=1e-6, missed_division=0.0))
    assert np.allclose(a.sum(axis=1), 1)
    assert a[0, 1] == pytest.approx(0.25, rel=1e-4) and a[3, 3] == pytest.approx(1, rel=1e-4)
    assert np.all(a[np.tril_indices(4, -1)] < 1e-5)
    assert transition_matrix(SmoothingConfig())[3, 0] == pytest.approx(0.1, rel=1e-3)  # the default wraps round


def test_phase_probabilities_sum_to_one():
    rng = np.random.default_rng(0)
    p = phase_probabilities(rng.random(50), rng.random(50))
    assert np.allclose(p.sum(axis=1), 1) and p.shape == (50, 4)


def test_outlying_frames_follow_the_cycle():
    """Single frames misread against the cycle's order are put back in order; the rest is kept."""
    truth = ["early-G1"] * 3 + ["G1"] * 6 + ["G1/S"] * 3 + ["S/G2/M"] * 6
    observed = list(truth)
    observed[4] = "early-G1"  # a G1 frame read as early G1 after G1 had begun
    observed[14] = "G1/S"  # a frame of S/G2/M read as yellow
    observed[1] = "S/G2/M"  # a daughter's frame read as green
    table = _track(observed, 1, parent=7, t0=2)
    out = smooth_tracks(table, SmoothingConfig())
    assert out["phase_track"].tolist() == truth
    assert (out["phase"] != out["phase_track"]).sum() == 3
    assert out["confidence_track"].between(0, 1).all()


def test_tracks_are_decoded_apart_and_order_is_kept():
    a = _track(["G1"] * 5 + ["G1/S"] * 2 + ["S/G2/M"] * 5, 1)
    b = _track(["S/G2/M"] * 4, 2)
    c = _track(["early-G1"] * 4 + ["G1"] * 3, 3, parent=1, t0=12)
    table = pd.concat([c, a, b], ignore_index=True).sample(frac=1.0, random_state=0)
    out = smooth_tracks(table)
    assert out.index.equals(table.index)
    assert (out["phase_track"] == out["phase"]).all()  # clean calls in order are left alone


def test_smoothing_improves_calls_on_a_synthetic_timelapse():
    """On the synthetic spheroid (true tracks), the decoded phases are closer to the truth."""
    from pipeline.cellcycle.model import apply_phase_model, fit_phase_model
    from pipeline.cellcycle.nuclei import measure_nuclei
    from pipeline.config.cellcycle import CellcycleConfig
    from pipeline.config.synth import SynthConfig
    from pipeline.synth import generate

    res = generate(SynthConfig(shape=(10, 128, 128), n_nuclei=150, n_timepoints=8), seed=3)
    names = ["hoechst", "cy3", "gfp"]
    table = pd.concat([measure_nuclei(res.labels[t], res.images[t], names, voxel_size=res.voxel_size, t=t) for t in range(8)], ignore_index=True)
    config = CellcycleConfig(channels={"nuclear": "hoechst", "red": "cy3", "green": "gfp"})
    table = apply_phase_model(table, fit_phase_model(table, config))
    truth = res.table[["t", "label", "track_id", "parent_track_id", "phase"]].rename(columns={"phase": "truth"})
    table = table.merge(truth, on=["t", "label"])
    out = smooth_tracks(table)
    want = out["truth"].replace({"early G1": "early-G1"})
    single, decoded = (out["phase"] == want).mean(), (out["phase_track"] == want).mean()
    assert decoded > single


def test_a_missed_division_wraps_round_only_when_allowed():
    """A track that runs on through a division the tracker missed (green, then colourless, then red)."""
    truth = ["S/G2/M"] * 4 + ["early-G1"] * 3 + ["G1"] * 4
    table = _track(truth, 1, sure=0.95)
    assert smooth_tracks(table, SmoothingConfig(missed_division=0.05))["phase_track"].tolist() == truth
    assert smooth_tracks(table, SmoothingConfig(missed_division=0.0))["phase_track"].tolist() != truth
    a = transition_matrix(SmoothingConfig(missed_division=0.05))
    assert a[3, 0] == pytest.approx(0.05, rel=1e-3) and np.allclose(a.sum(axis=1), 1)

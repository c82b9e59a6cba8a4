"""Phases along each track: a hidden Markov model with the cell cycle's order (Viterbi).

A single frame's call (:mod:`pipeline.cellcycle.phase`) sees one nucleus once; along a
track the phases must follow the cycle, ``early-G1 -> G1 -> G1/S -> S/G2/M`` and then
division (which starts two new tracks in early G1). As in FUCCI practice (fucciphase,
Zielinski et al.; Jaqaman-style trackers followed by an HMM over the track), each track's
sequence of per-frame phase probabilities is decoded by an HMM (hmmlearn's Viterbi) whose
hidden states are the four phases and whose transitions only go forward:

* transitions: stay with probability ``1 - 1/dwell_frames``, step to the next phase with
  ``1/dwell_frames``; every other move (backwards, or skipping a phase) has probability
  ``off_order`` (a tracking error can put two nuclei in one track), and S/G2/M stays
  unless ``missed_division`` lets the cycle wrap round to early G1 (a division the
  tracker missed continues the mother's track into a daughter);
* emissions: the single-frame probability of each phase (``P(red state) x P(green state)``
  from the two-Gaussian model of each reporter), mixed with a uniform ``error_rate``:
  ``(1 - error_rate) P(phase | frame) + error_rate / 4``. The mixture says that a frame
  may be misread whatever its confidence (a neighbour's glow, a merged nucleus), so one
  outlying frame does not drag the whole path forward;
* start: a track born by division (``parent_track_id > 0``, not at the first time point)
  starts in early G1 with probability ``birth_early_g1``; other tracks start with the
  phase fractions of the single-frame calls.

The decoded phase is written as ``phase_track``; ``confidence_track`` is its posterior
marginal (forward-backward) under the same model.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from pipeline.cellcycle.phase import PHASES
from pipeline.config.cellcycle import SmoothingConfig

LOG = logging.getLogger(__name__)

PROBABILITY_COLUMNS = ("p_red", "p_green")
"""Per-nucleus posterior that the red (green) reporter is in its high state, written by
``spheroid cellcycle``; the phase probabilities are their products."""


def phase_probabilities(p_red: np.ndarray, p_green: np.ndarray) -> np.ndarray:
    """``(N, 4)`` probability of each phase in :data:`PHASES` order from the two reporters' states."""
    r = np.clip(np.asarray(p_red, dtype=np.float64), 0.0, 1.0)
    g = np.clip(np.asarray(p_green, dtype=np.float64), 0.0, 1.0)
    return np.stack([(1 - r) * (1 - g), r * (1 - g), r * g, (1 - r) * g], axis=1)


def transition_matrix(config: SmoothingConfig) -> np.ndarray:
    """The ``(4, 4)`` forward-only transition matrix (rows sum to 1)."""
    leave = 1.0 / float(config.dwell_frames)
    a = np.full((4, 4), float(config.off_order))
    for k in range(3):
        a[k, k], a[k, k + 1] = 1.0 - leave, leave
    wrap = float(config.missed_division)
    a[3, 3] = 1.0 - wrap
    if wrap > 0:
        a[3, 0] = wrap
    return a / a.sum(axis=1, keepdims=True)


def _hmm(config: SmoothingConfig):
    from hmmlearn.base import BaseHMM

    class _FixedEmissionHMM(BaseHMM):
        """An HMM whose observations are the per-state log emission probabilities themselves."""

        def _check_and_set_n_features(self, X):
            self.n_features = X.shape[1]

        def _compute_log_likelihood(self, X):
            return X

        def _get_n_fit_scalars_per_param(self):  # pragma: no cover - never fitted
            return {}

    model = _FixedEmissionHMM(n_components=len(PHASES), implementation="log", params="", init_params="")
    model.startprob_ = np.full(len(PHASES), 1.0 / len(PHASES))
    model.transmat_ = transition_matrix(config)
    return model


def smooth_tracks(table: pd.DataFrame, config: SmoothingConfig | None = None) -> pd.DataFrame:
    """``phase_track`` and ``confidence_track`` for every nucleus of a tracked table.

    Parameters
    ----------
    table : pandas.DataFrame
        Nuclei with ``t``, ``track_id``, ``parent_track_id``, ``p_red``, ``p_green`` and
        ``phase`` (the single-frame call); a ``track_id`` of 0 (untracked) is decoded alone.
    config : SmoothingConfig, optional
        Model settings (see the module docstring).

    Returns
    -------
    pandas.DataFrame
        ``table`` (same order and index) with ``phase_track`` and ``confidence_track``.
    """
    config = config or SmoothingConfig()
    out = table.copy()
    if not len(out):
        out["phase_track"] = pd.Series(dtype=object)
        out["confidence_track"] = pd.Series(dtype=np.float64)
        return out
    probs = phase_probabilities(out["p_red"].to_numpy(), out["p_green"].to_numpy())
    emission = np.log((1.0 - config.error_rate) * probs + config.error_rate / len(PHASES))
    # one sequence per track, in time order; untracked nuclei (track 0) are sequences of one
    track = out["track_id"].to_numpy(dtype=np.int64)
    key = np.where(track > 0, track, -(np.arange(len(out)) + 1))
    order = np.lexsort((out["t"].to_numpy(), key))
    key_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    lengths = np.diff(np.r_[starts, len(order)])
    # start prior folded into each sequence's first frame (hmmlearn has one start vector)
    counts = pd.Series(out["phase"]).value_counts() if "phase" in out else pd.Series(dtype=float)
    fractions = np.array([counts.get(p, 0) for p in PHASES], dtype=np.float64) + 1.0
    fractions /= fractions.sum()
    first = order[starts]
    t_first = int(out["t"].min())
    born = (out["parent_track_id"].to_numpy()[first] > 0) & (out["t"].to_numpy()[first] > t_first)
    birth = np.array([config.birth_early_g1] + [(1.0 - config.birth_early_g1) / 3.0] * 3)
    x = emission[order]
    x[starts] += np.where(born[:, None], np.log(birth)[None, :], np.log(fractions)[None, :])
    hmm = _hmm(config)
    _, states = hmm.decode(x, lengths=lengths, algorithm="viterbi")
    posterior = hmm.predict_proba(x, lengths=lengths)
    phase = np.empty(len(out), dtype=object)
    confidence = np.empty(len(out), dtype=np.float64)
    phase[order] = np.asarray(PHASES, dtype=object)[states]
    confidence[order] = posterior[np.arange(len(states)), states]
    out["phase_track"] = phase
    out["confidence_track"] = confidence
    changed = float(np.mean(out["phase_track"].to_numpy() != out["phase"].to_numpy())) if "phase" in out else float("nan")
    LOG.info("phases along %d track(s): %.1f %% of calls changed", len(lengths), 100 * changed)
    return out

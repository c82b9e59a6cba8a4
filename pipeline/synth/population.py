"""The simulated cells: cell cycle, FUCCI levels, size, motion and divisions.

Everything here is in physical units (micrometres, ``(z, y, x)`` order) and time
points; :mod:`pipeline.synth.packing` places the cells in the spheroid and
:mod:`pipeline.synth.render` turns them into voxels. The cells are a struct of
arrays (:class:`Cells`) so that every update is vectorised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace

import numpy as np

from pipeline.config.synth import SynthConfig
from pipeline.synth.packing import Spheroid, stack_box, uniform_in

LOG = logging.getLogger(__name__)

PHASES = ("early G1", "G1", "G1/S", "S/G2/M")
"""Phase names in cycle order; ``Cells.phase`` holds their index."""
EARLY_G1, G1, G1_S, S_G2_M = range(4)
MITOSIS = 0.08
"""Last fraction of S/G2/M spent in mitosis: chromatin condenses into a smaller, rounder,
brighter (Hoechst) nucleus just before division."""


@dataclass
class Cells:
    """State of all simulated nuclei (one entry per living cell, arrays of equal length)."""

    track: np.ndarray
    """Track id (int64, from 1); also the nucleus' label value."""
    parent: np.ndarray
    """Track id of the mother (0 for cells present at the start)."""
    pos: np.ndarray
    """Centre ``(N, 3)`` in um, ``(z, y, x)``, z = 0 at the first slice."""
    vel: np.ndarray
    """Velocity ``(N, 3)`` in um per time point (persistent random walk)."""
    size: np.ndarray
    """Diameter (um) the nucleus reaches just before dividing."""
    elong: np.ndarray
    """Long-to-short axis ratio in x/y."""
    zratio: np.ndarray
    """z semi-axis relative to the x/y mean."""
    angle: np.ndarray
    """Orientation of the long axis in the y/x plane (radians)."""
    phase: np.ndarray
    """Phase index into :data:`PHASES` (int8)."""
    age: np.ndarray
    """Time points spent in the current phase."""
    durations: np.ndarray
    """``(N, 4)`` this cell's duration of each phase (time points)."""
    bright: np.ndarray
    """``(N, 3)`` per-channel brightness factors (log-normal, mean 1)."""
    glow: np.ndarray
    """Brightness gain: 1 for normal nuclei, large for glowing (over-exposed) ones."""
    arrest: np.ndarray
    """Depth below the spheroid surface (um) beyond which this cell stops in G1 (inf: never)."""

    def __len__(self) -> int:
        return int(self.track.size)

    def take(self, index: np.ndarray) -> "Cells":
        """The cells selected by ``index`` (boolean mask or integer indices)."""
        return Cells(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list["Cells"]) -> "Cells":
        """All cells of ``parts`` in order."""
        return Cells(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Cells)})

# -- cell properties -----------------------------------------------------------------------


def _lognormal(rng: np.random.Generator, cv: float, size) -> np.ndarray:
    sigma = np.sqrt(np.log1p(cv**2))
    return rng.lognormal(-(sigma**2) / 2.0, sigma, size=size)


def _durations(config: SynthConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    p = config.phases
    mean = np.array([p.early_g1, p.g1, p.g1_s, p.s_g2_m])
    return mean[None, :] * _lognormal(rng, p.cv, (n, 4))


def _new_arrest(config: SynthConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    if config.arrest_depth_um is None:
        return np.full(n, np.inf)
    return config.arrest_depth_um * _lognormal(rng, 0.2, n)


def _new_glow(config: SynthConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    glowing = rng.random(n) < config.glowing_fraction
    return np.where(glowing, rng.uniform(*config.glowing_gain, size=n), 1.0)


def cycle_fraction(cells: Cells) -> np.ndarray:
    """Progress through the whole cycle, 0 at birth and 1 at division."""
    before = np.cumsum(cells.durations, axis=1) - cells.durations
    n = len(cells)
    done = before[np.arange(n), cells.phase] + np.minimum(cells.age, cells.durations[np.arange(n), cells.phase])
    return np.clip(done / cells.durations.sum(axis=1), 0.0, 1.0)


def phase_progress(cells: Cells) -> np.ndarray:
    """Progress through the current phase, in [0, 1]."""
    return np.clip(cells.age / cells.durations[np.arange(len(cells)), cells.phase], 0.0, 1.0)


def diameters(cells: Cells, config: SynthConfig) -> np.ndarray:
    """Current equivalent diameter (um): the volume doubles from birth to division."""
    growth = ((1.0 + cycle_fraction(cells)) / 2.0) ** (1.0 / 3.0)
    return np.clip(cells.size * growth, *config.nucleus_diameter_um)


def mitotic(cells: Cells) -> np.ndarray:
    """Cells in the mitotic end of S/G2/M (see :data:`MITOSIS`)."""
    return (cells.phase == S_G2_M) & (phase_progress(cells) > 1.0 - MITOSIS)


def semi_axes(cells: Cells, config: SynthConfig) -> np.ndarray:
    """``(N, 3)`` semi-axes in um: z, the long x/y axis, the short x/y axis (same volume as the
    diameter; mitotic nuclei are condensed to 85 % and round)."""
    condensed = mitotic(cells)
    r = diameters(cells, config) / 2.0 * np.where(condensed, 0.85, 1.0)
    scale = cells.zratio ** (-1.0 / 3.0)
    root = np.sqrt(np.where(condensed, 1.0, cells.elong))
    return np.stack([r * cells.zratio * scale, r * root * scale, r / root * scale], axis=1)


def fucci_levels(cells: Cells, hoechst_g2_gain: float) -> np.ndarray:
    """``(N, 3)`` relative expression of Hoechst, Cy3 and GFP from phase and progress.

    Cy3 (Cdt1) ramps up early in G1 and fades through G1/S, down to the level early G1
    ends at (0.1) when S/G2/M begins, then to nothing within the first fifth of S/G2/M;
    GFP (Geminin) rises through G1/S and saturates early in S/G2/M; both are low in
    early G1 (the reporters are degraded at mitosis). Hoechst grows with DNA content
    through S/G2/M and is brighter still in condensed mitotic chromatin.

    The phases are the FUCCI read-out's (G1/S is the yellow window, both reporters
    visible; S/G2/M green only), so Cdt1 is gone by the time S/G2/M begins, as in the
    reference curve fucciphase fitted on HaCaT FUCCI cells (``fuccisa_hacat.json``,
    fucciphase 0.0.3 examples, BSD-3: Cdt1 falls with centre 39.8 % and width 4.7 % of
    the cycle, down to 2 % of its peak at the G1/S -> S/G2/M boundary at 55 %) and in
    Sakaue-Sawano et al., Cell 2008 (the yellow G1/S transition is followed by green
    S/G2/M). Earlier versions faded the red from 0.45 to 0 over the first fifth of S/G2/M,
    which labelled visibly yellow nuclei S/G2/M (docs/CELLCYCLE.md).
    """
    p = phase_progress(cells)
    ph = cells.phase
    cy3 = np.select(
        [ph == EARLY_G1, ph == G1, ph == G1_S],
        [0.12 * p, 0.3 + 0.7 * np.minimum(1.0, p / 0.35), 1.0 - 0.9 * p],
        default=0.1 * np.clip(1.0 - p / 0.2, 0.0, 1.0),
    )
    gfp = np.select(
        [ph == EARLY_G1, ph == G1, ph == G1_S],
        [0.06 * (1.0 - p), np.zeros_like(p), 0.35 + 0.4 * p],
        default=0.75 + 0.25 * np.minimum(1.0, p / 0.3),
    )
    hoechst = (1.0 + hoechst_g2_gain * np.where(ph == S_G2_M, p, 0.0)) * np.where(mitotic(cells), 1.5, 1.0)
    return np.stack([hoechst, cy3, gfp], axis=1)


# -- creation and time steps ---------------------------------------------------------------

def init_cells(config: SynthConfig, spheroid: Spheroid, n: int, rng: np.random.Generator) -> Cells:
    """``n`` cells at random positions in the spheroid and random points of their cycle (unrelaxed)."""
    lo, hi = stack_box(config)
    durations = _durations(config, rng, n)
    mean = durations.mean(axis=0)
    phase = rng.choice(4, size=n, p=mean / mean.sum()).astype(np.int8)
    age = rng.random(n) * durations[np.arange(n), phase]
    d_lo, d_hi = config.nucleus_diameter_um
    return Cells(
        track=np.arange(1, n + 1, dtype=np.int64),
        parent=np.zeros(n, dtype=np.int64),
        pos=uniform_in(spheroid, lo, hi, n, rng),
        vel=rng.normal(0.0, config.motion_um, size=(n, 3)),
        size=rng.uniform(d_lo, d_hi, size=n) / 0.9,
        elong=rng.uniform(*config.elongation, size=n),
        zratio=rng.uniform(*config.z_ratio, size=n),
        angle=rng.uniform(0.0, np.pi, size=n),
        phase=phase,
        age=age,
        durations=durations,
        bright=_lognormal(rng, config.brightness_cv, (n, 3)),
        glow=_new_glow(config, rng, n),
        arrest=_new_arrest(config, rng, n),
    )


def drug_arrest(cells: Cells, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Arrest a random ``fraction`` of the cells in G1 for good (in place); returns the mask.

    An arrested cell's ``arrest`` depth becomes ``-inf``, so :func:`quiescent` holds it
    wherever it is; :func:`settle_core` then puts it in late G1.
    """
    hit = rng.random(len(cells)) < fraction
    cells.arrest[hit] = -np.inf
    return hit


def quiescent(cells: Cells, spheroid: Spheroid) -> np.ndarray:
    """Cells deep enough in the spheroid core to stop cycling in G1."""
    return spheroid.depth(cells.pos) > cells.arrest


def settle_core(cells: Cells, spheroid: Spheroid) -> None:
    """Put the quiescent core of a starting population in late G1 (in place)."""
    core = quiescent(cells, spheroid)
    cells.phase[core] = G1
    cells.age[core] = cells.durations[core, G1]


def advance(
    cells: Cells,
    config: SynthConfig,
    rng: np.random.Generator,
    next_track: int,
    spheroid: Spheroid | None = None,
    *,
    crowded: bool = False,
) -> tuple[Cells, int, int]:
    """One time step: cycle progression, divisions and motion (overlaps are left to
    :func:`pipeline.synth.packing.relax`).

    With ``spheroid``, cells of its quiescent core (:func:`quiescent`) do not leave G1;
    with ``crowded`` (the region is full: contact inhibition) no cell leaves G1.

    Returns
    -------
    cells : Cells
        The new population (daughters appended at the end, mothers removed).
    next_track : int
        The next unused track id.
    n_divisions : int
        How many cells divided in this step.
    """
    cells = replace(cells, age=cells.age + 1.0, phase=cells.phase.copy())
    divide = np.zeros(len(cells), dtype=bool)
    core = quiescent(cells, spheroid) if spheroid is not None else np.zeros(len(cells), dtype=bool)
    if crowded:
        core[:] = True
    for _ in range(8):  # a fast cycle may cross several phases in one step
        idx = np.arange(len(cells))
        over = (~divide) & (cells.age >= cells.durations[idx, np.minimum(cells.phase, 3)])
        over &= ~(core & (cells.phase == G1))
        if not over.any():
            break
        cells.age[over] -= cells.durations[idx[over], cells.phase[over]]
        cells.phase[over] += 1
        ended = cells.phase == 4
        if config.division:
            divide |= ended
        else:  # no division: the cycle restarts in the same nucleus
            cells.phase[ended] = EARLY_G1
    cells.phase[divide] = S_G2_M  # mothers keep their last phase until they are replaced
    stuck = core & (cells.phase == G1)
    cells.age[stuck] = np.minimum(cells.age[stuck], cells.durations[stuck, G1])
    # motion: a persistent random walk, and a small turn of the long axis
    p = config.motion_persistence
    vel = p * cells.vel + np.sqrt(1.0 - p**2) * rng.normal(0.0, config.motion_um, size=cells.vel.shape)
    cells = replace(
        cells,
        vel=vel,
        pos=cells.pos + vel,
        angle=cells.angle + np.deg2rad(config.rotation_deg) * rng.standard_normal(len(cells)),
    )
    n_div = int(divide.sum())
    if n_div == 0:
        return cells, next_track, 0
    mothers = cells.take(divide)
    daughters = _daughters(mothers, config, rng, next_track)
    return Cells.concat([cells.take(~divide), daughters]), next_track + 2 * n_div, n_div


def _daughters(mothers: Cells, config: SynthConfig, rng: np.random.Generator, first_track: int) -> Cells:
    """Two early-G1 daughters per mother, side by side along a random axis at the mother's place."""
    n = len(mothers)
    twice = np.repeat(np.arange(n), 2)
    kids = mothers.take(twice)
    m = 2 * n
    direction = rng.normal(size=(n, 3))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
    newborn = np.clip(mothers.size * 0.5 ** (1.0 / 3.0), *config.nucleus_diameter_um)
    offset = 0.5 * config.contact * newborn[:, None] * direction
    sign = np.tile([1.0, -1.0], n)[:, None]
    durations = _durations(config, rng, m)
    return Cells(
        track=np.arange(first_track, first_track + m, dtype=np.int64),
        parent=mothers.track[twice],
        pos=kids.pos + sign * offset[twice],
        vel=kids.vel + 0.3 * sign * offset[twice],
        size=kids.size * _lognormal(rng, 0.05, m),
        elong=rng.uniform(*config.elongation, size=m),
        zratio=rng.uniform(*config.z_ratio, size=m),
        angle=rng.uniform(0.0, np.pi, size=m),
        phase=np.full(m, EARLY_G1, dtype=np.int8),
        age=np.zeros(m),
        durations=durations,
        bright=kids.bright * _lognormal(rng, 0.1, (m, 3)),
        glow=_new_glow(config, rng, m),
        arrest=_new_arrest(config, rng, m),
    )

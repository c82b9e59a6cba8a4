"""Spheroid geometry and the packing of nuclei in it (physical units, ``(z, y, x)`` in um).

The spheroid is an ellipsoid; nuclei are packed by soft-sphere relaxation: pairs
closer than ``contact * (r_i + r_j)`` are pushed apart, centres are kept inside the
spheroid and the simulated box. Each pass is vectorised over neighbour pairs
found with a k-d tree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from pipeline.config.synth import SynthConfig
from pipeline.errors import ConfigError

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spheroid:
    """An ellipsoidal spheroid: centre and semi-axes ``(z, y, x)`` in um."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]

    def rho(self, points: np.ndarray, shrink: np.ndarray | float = 0.0) -> np.ndarray:
        """Normalised radius of ``points`` (N, 3): < 1 inside; ``shrink`` (um) shrinks the semi-axes."""
        radii = np.maximum(np.asarray(self.radii)[None, :] - np.asarray(shrink, dtype=float).reshape(-1, 1), 1e-3)
        return np.sqrt((((points - np.asarray(self.center)) / radii) ** 2).sum(axis=1))

    def depth(self, points: np.ndarray) -> np.ndarray:
        """Approximate distance (um) of ``points`` below the spheroid surface (0 outside)."""
        return np.clip(1.0 - self.rho(points), 0.0, None) * min(self.radii)

    def grown(self, volume_factor: float, bottom: float) -> "Spheroid":
        """The spheroid with its volume scaled by ``volume_factor``, its lowest point kept at ``bottom``."""
        scale = float(volume_factor) ** (1.0 / 3.0)
        radii = tuple(r * scale for r in self.radii)
        return Spheroid(center=(bottom + radii[0], self.center[1], self.center[2]), radii=radii)


def stack_box(config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """The region (um) where cells live: the imaged stack plus one nucleus radius on every side."""
    shape = np.asarray(config.shape, dtype=float)
    voxel = np.asarray(config.voxel_size, dtype=float)
    margin = config.nucleus_diameter_um[1] / 2.0
    return -voxel / 2.0 - margin, (shape - 0.5) * voxel + margin


MAX_PACKING = 0.5
"""Nuclear volume fraction at which the simulated region counts as full (contact inhibition)."""


def capacity(config: SynthConfig, spheroid: Spheroid) -> int:
    """How many nuclei fit in the simulated region of ``spheroid`` at :data:`MAX_PACKING`."""
    lo, hi = stack_box(config)
    return int(_region_volume(spheroid, lo, hi) * max(MAX_PACKING, config.packing) / mean_nucleus_volume(config))


def _region_volume(spheroid: Spheroid, lo: np.ndarray, hi: np.ndarray, n: int = 48) -> float:
    """Volume (um^3) of the spheroid inside the box ``[lo, hi]`` (midpoint rule on an n^3 grid)."""
    c, r = np.asarray(spheroid.center), np.asarray(spheroid.radii)
    a, b = np.maximum(lo, c - r), np.minimum(hi, c + r)
    if np.any(b <= a):
        return 0.0
    axes = [a[i] + (np.arange(n) + 0.5) * (b[i] - a[i]) / n for i in range(3)]
    z, y, x = (((axes[i] - c[i]) / r[i]) ** 2 for i in range(3))
    inside = (z[:, None, None] + y[None, :, None] + x[None, None, :]) < 1.0
    return float(inside.mean() * np.prod(b - a))


def mean_nucleus_volume(config: SynthConfig) -> float:
    """Mean nucleus volume (um^3) over the diameter range and a cycle's growth."""
    lo, hi = config.nucleus_diameter_um
    d3 = (hi**4 - lo**4) / (4 * (hi - lo)) if hi > lo else lo**3
    return float(np.pi / 6.0 * d3 * 0.75)  # growth (1+f)/2 averages 3/4 of the final volume


def initial_geometry(config: SynthConfig) -> tuple[Spheroid, int]:
    """The spheroid at the first time point and the number of nuclei in the stack region.

    ``n_nuclei`` and ``spheroid_radius_um`` are used as given; a missing one is
    derived from the other through ``packing`` (a missing radius is found by bisection);
    with neither the radius is 36 % of the field width.
    """
    lo, hi = stack_box(config)
    field = min(config.shape[1] * config.voxel_size[1], config.shape[2] * config.voxel_size[2])
    centre_yx = (config.shape[1] - 1) * config.voxel_size[1] / 2.0, (config.shape[2] - 1) * config.voxel_size[2] / 2.0

    def make(radius: float) -> Spheroid:
        rz = radius * config.spheroid_flattening
        return Spheroid(center=(config.spheroid_bottom_um + rz, *centre_yx), radii=(rz, radius, radius))

    per_nucleus = mean_nucleus_volume(config) / config.packing
    radius = config.spheroid_radius_um
    if radius is None and config.n_nuclei is not None:
        target = config.n_nuclei * per_nucleus
        low, high = 1.0, 10.0 * field
        for _ in range(40):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if _region_volume(make(mid), lo, hi) < target else (low, mid)
        radius = high
    elif radius is None:
        radius = 0.36 * field
    spheroid = make(radius)
    region = _region_volume(spheroid, lo, hi)
    if region <= 0:
        raise ConfigError(
            f"synth config: key 'spheroid_bottom_um': the spheroid (lowest point {config.spheroid_bottom_um} um, "
            f"radius {radius:.0f} um) does not reach the imaged stack"
        )
    n = config.n_nuclei if config.n_nuclei is not None else max(1, int(round(region / per_nucleus)))
    return spheroid, n


def uniform_in(spheroid: Spheroid, lo: np.ndarray, hi: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3)`` points drawn uniformly from the spheroid inside the box ``[lo, hi]`` (rejection sampling)."""
    c, r = np.asarray(spheroid.center), np.asarray(spheroid.radii)
    a, b = np.maximum(lo, c - r), np.minimum(hi, c + r)
    out: list[np.ndarray] = []
    total = 0
    while total < n:
        pts = rng.uniform(a, b, size=(max(64, 2 * (n - total)), 3))
        pts = pts[spheroid.rho(pts) < 1.0]
        out.append(pts)
        total += len(pts)
    return np.concatenate(out)[:n]


def relax(
    pos: np.ndarray,
    radius: np.ndarray,
    spheroid: Spheroid,
    box: tuple[np.ndarray, np.ndarray],
    contact: float,
    iterations: int,
    tol: float = 0.05,
) -> np.ndarray:
    """Push overlapping nuclei apart and keep them inside the spheroid and the box.

    Nuclei are treated as spheres of ``radius`` (um); a pair closer than
    ``contact * (r_i + r_j)`` is moved apart symmetrically along the line joining
    them. Touching pairs stay touching, so a dense start gives packed nuclei.

    Returns
    -------
    numpy.ndarray
        The new ``(N, 3)`` positions.
    """
    pos = np.array(pos, dtype=float)
    if len(pos) == 0:
        return pos
    reach = 2.0 * contact * float(radius.max())
    lo, hi = box
    for _ in range(iterations):
        pairs = cKDTree(pos).query_pairs(reach, output_type="ndarray")
        moved = False
        if len(pairs):
            i, j = pairs[:, 0], pairs[:, 1]
            delta = pos[j] - pos[i]
            dist = np.linalg.norm(delta, axis=1)
            over = contact * (radius[i] + radius[j]) - dist
            hit = over > tol
            if hit.any():
                moved = True
                i, j, delta, dist, over = i[hit], j[hit], delta[hit], dist[hit], over[hit]
                direction = delta / np.maximum(dist, 1e-6)[:, None]
                direction[dist < 1e-6] = (1.0, 0.0, 0.0)
                step = 0.5 * over[:, None] * direction
                n = len(pos)
                for ax in range(3):
                    pos[:, ax] += np.bincount(j, step[:, ax], minlength=n) - np.bincount(i, step[:, ax], minlength=n)
        pos = confine(pos, radius, spheroid, lo, hi)
        if not moved:
            break
    return pos


def confine(pos: np.ndarray, radius: np.ndarray, spheroid: Spheroid, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Pull centres back inside the spheroid (shrunk by each nucleus' radius) and the box."""
    c = np.asarray(spheroid.center)
    rho = spheroid.rho(pos, shrink=radius)
    out = rho > 1.0
    if out.any():
        pos[out] = c + (pos[out] - c) / rho[out, None]
    return np.clip(pos, lo, hi)

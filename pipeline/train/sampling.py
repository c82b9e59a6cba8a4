"""Patch sampling that over-samples the rare classes (edge, nucleus).

A share ``foreground_fraction`` of the patches is centred on a random edge or
nucleus voxel (edges with probability ``edge_fraction``), the rest is placed
uniformly; volumes are drawn uniformly. All randomness comes from one
``numpy.random.Generator`` whose state the training checkpoint stores, so a
resumed run draws the same patches as an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from pipeline.train.data import Volume

LOG = logging.getLogger(__name__)


class PatchSampler:
    """Draws ``(image, target)`` patches from in-memory volumes.

    Parameters
    ----------
    volumes : sequence of Volume
        Padded to at least ``patch_size`` (see :func:`pipeline.train.data.load_volumes`).
    patch_size : sequence of int
        ``(z, y, x)``.
    foreground_fraction : float
        Share of patches centred on an edge or nucleus voxel.
    edge_fraction : float
        Of those, the share centred on an edge voxel.
    """

    def __init__(self, volumes: Sequence[Volume], patch_size: Sequence[int], foreground_fraction: float = 0.67, edge_fraction: float = 0.5):
        if not volumes:
            raise ValueError("no volumes to sample from")
        self.volumes = list(volumes)
        self.patch = tuple(int(p) for p in patch_size)
        for v in self.volumes:
            if any(s < p for s, p in zip(v.semantic.shape, self.patch)):
                raise ValueError(f"volume {v.id!r} of shape {v.semantic.shape} is smaller than the patch {self.patch}; pad it")
        self.foreground_fraction = float(foreground_fraction)
        self.edge_fraction = float(edge_fraction)

    def _corner(self, vol: Volume, rng: np.random.Generator) -> tuple[int, int, int]:
        shape = vol.semantic.shape
        centred = rng.random() < self.foreground_fraction
        cls = 1 if rng.random() < self.edge_fraction else 2
        idx = vol.centres.get(cls, np.empty(0, np.int64))
        if centred and idx.size == 0:  # no voxel of that class: try the other one
            idx = vol.centres.get(3 - cls, np.empty(0, np.int64))
        if centred and idx.size:
            centre = np.unravel_index(int(idx[rng.integers(idx.size)]), shape)
            # the centre voxel lands anywhere in the middle half of the patch
            jitter = [int(rng.integers(-(p // 4), p // 4 + 1)) for p in self.patch]
            return tuple(int(np.clip(c - p // 2 + j, 0, s - p)) for c, p, j, s in zip(centre, self.patch, jitter, shape))
        return tuple(int(rng.integers(0, s - p + 1)) for s, p in zip(shape, self.patch))

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One patch: image ``(channels, z, y, x)`` float32, target ``(z, y, x)`` int64 and the
        centre target ``(z, y, x)`` float32 (``None`` when the volumes have none)."""
        vol = self.volumes[int(rng.integers(len(self.volumes)))]
        z, y, x = self._corner(vol, rng)
        pz, py, px = self.patch
        window = (slice(z, z + pz), slice(y, y + py), slice(x, x + px))
        dist = vol.centre[window].astype(np.float32) if vol.centre is not None else None
        return vol.image[(slice(None),) + window].copy(), vol.semantic[window].astype(np.int64), dist

"""How large the nuclei of instance labels are: one diameter (equivalent sphere) and one per axis.

A model card states both for its training nuclei (``nucleus_diameter_um``,
``nucleus_diameters_um``); ``spheroid segment --diameter`` compares the data's nuclei with
them, and a training set records them per item (``spheroid trainset info``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["NucleusSizes", "nucleus_sizes", "typical_diameters"]

#: Label ids from this value up are renumbered 1..N first (per-id tables stay small).
SPARSE_IDS = 1 << 20


@dataclass(frozen=True)
class NucleusSizes:
    """Per nucleus of one label volume: volume (um^3), axes (um, ``(3, n)``), and whether it is
    clear of the volume's border."""

    volume_um3: np.ndarray
    axes_um: np.ndarray
    interior: np.ndarray


def nucleus_sizes(labels: np.ndarray, voxel_size: Sequence[float]) -> NucleusSizes:
    """Volume and per-axis diameters of every nucleus of ``labels`` (``(z, y, x)`` ids, 0 background).

    Along the finely sampled axes, a nucleus' diameter is the axis of the ellipsoid with its second
    moments (``sqrt(20 var)``); along the most coarsely sampled one (z at 5 um, where a nucleus spans
    two slices and its moments depend on where the slices cut it), the axis that gives that
    ellipsoid the nucleus' volume.
    """
    voxel = np.asarray(voxel_size, float)
    if labels.size and int(labels.max()) >= SPARSE_IDS:  # ids such as 4e9: renumber, so that tables are per nucleus
        ids, compact = np.unique(labels, return_inverse=True)
        labels = (compact.reshape(labels.shape) + (ids[0] != 0)).astype(np.uint32)
    counts = np.bincount(labels.ravel())
    ids = np.flatnonzero(counts)
    ids = ids[ids > 0]
    border = np.zeros(counts.size, bool)
    for axis in range(3):
        for index in (0, -1):
            border[np.unique(np.take(labels, index, axis=axis))] = True
    n = counts[ids].astype(float)
    volume = n * float(np.prod(voxel))
    coarse = int(np.argmax(voxel))
    # first and second moments per label and axis, one z-slice at a time (memory flat in the volume)
    s1 = np.zeros((3, counts.size))
    s2 = np.zeros((3, counts.size))
    yy, xx = (np.broadcast_to(c, labels.shape[1:]).ravel().astype(float) for c in np.indices(labels.shape[1:], sparse=True))
    for z in range(labels.shape[0]):
        flat = np.ascontiguousarray(labels[z]).ravel()
        per_slice = np.bincount(flat, minlength=counts.size).astype(float)
        s1[0] += per_slice * z
        s2[0] += per_slice * z * z
        for axis, c in ((1, yy), (2, xx)):
            s1[axis] += np.bincount(flat, c, minlength=counts.size)
            s2[axis] += np.bincount(flat, c * c, minlength=counts.size)
    axes = np.zeros((3, ids.size))
    for axis in range(3):
        if axis == coarse:
            continue
        mean = s1[axis, ids] / n
        var = s2[axis, ids] / n - mean**2
        axes[axis] = np.sqrt(20.0 * np.maximum(var, 1.0 / 12.0)) * voxel[axis]
    if ids.size:
        axes[coarse] = 6.0 * volume / np.pi / np.prod(np.delete(axes, coarse, axis=0), axis=0)
    return NucleusSizes(volume_um3=volume, axes_um=axes, interior=~border[ids])


def typical_diameters(sizes: Sequence[NucleusSizes], *, min_interior: int = 10) -> tuple[float, list[float]] | None:
    """The median nucleus of several volumes: ``(diameter, [dz, dy, dx])`` in um.

    The diameter is the equivalent sphere of the median volume; the per-axis diameters are the
    medians per axis, scaled so that they multiply to its cube. Nuclei cut by a volume's border
    are left out when at least ``min_interior`` others remain. ``None`` without any nucleus.
    """
    sizes = [s for s in sizes if s.volume_um3.size]
    if not sizes:
        return None
    keep_interior = sum(int(s.interior.sum()) for s in sizes) >= min_interior
    volumes = np.concatenate([s.volume_um3[s.interior] if keep_interior else s.volume_um3 for s in sizes])
    axes = np.concatenate([s.axes_um[:, s.interior] if keep_interior else s.axes_um for s in sizes], axis=1)
    d = float((6.0 * float(np.median(volumes)) / np.pi) ** (1.0 / 3.0))
    median = np.median(axes, axis=1)
    scale = d / float(np.prod(median)) ** (1.0 / 3.0)
    return round(d, 3), [round(float(v * scale), 3) for v in median]

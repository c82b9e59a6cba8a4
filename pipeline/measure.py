"""Per-region measurements over a whole label image at once (no loop over labels).

:func:`measure_regions` gives one row per label of a ``(z, y, x)`` (or ``(y, x)``)
label image: its centroid in micrometres, its volume, its bounding box and, for
every channel of an image over the same grid, the mean, median and integrated
(summed) intensity of its voxels, optionally minus a background per label.

Every statistic comes from one sort of the foreground voxels by label (then
``numpy.add.reduceat`` / ``minimum.reduceat`` over the sorted runs), and the medians
from one ``lexsort`` per channel, so the cost is that of sorting the voxels inside
nuclei, whatever the number of labels. Label values may be any positive integers
(sparse, shuffled); background is 0.

This module sits beside :mod:`pipeline.io` (it imports nothing from the stages), so
segmentation (a nucleus table beside its labels) and the cell-cycle stage share it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

LOG = logging.getLogger(__name__)

AXES = ("z", "y", "x")
STATS = ("mean", "median", "integrated")
"""Per-channel intensity statistics, in column order."""


@dataclass(frozen=True)
class Regions:
    """The foreground voxels of a label image, grouped by label (see :func:`regions`).

    Attributes
    ----------
    labels : numpy.ndarray
        ``(n,)`` int64 label values, ascending.
    order : numpy.ndarray
        Flat indices of the foreground voxels, grouped by label (label order).
    starts : numpy.ndarray
        ``(n,)`` start of each label's run in ``order``.
    counts : numpy.ndarray
        ``(n,)`` voxels per label.
    dense : numpy.ndarray
        ``(len(order),)`` the run index (0..n-1) of every voxel in ``order``.
    shape : tuple of int
        Shape of the label image.
    """

    labels: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    dense: np.ndarray
    shape: tuple[int, ...]

    def __len__(self) -> int:
        return int(self.labels.size)

    def reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Per-label sums of ``values`` given in ``order`` (float64)."""
        if not len(self):
            return np.zeros(0)
        return np.add.reduceat(np.asarray(values, dtype=np.float64), self.starts)

    def median(self, flat_values: np.ndarray) -> np.ndarray:
        """Per-label medians of a flat image (``flat_values[order]`` sorted within each run)."""
        if not len(self):
            return np.zeros(0)
        values = flat_values[self.order]
        ranked = values[np.lexsort((values, self.dense))].astype(np.float64)
        lo = self.starts + (self.counts - 1) // 2
        hi = self.starts + self.counts // 2
        return (ranked[lo] + ranked[hi]) / 2.0


def regions(labels: np.ndarray) -> Regions:
    """Group the foreground voxels of ``labels`` by label value.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer label image of any dimension; 0 is background.

    Returns
    -------
    Regions
    """
    flat = np.asarray(labels).reshape(-1)
    inside = np.flatnonzero(flat)
    values = flat[inside]
    order_in = np.argsort(values, kind="stable")
    order = inside[order_in]
    sorted_values = values[order_in].astype(np.int64)
    if sorted_values.size:
        edge = np.flatnonzero(np.diff(sorted_values)) + 1
        starts = np.concatenate([[0], edge]).astype(np.int64)
    else:
        starts = np.zeros(0, dtype=np.int64)
    counts = np.diff(np.concatenate([starts, [sorted_values.size]])).astype(np.int64)
    dense = np.repeat(np.arange(starts.size, dtype=np.int64), counts)
    return Regions(sorted_values[starts], order, starts, counts, dense, tuple(np.shape(labels)))


def channel_columns(channel: str) -> list[str]:
    """The column names of one channel's statistics: ``<channel>_mean`` etc. (lower case)."""
    name = str(channel).strip().lower()
    return [f"{name}_{stat}" for stat in STATS]


def measure_regions(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    channels: Sequence[str] | None = None,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    background: np.ndarray | None = None,
    bbox: bool = True,
    grouped: Regions | None = None,
) -> pd.DataFrame:
    """One row per label: centroid (um), volume (um^3), bounding box and intensities.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(z, y, x)`` or ``(y, x)`` integer labels; 0 is background. A 2-D image is
        measured as one slice: ``volume`` is then the area in um^2 and ``centroid_z`` 0.
    image : numpy.ndarray, optional
        ``(c, z, y, x)`` (``(c, y, x)`` for 2-D labels) intensities on the same grid.
    channels : sequence of str, optional
        Names of the image's channels (default ``c0, c1, ...``); columns are
        ``<name>_mean``, ``<name>_median``, ``<name>_integrated`` in lower case.
    voxel_size : sequence of float
        ``(z, y, x)`` in um (for 2-D labels the ``y, x`` values are used).
    background : numpy.ndarray, optional
        ``(n_labels, c)`` background per label and channel, in label order (ascending),
        subtracted from every voxel: the mean and median drop by it, the integrated
        intensity by it times the voxel count. A ``<name>_background`` column records it.
    bbox : bool
        Add ``bbox_z0, bbox_y0, bbox_x0, bbox_z1, bbox_y1, bbox_x1`` (voxels, end exclusive).
    grouped : Regions, optional
        :func:`regions` of ``labels`` when the caller already has it.

    Returns
    -------
    pandas.DataFrame
        Sorted by ``label``; columns ``label, centroid_z, centroid_y, centroid_x, volume,
        voxels``, the bounding box, then the channels' statistics.

    Raises
    ------
    ValueError
        On shapes that do not fit together (the caller turns them into input errors).

    Examples
    --------
    >>> lab = np.zeros((1, 4, 4), dtype=np.uint16); lab[0, :2, :2] = 7
    >>> img = np.ones((1, 1, 4, 4)); img[0, 0, :2, :2] = 5
    >>> measure_regions(lab, img, channels=["dna"])[["label", "volume", "dna_mean", "dna_integrated"]]
       label  volume  dna_mean  dna_integrated
    0      7     4.0       5.0            20.0
    """
    labels = np.asarray(labels)
    planar = labels.ndim == 2
    if planar:
        labels = labels[None]
        image = None if image is None else np.asarray(image)[:, None]
        voxel_size = (0.0, *tuple(voxel_size)[-2:])
    if labels.ndim != 3:
        raise ValueError(f"labels must be (z, y, x) or (y, x); got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers; got {labels.dtype}")
    if image is not None:
        image = np.asarray(image)
        if image.ndim != 4 or image.shape[1:] != labels.shape:
            raise ValueError(f"image shape {image.shape} does not match labels {labels.shape} (expected (c, *labels.shape))")
    n_channels = 0 if image is None else image.shape[0]
    names = [f"c{c}" for c in range(n_channels)] if channels is None else [str(c) for c in channels]
    if len(names) != n_channels:
        raise ValueError(f"{len(names)} channel names for {n_channels} channels")
    vz, vy, vx = (float(v) for v in tuple(voxel_size)[-3:])

    grp = regions(labels) if grouped is None else grouped
    n = len(grp)
    if background is not None:
        background = np.asarray(background, dtype=np.float64).reshape(n, n_channels)
    coords = np.unravel_index(grp.order, labels.shape)
    counts = grp.counts.astype(np.float64)
    out: dict[str, np.ndarray] = {"label": grp.labels}
    for axis, coord, size in zip(AXES, coords, (vz, vy, vx)):
        out[f"centroid_{axis}"] = grp.reduce_sum(coord) / np.maximum(counts, 1) * size
    out["volume"] = counts * (vy * vx if planar else vz * vy * vx)
    out["voxels"] = grp.counts
    if bbox:
        for axis, coord in zip(AXES, coords):
            out[f"bbox_{axis}0"] = np.minimum.reduceat(coord, grp.starts) if n else np.zeros(0, np.int64)
        for axis, coord in zip(AXES, coords):
            out[f"bbox_{axis}1"] = (np.maximum.reduceat(coord, grp.starts) + 1) if n else np.zeros(0, np.int64)
    for c, name in enumerate(names):
        flat = image[c].reshape(-1)
        total = grp.reduce_sum(flat[grp.order])
        median = grp.median(flat)
        bg = background[:, c] if background is not None else 0.0
        mean_col, median_col, sum_col = channel_columns(name)
        out[mean_col] = total / np.maximum(counts, 1) - bg
        out[median_col] = median - bg
        out[sum_col] = total - bg * counts
        if background is not None:
            out[f"{name.strip().lower()}_background"] = background[:, c].copy()
    return pd.DataFrame(out)

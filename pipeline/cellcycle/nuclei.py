"""Measure every nucleus of one volume: background-corrected intensities, volume, centroid."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.cellcycle.background import background
from pipeline.measure import measure_regions, regions

BASE_COLUMNS = ("t", "label", "centroid_z", "centroid_y", "centroid_x", "volume")


def measure_nuclei(
    labels: np.ndarray,
    image: np.ndarray,
    channels: Sequence[str],
    *,
    voxel_size=(1.0, 1.0, 1.0),
    method: str = "local",
    shell_um: float = 2.5,
    t: int = 0,
) -> pd.DataFrame:
    """One row per nucleus of one time point.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(z, y, x)`` or ``(y, x)`` instance labels.
    image : numpy.ndarray
        ``(c, z, y, x)`` or ``(c, y, x)`` raw intensities.
    channels : sequence of str
        Channel names, in image order.
    voxel_size : sequence of float
        ``(z, y, x)`` um.
    method, shell_um
        Background estimate (see :mod:`pipeline.cellcycle.background`).
    t : int
        Time point written in the ``t`` column.

    Returns
    -------
    pandas.DataFrame
        ``t, label, centroid_z/y/x`` (um), ``volume`` (um^3; um^2 for 2-D), ``voxels``, the
        bounding box, and per channel ``<name>_mean``, ``_median``, ``_integrated``
        (background-corrected) and ``_background``.
    """
    labels = np.asarray(labels)
    image = np.asarray(image)
    if labels.ndim == 2:
        labels, image = labels[None], image[:, None]
        voxel_size = (0.0, *tuple(voxel_size)[-2:])
        planar = True
    else:
        planar = False
    image = image.astype(np.float32, copy=False)
    grp = regions(labels)
    spacing = (1.0, *tuple(voxel_size)[-2:]) if planar else tuple(voxel_size)
    bg = background(labels, image, method=method, voxel_size=spacing, shell_um=shell_um, grouped=grp)
    if planar:
        table = measure_regions(labels[0], image[:, 0], channels=channels, voxel_size=voxel_size, background=bg, grouped=grp)
    else:
        table = measure_regions(labels, image, channels=channels, voxel_size=voxel_size, background=bg, grouped=grp)
    table.insert(0, "t", np.full(len(table), int(t), dtype=np.int64))
    return table

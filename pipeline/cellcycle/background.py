"""Background under each nucleus, per channel, so that intensities compare across a field.

Two estimates (``CellcycleConfig.background.method``):

``local`` (default)
    The median of a thin shell around the nucleus: the voxels within ``shell_um``
    of it (physical distance, so the shell is as thick in z as in x/y in um) that
    belong to no nucleus. It follows what surrounds each nucleus: autofluorescence
    inside the spheroid, the out-of-focus light of its neighbours, vignetting, and
    the camera offset outside it. A nucleus with no free voxel around it (packed in on
    every side) takes the median of all shells of its field.
``slice``
    The median of all voxels outside nuclei in each z-slice, averaged over the slices
    the nucleus spans. One number per slice: cheaper, but blind to the spheroid's
    own glow between nuclei, which the shell sees.

Which is better was measured on synthetic spheroids (docs/CELLCYCLE.md): ``local``
classified phases more accurately, because inside a dense spheroid the light between
nuclei (autofluorescence and the blur of the neighbours) is most of what adds to a
dim nucleus.
"""

from __future__ import annotations

import numpy as np
from skimage.segmentation import expand_labels

from pipeline.measure import Regions, regions

METHODS = ("local", "slice")


def shell_background(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    voxel_size=(1.0, 1.0, 1.0),
    shell_um: float = 2.5,
    grouped: Regions | None = None,
) -> np.ndarray:
    """``(n_labels, c)`` median of the free voxels within ``shell_um`` of each nucleus.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(z, y, x)`` instance labels.
    image : numpy.ndarray
        ``(c, z, y, x)`` intensities.
    voxel_size : sequence of float
        ``(z, y, x)`` in um.
    shell_um : float
        Shell thickness in um.
    grouped : Regions, optional
        :func:`pipeline.measure.regions` of ``labels`` (label order of the result).

    Returns
    -------
    numpy.ndarray
        float64, rows in ascending label order.
    """
    grp = regions(labels) if grouped is None else grouped
    n, n_channels = len(grp), image.shape[0]
    out = np.zeros((n, n_channels))
    if not n:
        return out
    grown = expand_labels(labels, distance=float(shell_um), spacing=tuple(float(v) for v in voxel_size))
    grown[labels > 0] = 0
    shell = regions(grown)
    # shell runs map onto the nuclei's runs by label value (a nucleus may have no shell)
    where = np.searchsorted(grp.labels, shell.labels)
    free = shell.order if shell.order.size else np.flatnonzero(labels.reshape(-1) == 0)
    for c in range(n_channels):
        flat = image[c].reshape(-1)
        out[:, c] = float(np.median(flat[free])) if free.size else 0.0
        if len(shell):
            out[where, c] = shell.median(flat)
    return out


def slice_background(labels: np.ndarray, image: np.ndarray, *, grouped: Regions | None = None) -> np.ndarray:
    """``(n_labels, c)`` per-slice median of the voxels outside nuclei, averaged over each nucleus' voxels."""
    grp = regions(labels) if grouped is None else grouped
    n, n_channels = len(grp), image.shape[0]
    out = np.zeros((n, n_channels))
    if not n:
        return out
    free = labels == 0
    z_of = np.unravel_index(grp.order, labels.shape)[0]
    for c in range(n_channels):
        per_slice = np.array(
            [np.median(image[c, z][free[z]]) if free[z].any() else np.median(image[c, z]) for z in range(labels.shape[0])]
        )
        out[:, c] = grp.reduce_sum(per_slice[z_of]) / grp.counts
    return out


def background(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    method: str = "local",
    voxel_size=(1.0, 1.0, 1.0),
    shell_um: float = 2.5,
    grouped: Regions | None = None,
) -> np.ndarray:
    """Background per nucleus and channel by ``method`` (``"local"`` or ``"slice"``); see the module."""
    if method == "local":
        return shell_background(labels, image, voxel_size=voxel_size, shell_um=shell_um, grouped=grouped)
    if method == "slice":
        return slice_background(labels, image, grouped=grouped)
    raise ValueError(f"unknown background method {method!r} (known: {', '.join(METHODS)})")

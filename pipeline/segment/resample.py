"""Bring a volume to the scale a model works at, and its labels back to the volume's grid.

A model card states the voxel size ``v0`` and the nucleus diameter ``d0`` (um) the
model was trained at. Data with voxel size ``v`` and nuclei of diameter ``d`` is
resampled to the voxel size ``v0 * d / d0``: its nuclei then take as many voxels, per
axis, as the training nuclei did (with ``d = d0`` that is plain physical resampling
to ``v0``). Nuclei that are not round in the data (most often drawn out along z by the
axial blur, as in the embryo sample: about 34 um in z for 17 um in y and x) are given
per axis, ``d = (dz, dy, dx)``, and compared axis by axis with the training nuclei's own
per-axis diameters (the card's ``nucleus_diameters_um``; round, ``d0`` on every axis, in
cards that do not state them). The labels found at that scale are resampled back (nearest neighbour) to
the input's shape. An axis whose voxel size is within the card's ``voxel_tolerance``
of the target is left as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from pipeline.errors import InputError
from pipeline.preprocess.resample import nearest_indices, resample_image, resample_labels, zoomed_shape

__all__ = [
    "MAX_ZOOM", "describe_resampling", "nearest_indices", "resample_image", "resample_labels", "target_voxel_size",
    "zoom_factors", "zoomed_shape",
]

LOG = logging.getLogger(__name__)

#: Largest zoom (up or down) per axis accepted: beyond it the data or the stated sizes are wrong.
MAX_ZOOM = 32.0


def target_voxel_size(
    card_voxel_size: Sequence[float],
    card_diameter: float | None,
    diameter: float | Sequence[float] | None,
    *,
    card_diameters: Sequence[float] | None = None,
    source: str = "model",
) -> tuple[float, float, float]:
    """Voxel size (z, y, x, um, at the data's physical scale) to resample the data to.

    Parameters
    ----------
    card_voxel_size : sequence of float
        The model's voxel size.
    card_diameter : float or None
        The model's nucleus diameter (um, equivalent sphere); needed only when ``diameter``
        is given.
    diameter : float, sequence of 3 floats, or None
        The data's typical nucleus diameter (um): one value (equivalent sphere, compared with
        ``card_diameter``), or one per axis (z, y, x; compared with ``card_diameters``, or
        with ``card_diameter`` on every axis where the card has no per-axis values). ``None``:
        as the model's.
    card_diameters : sequence of 3 floats, optional
        The training nuclei's per-axis diameters (the card's ``nucleus_diameters_um``).
    source : str
        The model folder, for the message.

    Raises
    ------
    InputError
        When ``diameter`` is given but the card does not state its own, or is not positive.
    """
    voxel = np.asarray(card_voxel_size, float)
    if diameter is None:
        return tuple(float(v) for v in voxel)
    if card_diameter is None:
        raise InputError(f"{source}: the model card states no nucleus diameter, so --diameter cannot be used; retrain the model or leave --diameter out")
    wanted = np.atleast_1d(np.asarray(diameter, float))
    if wanted.size not in (1, 3) or not (wanted > 0).all():
        raise InputError(f"diameter must be one positive value or three (z, y, x), got {list(wanted.tolist())}")
    reference = np.full(3, float(card_diameter))
    if wanted.size == 3 and card_diameters is not None:
        reference = np.asarray(card_diameters, float)
    return tuple(float(v) for v in voxel * (wanted / reference))


def zoom_factors(voxel_size: Sequence[float], target: Sequence[float], tolerance: float = 0.0, *, source: str = "input") -> np.ndarray:
    """Per-axis zoom (``> 1`` enlarges) from ``voxel_size`` to ``target``; 1 within ``tolerance``.

    Raises
    ------
    InputError
        When an axis would be zoomed by more than :data:`MAX_ZOOM` either way.
    """
    have = np.asarray(voxel_size, float)
    want = np.asarray(target, float)
    factors = have / want
    factors[np.abs(have - want) / want <= tolerance] = 1.0
    bad = (factors > MAX_ZOOM) | (factors < 1.0 / MAX_ZOOM)
    if bad.any():
        axis = "zyx"[int(np.flatnonzero(bad)[0])]
        raise InputError(
            f"{source}: voxel size {tuple(have.tolist())} um against the model's scale {tuple(np.round(want, 4).tolist())} um "
            f"needs a zoom of {factors[bad][0]:.3g} along {axis}; check --voxel-size and --diameter"
        )
    return factors


def describe_resampling(voxel_size: Sequence[float], target: Sequence[float], factors: Sequence[float], shape: Sequence[int]) -> dict:
    """Plain-data record of one resampling (what labels' provenance keeps)."""
    return {
        "voxel_size": [float(v) for v in voxel_size],
        "model_voxel_size": [round(float(v), 6) for v in target],
        "zoom": [round(float(f), 6) for f in factors],
        "shape": [int(s) for s in shape],
        "model_shape": list(zoomed_shape(shape, factors)),
    }

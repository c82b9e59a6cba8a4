"""One volume, any voxel size, any size: normalise -> resample -> segment -> resample back, in blocks.

:func:`segment_volume` is the whole per-volume logic every backend shares; a backend
only segments a normalised ``(z, y, x)`` float32 image at its model's scale
(``Segmenter.segment``). The labels come back at the input's shape. A backend that sets
``labels_at_data_scale`` (the U-Net) labels on the data's own grid where it is finer than
the model's (``Segmenter.segment_to``: its probabilities interpolated, not its labels), so
masks of large nuclei in finely sampled data are not blocky.

Block size rule: a block holds at most ``block_mvoxels`` million voxels *at the model's
scale*, halo included (a 21 x 512 x 512 stack at the model's voxel size is one block; a
64 x 2048 x 2048 stack is cut into y/x blocks), so a worker's memory does not grow with
the volume. See :mod:`pipeline.segment.blocks` for the merge across block faces and its
size rule (nuclei smaller than the halo).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.segment.blocks import choose_block, plan_blocks, segment_blocks
from pipeline.segment.inputs import InputPlan, VolumeView, plan_input
from pipeline.segment.resample import (
    describe_resampling,
    resample_image,
    resample_labels,
    target_voxel_size,
    zoom_factors,
    zoomed_shape,
)
from pipeline.segment.unet.card import check_voxel_size

LOG = logging.getLogger(__name__)

#: Default block budget (million voxels at the model's scale, halo included).
BLOCK_MVOXELS = 16.0
#: Default halo, in nucleus diameters (of the data's nuclei).
HALO_DIAMETERS = 2.0
#: Nucleus diameter assumed for the halo when neither the data nor the card states one (um).
FALLBACK_DIAMETER_UM = 10.0


def as_views(volume) -> list[VolumeView]:
    """``(z, y, x)`` array -> one view; ``(c, z, y, x)`` array -> one per channel; a list stays."""
    if isinstance(volume, (list, tuple)):
        return list(volume)
    if volume.ndim == 3:
        return [volume]
    if volume.ndim == 4:
        return [volume[c] for c in range(volume.shape[0])]
    raise InputError(f"expected a (z, y, x) volume or (c, z, y, x) channels, got shape {tuple(volume.shape)}")


def halo_voxels(voxel_size: Sequence[float], diameter_um: float | Sequence[float], diameters: float = HALO_DIAMETERS) -> tuple[int, int, int]:
    """Halo per axis (voxels of the data) covering ``diameters`` nucleus diameters (one, or one per axis)."""
    per_axis = np.broadcast_to(np.asarray(diameter_um, float), (3,))
    return tuple(int(math.ceil(diameters * d / float(v))) for d, v in zip(per_axis, voxel_size))


def segment_volume(
    volume,
    segmenter,
    *,
    voxel_size: Sequence[float],
    diameter: float | None = None,
    combine: str = "sum",
    block_mvoxels: float = BLOCK_MVOXELS,
    halo_um: float | None = None,
    out=None,
    source: str = "input",
    progress: bool = False,
    plan: InputPlan | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Nucleus instances of one volume at its own shape.

    Parameters
    ----------
    volume : numpy.ndarray or list of views
        ``(z, y, x)``, or ``(c, z, y, x)`` / a list of ``(z, y, x)`` views (numpy arrays or
        :class:`~pipeline.segment.inputs.StoredVolume`) that are combined into one image.
    segmenter : Segmenter
        A backend (``card`` and ``segment(image) -> labels`` at the card's scale).
    voxel_size : sequence of float
        The volume's voxel size (z, y, x) in um.
    diameter : float or sequence of 3 floats, optional
        The data's typical nucleus diameter (um), when it differs from the card's; per axis
        (z, y, x) for nuclei that are not round in the data.
    combine : {"sum", "mean", "max"}
        How several channels become one image (each percentile-normalised first).
    block_mvoxels : float
        Largest block, in million voxels at the model's scale (halo included).
    halo_um : float, optional
        Halo of a block (um); :data:`HALO_DIAMETERS` nucleus diameters by default.
    out : array-like, optional
        ``(z, y, x)`` uint32 destination (e.g. a zarr view); a new array when omitted.
    source : str
        The data, for error messages.
    progress : bool
        Progress bar over the blocks.
    plan : InputPlan, optional
        The normalisation to apply (e.g. one time series', :func:`~pipeline.segment.inputs.plan_series`);
        by default the card's percentiles of this volume.

    Returns
    -------
    (labels, dict)
        uint32 labels (``out`` when given) numbered 1..N, and what was done: resampling,
        normalisation, blocks, number of nuclei.
    """
    views = as_views(volume)
    shape = tuple(int(s) for s in views[0].shape)
    if len(shape) != 3:
        raise InputError(f"{source}: expected a (z, y, x) volume, got shape {shape}")
    if any(tuple(v.shape) != shape for v in views):
        raise InputError(f"{source}: the channels to combine differ in shape")
    card = segmenter.card
    voxel_size = check_voxel_size(voxel_size, source)
    target = target_voxel_size(
        card.voxel_size, card.nucleus_diameter_um, diameter,
        card_diameters=card.nucleus_diameters_um, source=getattr(segmenter, "folder", "model"),
    )
    factors = zoom_factors(voxel_size, target, card.voxel_tolerance, source=source)
    norm = card.normalization
    if plan is None:
        plan = plan_input(views, low=norm.low, high=norm.high, clip=norm.clip, combine=combine)
    elif len(plan.channel_ranges) != (len(views) if len(views) > 1 else 0):
        raise InputError(f"{source}: the normalisation given is for {len(plan.channel_ranges) or 1} channel(s), not {len(views)}")
    data_diameter = diameter if diameter is not None else (card.nucleus_diameter_um or FALLBACK_DIAMETER_UM)
    halo = halo_voxels(voxel_size, halo_um / HALO_DIAMETERS if halo_um else data_diameter)
    fine = bool(getattr(segmenter, "labels_at_data_scale", False)) and bool((factors < 1).any())
    # labelling on the data's grid (finer than the model's on some axis) holds the block at the
    # data's resolution too: the budget counts the larger of the two grids per axis
    core = choose_block(shape, np.maximum(factors, 1.0) if fine else factors, halo, int(block_mvoxels * 1e6))
    blocks = plan_blocks(shape, core, halo)
    if out is None:
        out = np.zeros(shape, dtype=np.uint32)

    def run(outer: tuple[slice, slice, slice]) -> np.ndarray:
        image = plan.apply([v[outer] for v in views])
        small = resample_image(image, zoomed_shape(image.shape, factors))
        del image
        size = tuple(s.stop - s.start for s in outer)
        if fine:
            return segmenter.segment_to(small, size, factors, voxel_size)
        return resample_labels(segmenter.segment(small), size)

    n = segment_blocks(run, shape, blocks, out, progress=progress)
    info = {
        "nuclei": n,
        "resampling": describe_resampling(voxel_size, target, factors, shape),
        "diameter_um": diameter,
        "normalization": plan.describe(),
        "blocks": {"count": len(blocks), "core": list(core), "halo": list(halo), "max_mvoxels": block_mvoxels},
    }
    LOG.debug("%s: %d nuclei; %s", source, n, info)
    return out, info


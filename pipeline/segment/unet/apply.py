"""Apply a trained U-Net to one volume at the model's scale: check, normalise, predict, label.

For data at another voxel size or nucleus size, in blocks, or with channel combinations,
use the ``unet`` backend (:mod:`pipeline.segment.backends`), which resamples around this.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.segment.instances import label_with
from pipeline.segment.unet.card import ModelCard
from pipeline.segment.unet.predict import predict_volume

LOG = logging.getLogger(__name__)


MAX_TILE = (32, 256, 256)
"""Largest default inference tile (z, y, x)."""
OVERLAP = 0.125
"""Default overlap of neighbouring tiles (fraction of the tile): a network with batch
normalisation sees only its receptive field, so a narrow overlap hides the tiles' borders."""


def tile_count(size: int, tile: int, overlap: float) -> int:
    """Tiles :func:`pipeline.segment.unet.predict.iter_tiles` places along an axis of ``size``."""
    if size <= tile:
        return 1
    step = max(1, int(tile * (1 - overlap)))
    return int(np.ceil((size - tile) / step)) + 1


def inference_tile(card: ModelCard | None, shape: Sequence[int], overlap: float = OVERLAP, divisor: Sequence[int] = (1, 1, 1)) -> tuple[int, int, int]:
    """The sliding-window tile for a ``(z, y, x)`` volume: the one rule of ``segment`` and ``test-model``.

    Per axis, the fewest tiles of at most :data:`MAX_TILE` that cover the volume, each as
    small as that count allows (a multiple of ``divisor``): a 21 x 512 x 512 stack takes
    one tile in z and three of 192 in y and x, 1.45x its voxels instead of 2.6x with
    256-voxel tiles at a quarter overlap. The card's tile is not a lower bound any more:
    models with batch normalisation give the same output whatever the tile.
    """
    out = []
    for size, top, d in zip(shape, MAX_TILE, divisor):
        size, d = int(size), int(d)
        top = max(d, top - top % d)
        need = tile_count(size, top, overlap)
        tile = top
        for t in range(d, top + 1, d):
            if tile_count(size, t, overlap) == need and t * need >= size:
                tile = t
                break
        out.append(tile)
    return tuple(out)


def segment_volume(
    volume: np.ndarray,
    model: torch.nn.Module,
    card: ModelCard,
    *,
    voxel_size: Sequence[float] | None = None,
    channels: Sequence[str] | None = None,
    tile: Sequence[int] | None = None,
    overlap: float = OVERLAP,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    source: str = "input",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and nucleus instances of a raw volume, as the model card prescribes.

    Parameters
    ----------
    volume : numpy.ndarray
        Raw ``(z, y, x)`` (one channel) or ``(c, z, y, x)`` intensities; each channel is
        percentile-normalised with the card's percentiles.
    model, card : UNet3D, ModelCard
        From :func:`pipeline.segment.unet.card.load_model`.
    voxel_size : sequence of float, optional
        The volume's voxel size (z, y, x) in um, checked against the card.
    channels : sequence of str, optional
        The volume's channel names, checked against the card.
    tile : sequence of int, optional
        Sliding-window tile; :func:`inference_tile` when omitted.
    overlap, batch_size, device, progress
        See :func:`pipeline.segment.unet.predict.predict_volume`.
    source : str
        Name of the data for error messages.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        float32 probabilities ``(3, z, y, x)`` and uint32 labels ``(z, y, x)``.

    Raises
    ------
    pipeline.errors.InputError
        When voxel size or channels do not match the card (resample with the ``unet``
        backend instead).
    """
    data = volume[None] if volume.ndim == 3 else volume
    card.check_input(voxel_size=voxel_size, n_channels=data.shape[0], channels=channels, source=source)
    if voxel_size is not None:
        off = [abs(h - w) / w for h, w in zip(voxel_size, card.voxel_size)]
        if max(off) > card.voxel_tolerance:
            raise InputError(
                f"{source}: voxel size {tuple(float(v) for v in voxel_size)} um differs from the {tuple(card.voxel_size)} um "
                f"model {card.name!r} works at; segment it with the unet backend (spheroid segment), which resamples"
            )
    normed = np.stack([card.normalize(c) for c in data])
    tile = inference_tile(card, normed.shape[1:], overlap, getattr(model, "divisor", (1, 1, 1))) if tile is None else tile
    probs = predict_volume(model, normed, tile=tile, overlap=overlap, batch_size=batch_size, device=device, progress=progress)
    labels = label_with(probs, card.labeling, card.voxel_size if voxel_size is None else voxel_size)
    return probs, labels

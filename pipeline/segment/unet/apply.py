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
"""Largest default inference tile (z, y, x): big tiles waste less work on overlaps."""


def inference_tile(card: ModelCard, shape: Sequence[int]) -> tuple[int, int, int]:
    """Default sliding-window tile for a ``(z, y, x)`` volume.

    As large as the volume up to :data:`MAX_TILE` (a 21 x 512 x 512 stack then takes 4
    overlapping tiles instead of 2 x 5 x 5 of the training-sized tile: about 2.5x less
    computation), and never smaller than the card's tile.
    """
    return tuple(max(int(c), min(int(s), m)) for c, s, m in zip(card.tile, shape, MAX_TILE))


def segment_volume(
    volume: np.ndarray,
    model: torch.nn.Module,
    card: ModelCard,
    *,
    voxel_size: Sequence[float] | None = None,
    channels: Sequence[str] | None = None,
    tile: Sequence[int] | None = None,
    overlap: float = 0.25,
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
    tile = inference_tile(card, normed.shape[1:]) if tile is None else tile
    probs = predict_volume(model, normed, tile=tile, overlap=overlap, batch_size=batch_size, device=device, progress=progress)
    labels = label_with(probs, card.labeling, card.voxel_size if voxel_size is None else voxel_size)
    return probs, labels

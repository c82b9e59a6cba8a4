"""Segmentation backends: one small protocol, a registry of names.

A backend turns one volume into uint32 nucleus instances at the volume's shape. All
share the per-volume path of :class:`~pipeline.segment.backends.base.ModelSegmenter`
(normalise, resample to the model's scale, blocks, resample back) and differ only in
``segment``: a normalised image at the model's scale -> labels. Backends are built once
per worker process (``get_segmenter`` caches them) and are picklable by name and config
only, so Dask never ships model weights around. Heavy libraries (TensorFlow, Cellpose)
are imported when a backend is built, with the install hint when missing.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from pipeline.config.segment import SegmentConfig
from pipeline.segment.backends.base import ModelSegmenter
from pipeline.segment.backends.cellpose import CellposeSegmenter
from pipeline.segment.backends.stardist import StarDistSegmenter
from pipeline.segment.backends.unet import UNetSegmenter

LOG = logging.getLogger(__name__)


@runtime_checkable
class Segmenter(Protocol):
    """Anything that segments a volume into nucleus instances."""

    name: str

    def describe(self) -> dict[str, Any]:
        """Plain data that identifies the result: backend, model path, name and hash, settings."""

    def check(self, *, voxel_size: Sequence[float], channels: Sequence[str], source: str) -> None:
        """Raise :class:`~pipeline.errors.InputError` when the data cannot be segmented."""

    def predict(self, volume, *, voxel_size: Sequence[float], source: str = "input") -> np.ndarray:
        """uint32 instance labels of one ``(z, y, x)`` volume (or ``(c, z, y, x)`` channels to combine)."""

    def segment(self, image: np.ndarray) -> np.ndarray:
        """uint32 labels of a normalised ``(z, y, x)`` float32 image at the model's scale."""


BACKENDS: dict[str, type[ModelSegmenter]] = {
    "unet": UNetSegmenter,
    "stardist": StarDistSegmenter,
    "cellpose": CellposeSegmenter,
}


@functools.lru_cache(maxsize=4)
def _cached(config_json: str) -> Segmenter:
    config = SegmentConfig.model_validate_json(config_json)
    LOG.info("building segmenter %r", config.backend)
    return BACKENDS[config.backend](config)


def get_segmenter(config: SegmentConfig) -> Segmenter:
    """The backend named in ``config``, built once per process."""
    return _cached(config.model_copy(update={"cluster": type(config.cluster)()}).model_dump_json())


__all__ = ["BACKENDS", "CellposeSegmenter", "ModelSegmenter", "Segmenter", "StarDistSegmenter", "UNetSegmenter", "get_segmenter"]

"""Segmentation backends: one small protocol, a registry of names.

A backend turns one ``(z, y, x)`` volume into uint32 nucleus instances. Backends are
built once per worker process (``get_segmenter`` caches them) and must be picklable
by name and config only, so Dask never ships model weights around.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from pipeline.config.segment import SegmentConfig

LOG = logging.getLogger(__name__)


@runtime_checkable
class Segmenter(Protocol):
    """Anything that segments a volume into nucleus instances."""

    name: str

    def describe(self) -> dict:
        """Plain-data description stored with the labels: ``backend``, ``model`` and whatever
        identifies the result (weights and card hashes...); ``device``, ``model`` (the folder's
        path) and ``model_card`` are informative only (see :func:`pipeline.segment.runner.segment_settings`)."""

    def check(self, *, voxel_size: Sequence[float], channels: Sequence[str], source: str) -> None:
        """Raise :class:`~pipeline.errors.InputError` when the data does not suit the model."""

    def predict(self, volume: np.ndarray, *, voxel_size: Sequence[float], source: str = "input") -> np.ndarray:
        """uint32 instance labels of one ``(z, y, x)`` volume."""


class UNetSegmenter:
    """The 3D U-Net (background / edge / nucleus) followed by seeded-watershed instances."""

    name = "unet"

    def __init__(self, config: SegmentConfig):
        from pipeline.segment.unet.card import default_model_path, load_model
        from pipeline.segment.unet.predict import resolve_device

        self.config = config
        self.folder = config.model or str(default_model_path())
        self.device = resolve_device(config.device)
        self.model, self.card = load_model(self.folder, device=self.device)

    def describe(self) -> dict:
        from pipeline.segment.unet.card import CARD_NAME
        from pipeline.groundtruth.tiffio import file_sha256

        return {
            "backend": self.name,
            "model": self.folder,
            "model_name": self.card.name,
            "weights_sha256": file_sha256(Path(self.folder) / self.card.weights),
            "card_sha256": file_sha256(Path(self.folder) / CARD_NAME),
            "model_card": self.card.model_dump(mode="json", exclude={"training"}),
            "device": str(self.device),
        }

    def check(self, *, voxel_size: Sequence[float], channels: Sequence[str], source: str) -> None:
        self.card.check_input(voxel_size=voxel_size, n_channels=1, channels=channels, source=source)

    def predict(self, volume: np.ndarray, *, voxel_size: Sequence[float], source: str = "input") -> np.ndarray:
        from pipeline.segment.unet.apply import segment_volume

        _, labels = segment_volume(
            volume,
            self.model,
            self.card,
            voxel_size=voxel_size,
            tile=self.config.tile,
            overlap=self.config.overlap,
            batch_size=self.config.batch_size,
            device=self.device,
            source=source,
        )
        return labels


BACKENDS: dict[str, type] = {"unet": UNetSegmenter}


@functools.lru_cache(maxsize=4)
def _cached(config_json: str) -> Segmenter:
    config = SegmentConfig.model_validate_json(config_json)
    LOG.info("building segmenter %r", config.backend)
    return BACKENDS[config.backend](config)


def get_segmenter(config: SegmentConfig) -> Segmenter:
    """The backend named in ``config``, built once per process."""
    return _cached(config.model_copy(update={"cluster": type(config.cluster)()}).model_dump_json())

"""What every backend shares: the model folder, its card, and the per-volume path around ``segment``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.segment import SegmentConfig
from pipeline.errors import ConfigError
from pipeline.segment.card import CardBase, folder_digest
from pipeline.segment.unet.card import check_voxel_size
from pipeline.segment.volume import segment_volume

LOG = logging.getLogger(__name__)


def required_model(config: SegmentConfig, backend: str, library: str) -> Path:
    """The model folder of a backend that ships no weights; a :class:`ConfigError` naming the fix without one."""
    if config.model is None:
        raise ConfigError(
            f"model: the {backend} backend needs a model folder (--model DIR) trained with `spheroid train` "
            f"and `backend: {backend}`; no pretrained {library} weights ship with spheroid or can be downloaded"
        )
    return Path(config.model)


def package_version(name: str) -> str:
    """Installed version of a distribution, ``"not installed"`` when missing."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


class ModelSegmenter:
    """Base of the backends: subclasses set ``name``, load ``card`` and implement :meth:`segment`.

    Parameters
    ----------
    config : SegmentConfig
        The stage's configuration (backend, model folder, resampling, blocks, device).
    """

    name = "base"

    def __init__(self, config: SegmentConfig, folder: str | Path, card: CardBase, files: Sequence[str]):
        self.config = config
        self.folder = str(folder)
        self.card = card
        self.digest = folder_digest(folder, list(files))

    def segment(self, image: np.ndarray) -> np.ndarray:
        """uint32 labels of a normalised float32 ``(z, y, x)`` image at the card's voxel size."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Backend-specific settings that change the result (tile, thresholds...)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Everything that identifies a result: backend, model (path, name, content hash), settings
        (channel, resampling, blocks and the backend's own). Library versions are in every output's
        provenance (:func:`pipeline.provenance.provenance`), with the backend's in its card."""
        c = self.config
        return {
            "backend": self.name,
            "model": self.folder,
            "model_name": self.card.name,
            "model_sha256": self.digest,
            "model_card": self.card.describe(),
            "settings": {
                **self.settings(),
                "channel": c.channel,
                "diameter_um": c.diameter,
                "voxel_size": c.voxel_size,
                "combine": c.combine,
                "block_mvoxels": c.block_mvoxels,
                "halo_um": c.halo_um,
            },
        }

    def check(self, *, voxel_size: Sequence[float], channels: Sequence[str], source: str) -> None:
        """Raise :class:`~pipeline.errors.InputError` when the data cannot be segmented (no usable voxel size)."""
        check_voxel_size(voxel_size, source)
        if channels and not any(set(spec.split("|")) & set(channels) for spec in self.card.channels):
            LOG.info("%s: channel(s) %s fed to model %r (trained on %s)", source, list(channels), self.card.name, self.card.channels)

    def run(self, volume, *, voxel_size: Sequence[float], source: str = "input", out=None, progress: bool = False, plan=None) -> tuple[Any, dict[str, Any]]:
        """Labels of one volume at its shape, and what was done (see :func:`pipeline.segment.volume.segment_volume`)."""
        c = self.config
        return segment_volume(
            volume, self, voxel_size=voxel_size, diameter=c.diameter, combine=c.combine, block_mvoxels=c.block_mvoxels,
            halo_um=c.halo_um, out=out, source=source, progress=progress, plan=plan,
        )

    def predict(self, volume, *, voxel_size: Sequence[float], source: str = "input") -> np.ndarray:
        """uint32 instance labels of one ``(z, y, x)`` volume (or ``(c, z, y, x)`` channels to combine)."""
        labels, _ = self.run(volume, voxel_size=voxel_size, source=source)
        return labels

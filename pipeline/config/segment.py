"""Configuration of the segmentation stage (``spheroid segment``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config.base import StrictModel
from pipeline.config.cluster import ClusterConfig


class SegmentConfig(StrictModel):
    """Segment nuclei in every time point of every field into NGFF labels."""

    backend: Literal["unet"] = "unet"
    """Segmentation backend (registry in ``pipeline.segment.backends``)."""
    model: str | None = None
    """Model folder (``model.json`` + weights); the U-Net shipped with spheroid when unset."""
    input: str = "raw"
    """Image to segment: ``raw`` or a derived image such as ``preprocessed``. The model card's
    normalisation is applied to it, so use the kind of image the model was trained on."""
    channel: str = "Hoechst"
    """Channel that shows all nuclei."""
    output: str = "nuclei"
    """Name of the label image written under ``labels/``."""
    tile: list[int] | None = Field(None, min_length=3, max_length=3)
    """Sliding-window tile (z, y, x); when unset, as large as the volume up to (32, 256, 256)
    and at least the model card's tile."""
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    """Fractional overlap of neighbouring tiles (blended with Gaussian weights)."""
    batch_size: int = Field(1, ge=1)
    """Tiles per forward pass."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the network runs: ``auto`` takes a GPU when the worker has one."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Where the tasks run (one task per field and time point)."""

"""Configuration of the segmentation stage (``spheroid segment``)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, ValidationInfo, field_validator

from pipeline.config.base import StrictModel
from pipeline.config.cluster import ClusterConfig

Backend = Literal["unet", "stardist", "cellpose"]
TTAPasses = Literal[1, 2, 4, 8, 16]
#: Passes test-time augmentation can make (:func:`pipeline.segment.unet.predict.tta_transforms`).
TTA_PASSES: tuple[int, ...] = get_args(TTAPasses)


class SegmentConfig(StrictModel):
    """Segment nuclei in every time point of every field (or in one TIFF) into instance labels."""

    backend: Backend = "unet"
    """Segmentation backend (registry in ``pipeline.segment.backends``): ``unet`` (ours, a model
    ships with spheroid), ``stardist`` (StarDist 3D) or ``cellpose`` (Cellpose 3D). StarDist and
    Cellpose need a model folder trained with ``spheroid train`` (no pretrained weights can be
    downloaded)."""
    model: str | None = None
    """Model folder (``model.json`` + weights); ``null``: the U-Net shipped with spheroid (unet only)."""
    input: str = "raw"
    """Image to segment: ``raw`` or a derived image such as ``preprocessed``. The model card's
    normalisation is applied to it, so use the kind of image the model was trained on."""
    channel: str | int | list[str | int] = "Hoechst"
    """Channel that shows all nuclei: a name or a 0-based index; a list combines channels (each
    percentile-normalised, then ``combine``-d), e.g. ``[Hoechst, Cy3, GFP]``: Hoechst alone stains
    a spheroid's core poorly. Whatever it is, it is fed to the model's one input channel."""
    combine: Literal["sum", "mean", "max"] = "sum"
    """How the channels of a combination become one image (before the model's normalisation)."""
    normalize: Literal["series", "volume"] = "series"
    """Where the model card's percentiles are taken: ``series``, once per field over its time
    points (a subsample of up to 24 of them, pooled), so every time point is normalised alike;
    ``volume``, on each volume alone. Per-volume percentiles move with the few very bright
    (dying, saturated) nuclei a time point holds, and with them the share of dim nuclei found:
    on the demo plate the count then lags the true growth and the growth EC50 is lost in the
    scatter. Take ``volume`` where intensities drift strongly over the series (heavy
    photobleaching). A single volume (one time point, a TIFF) is normalised alone either way."""
    output: str = "nuclei"
    """Name of the label image written under ``labels/``."""
    voxel_size: list[float] | None = Field(None, min_length=3, max_length=3)
    """Voxel size (z, y, x) in um of the data, for files that do not state it (it overrides what
    the data states, with a warning). Volumes are resampled to the model's voxel size."""
    diameter: float | list[float] | None = None
    """Typical nucleus diameter of the data in um (embryo ~20, spheroid ~10, plant ~3); ``null``:
    as the model's (its card). Volumes are resampled so nuclei take as many voxels as the
    model's training nuclei did. Three values ``[z, y, x]`` give it per axis, for nuclei that
    are not round in the data: drawn out along z by the axial blur, the embryo sample's are
    about ``[34, 17, 17]``."""
    tile: list[int] | None = Field(None, min_length=3, max_length=3)
    """U-Net sliding-window tile (z, y, x); when unset, the fewest tiles of at most (32, 256, 256)
    that cover the volume, each as small as that allows (the one rule of segment and test-model)."""
    overlap: float = Field(0.125, ge=0.0, lt=1.0)
    """U-Net: fractional overlap of neighbouring tiles (blended with Gaussian weights)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """U-Net: arithmetic of the forward pass; ``auto`` takes bfloat16 where the CPU (AMX,
    AVX512-BF16) or GPU computes it natively: 3-4x faster on such CPUs."""
    batch_size: int = Field(1, ge=1)
    """U-Net: tiles per forward pass."""
    tta: TTAPasses = 1
    """U-Net: test-time augmentation, the number of passes whose probabilities are averaged: 1
    none, 2 the volume and its flip in z, 4 the flips in y and x, 8 the flips in z, y and x, 16
    those with y and x swapped too. Each pass costs one forward pass (8 passes: 7-8x the seconds
    per volume); on the shipped model 8 passes gave +0.01 to +0.07 instance F1 (docs/SEGMENTATION.md).
    ``true`` / ``false`` of older configs read as 4 / 1."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the network runs: ``auto`` takes a GPU when the worker has one."""
    block_mvoxels: float = Field(16.0, gt=0)
    """Largest block in million voxels at the model's scale, halo included: larger volumes are
    segmented in overlapping blocks whose labels are merged across the faces (peak memory of a
    worker stays flat in the volume's size)."""
    halo_um: float | None = Field(None, gt=0)
    """Overlap of blocks (um per side); ``null``: two nucleus diameters. Nuclei must be smaller
    than the halo to be found whole across block faces."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Where the tasks run (one task per field and time point)."""

    @field_validator("voxel_size")
    @classmethod
    def _positive(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(v <= 0 for v in value):
            raise ValueError(f"voxel sizes must be positive, got {value}")
        return value

    @field_validator("diameter")
    @classmethod
    def _diameter(cls, value: float | list[float] | None) -> float | list[float] | None:
        values = [value] if isinstance(value, (int, float)) else value
        if values is not None and (len(values) not in (1, 3) or any(v <= 0 for v in values)):
            raise ValueError(f"give one positive diameter (um) or three, z, y and x; got {value}")
        if isinstance(value, list) and len(value) == 1:
            return float(value[0])
        return value

    @field_validator("tta", mode="before")
    @classmethod
    def _tta_bool(cls, value):
        if isinstance(value, bool):  # older configs: tta: true meant the 4 flips in y and x
            return 4 if value else 1
        return value

    @field_validator("tta")
    @classmethod
    def _tta_unet_only(cls, value: int, info: ValidationInfo) -> int:
        backend = info.data.get("backend", "unet")
        if value > 1 and backend != "unet":
            raise ValueError(f"tta (test-time augmentation) applies to the unet backend, not {backend}; leave it at 1")
        return value

    @field_validator("channel")
    @classmethod
    def _some_channel(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("name at least one channel")
        if isinstance(value, int) and value < 0:
            raise ValueError("a channel index is >= 0")
        return value

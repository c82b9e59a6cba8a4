"""Configuration of the preprocessing stage: a named filter chain per channel.

Each step of a chain is a mapping with ``step: <name>`` and that step's parameters;
``enabled: false`` keeps a step in the list but switches it off, and the list order is
the order the steps run in. Defaults follow thesis section 2.6 (threshold, gamma,
CLAHE, median, top-hat), translated to 16-bit data:

- The thesis set 8-bit values below 7 to zero after a 16 -> 8 bit conversion spanning
  the data's range ("values >= 7" in the text is a typo). On the raw 16-bit data that is
  ``mode: range_fraction, value: 0.02745`` (7/255 of the volume's range, from its minimum
  to its 99.5th percentile, so saturated glowing nuclei do not set it);
  ``absolute`` (raw units), ``dtype_fraction`` (of 65535) and ``percentile`` are the
  other ways to give it.
- Gamma acts on the dtype's full range (``65535 * (x / 65535) ** gamma``).
- CLAHE's clip limit keeps OpenCV's unit (times the mean histogram-bin count).
- The thesis does not publish its tuned values: gamma, clip limit, tile grid, median
  size and top-hat radius below are starting points; tune them with ``spheroid preview``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from pipeline.config.base import StrictModel
from pipeline.config.cluster import ClusterConfig


class _Step(StrictModel):
    enabled: bool = True
    """Run this step; ``false`` keeps it in the chain, switched off."""


class ThresholdStep(_Step):
    """Set voxels below a background level to 0."""

    step: Literal["threshold"] = "threshold"
    """Step name."""
    mode: Literal["absolute", "dtype_fraction", "range_fraction", "percentile"] = "range_fraction"
    """How ``value`` is read: raw intensity (``absolute``), fraction of the dtype maximum
    (``dtype_fraction``), fraction of the volume's min..max range (``range_fraction``, the
    thesis' 7/255 on 8-bit), or a percentile of the volume (``percentile``)."""
    value: float = Field(7 / 255, ge=0)
    """The level: raw units, a fraction in [0, 1], or a percentile in [0, 100], per ``mode``."""
    upper_percentile: float = Field(99.5, gt=0, le=100)
    """Top of the intensity range for ``range_fraction``: this percentile rather than the
    maximum, so saturated (glowing) nuclei and hot pixels do not set the level (100 = max)."""

    @model_validator(mode="after")
    def _range(self) -> "ThresholdStep":
        if self.mode in ("dtype_fraction", "range_fraction") and self.value > 1:
            raise ValueError(f"value must be a fraction in [0, 1] for mode {self.mode!r}, got {self.value}")
        if self.mode == "percentile" and self.value > 100:
            raise ValueError(f"value must be a percentile in [0, 100], got {self.value}")
        return self


class GammaStep(_Step):
    """Gamma correction on the dtype's full range."""

    step: Literal["gamma"] = "gamma"
    """Step name."""
    gamma: float = Field(0.8, gt=0)
    """Exponent: < 1 brightens dark regions, > 1 darkens bright ones."""


class ClaheStep(_Step):
    """Contrast Limited Adaptive Histogram Equalisation."""

    step: Literal["clahe"] = "clahe"
    """Step name."""
    clip_limit: float = Field(2.0, gt=0)
    """Contrast limit, in OpenCV's unit: a multiple of the mean histogram-bin count of a tile."""
    tile_grid: tuple[int, int] = (8, 8)
    """Number of tiles along y and x (each >= 1)."""
    mode: Literal["2d", "3d"] = "2d"
    """``2d``: per z-slice with OpenCV (the thesis); ``3d``: scikit-image on the whole volume."""
    tiles_z: int = Field(1, ge=1)
    """Tiles along z (``3d`` only)."""
    nbins: int = Field(256, ge=2, le=65536)
    """Histogram bins (``3d`` only; OpenCV uses 256 on uint8 and 65536 on uint16)."""

    @model_validator(mode="after")
    def _grid(self) -> "ClaheStep":
        if min(self.tile_grid) < 1:
            raise ValueError(f"tile_grid entries must be >= 1, got {list(self.tile_grid)}")
        return self


class MedianStep(_Step):
    """Median filter against the noise CLAHE amplifies."""

    step: Literal["median"] = "median"
    """Step name."""
    size: int = Field(3, ge=1)
    """Window size in y and x (odd)."""
    mode: Literal["2d", "3d"] = "2d"
    """``2d``: per z-slice (OpenCV or scipy); ``3d``: a ``size_z x size x size`` window (scipy)."""
    size_z: int = Field(3, ge=1)
    """Window size along z (odd; ``3d`` only)."""

    @model_validator(mode="after")
    def _odd(self) -> "MedianStep":
        for key in ("size", "size_z"):
            if getattr(self, key) % 2 == 0:
                raise ValueError(f"{key} must be odd, got {getattr(self, key)}")
        return self


class TophatStep(_Step):
    """White top-hat subtraction: removes bright specks smaller than the footprint."""

    step: Literal["tophat"] = "tophat"
    """Step name."""
    radius: int = Field(2, ge=1)
    """Footprint radius in y/x pixels; keep it below the nuclear radius (~4 px)."""
    mode: Literal["2d", "3d"] = "2d"
    """``2d``: a disk per z-slice (OpenCV); ``3d``: an ellipsoid (scipy)."""
    radius_z: int = Field(1, ge=0)
    """Footprint semi-axis along z in slices (``3d`` only)."""


class ToUint8Step(_Step):
    """Convert to 8 bit over a percentile window (the thesis did this first; loses dynamic range)."""

    step: Literal["to_uint8"] = "to_uint8"
    """Step name."""
    low: float = Field(0.0, ge=0, le=100)
    """Percentile mapped to 0."""
    high: float = Field(100.0, ge=0, le=100)
    """Percentile mapped to 255."""

    @model_validator(mode="after")
    def _order(self) -> "ToUint8Step":
        if not self.low < self.high:
            raise ValueError(f"need low < high, got {self.low}, {self.high}")
        return self


class NormalizeStep(_Step):
    """Percentile normalisation to float32 (the segmentation models' input); must be last."""

    step: Literal["normalize"] = "normalize"
    """Step name."""
    low: float = Field(1.0, ge=0, le=100)
    """Percentile mapped to 0."""
    high: float = Field(99.8, ge=0, le=100)
    """Percentile mapped to 1."""
    clip: bool = False
    """Clip the result to [0, 1]."""

    @model_validator(mode="after")
    def _order(self) -> "NormalizeStep":
        if not self.low < self.high:
            raise ValueError(f"need low < high, got {self.low}, {self.high}")
        return self


StepConfig = Annotated[
    Union[ThresholdStep, GammaStep, ClaheStep, MedianStep, TophatStep, ToUint8Step, NormalizeStep],
    Field(discriminator="step"),
]


def default_chain() -> list:
    """The thesis chain: threshold, gamma, CLAHE, median, top-hat, then normalisation."""
    return [ThresholdStep(), GammaStep(), ClaheStep(), MedianStep(), TophatStep(), NormalizeStep()]


def _check_chain(chain: list, where: str) -> None:
    enabled = [s for s in chain if s.enabled]
    for i, s in enumerate(enabled[:-1]):
        if s.step == "normalize":
            raise ValueError(f"{where}: 'normalize' must be the last enabled step (found before '{enabled[i + 1].step}')")


class PreprocessConfig(StrictModel):
    """The ``preprocess`` stage."""

    input: str = "raw"
    """Image to read in each field (``raw``: the converted data)."""
    output: str = "preprocessed"
    """Image to write in each field (same axes and chunks as the input)."""
    chain: list[StepConfig] = Field(default_factory=default_chain)
    """Steps for every channel that has no chain of its own under ``channels``."""
    channels: dict[str, list[StepConfig]] = Field(default_factory=dict)
    """Per-channel chains by channel name (e.g. ``Hoechst``), replacing ``chain`` for that
    channel; every name must exist in the store."""
    compression: Literal["lz4", "zstd"] = "lz4"
    """Blosc compressor of the output image. The image is derived and can be recomputed; a
    normalised float32 image hardly compresses (zstd: ~80 % of its size, lz4: ~86 %), and lz4
    encodes and decodes it about 4x faster."""
    compression_level: int = Field(1, ge=0, le=9)
    """Blosc level of the output image (level 1 is within ~5 % of level 5 at a quarter of the cost)."""
    block_shape: tuple[int, int, int] | None = None
    """Split each volume in blocks of this ``(z, y, x)`` shape (0 = the whole axis),
    processed as separate Dask tasks with a halo derived from the chain; ``null`` runs
    one task per ``(t, c)`` volume. For volumes too large for one worker."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Where the Dask work runs."""

    @model_validator(mode="after")
    def _chains(self) -> "PreprocessConfig":
        _check_chain(self.chain, "chain")
        for name, chain in self.channels.items():
            _check_chain(chain, f"channels.{name}")
        if self.block_shape is not None and min(self.block_shape) < 0:
            raise ValueError(f"block_shape entries must be >= 0 (0 = whole axis), got {list(self.block_shape)}")
        if self.input == self.output:
            raise ValueError(f"output must differ from input ({self.input!r})")
        return self

    def chain_for(self, channel: str) -> list:
        """The steps configured for ``channel`` (its own chain, else ``chain``)."""
        return list(self.channels.get(channel, self.chain))

"""Configuration of ground-truth preparation, training-set building and corrections.

Used by ``spheroid groundtruth``, ``spheroid trainset ...``, ``spheroid export-corrections``
and ``spheroid import-corrections``; see :mod:`pipeline.groundtruth`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.config.base import StrictModel
from pipeline.config.synth import SynthConfig

Split = Literal["train", "val", "test"]
PositiveFloat3 = tuple[float, float, float]


class TargetConfig(StrictModel):
    """How instance masks become cleaned instances and the 3-class target (thesis 2.7, 3.1)."""

    min_area: int = Field(20, ge=0)
    """Per z-slice, pieces of a label with fewer voxels are removed (thesis: 20)."""
    smooth: Literal["majority", "opening", "none"] = "majority"
    """Per-slice boundary smoothing of all labels at once: ``majority`` (label-aware majority vote,
    the thesis' small convolution kernel thresholded at one half; removes spurs, fills notches),
    ``opening`` (label-aware morphological opening; only removes), or ``none``."""
    smooth_radius: int = Field(1, ge=0)
    """Half-size r of the smoothing window (square of 2r+1 for majority, disk of radius r for opening)."""
    min_volume: int = Field(0, ge=0)
    """Whole instances with fewer voxels after smoothing are dropped (0: keep all)."""
    edge_width: int = Field(1, ge=1)
    """Width of the edge class in voxels, in x/y."""
    edge_mode: Literal["inner", "outer"] = "inner"
    """``inner``: edge voxels are the instance's own boundary voxels (nucleus + edge = instance);
    ``outer``: the thesis' dilation minus mask (a ring in the background, plus contact voxels)."""
    edge_z: Literal["contacts", "all", "none"] = "contacts"
    """Boundaries across slices: ``contacts`` marks voxels touching a different instance in the slice
    above or below (separates nuclei stacked in z), ``all`` also marks voxels above/below background,
    ``none`` is purely per slice (thesis)."""


class MaskConfig(StrictModel):
    """How an input mask is read as instances."""

    kind: Literal["auto", "instances", "binary"] = "auto"
    """``binary``: label connected components (Labkit exports a binary mask); ``instances``: keep the
    ids; ``auto``: binary when the image has a single non-zero value."""
    connectivity: Literal[6, 18, 26] = 6
    """3D connectivity of connected components for binary masks (thesis/MorphoLibJ: 6)."""


class RescaleConfig(StrictModel):
    """How a real sample is brought to the pixel scale of the target data."""

    mode: Literal["voxel", "nucleus_size", "none"] = "voxel"
    """``voxel``: resample to ``voxel_size`` (physical scale); ``nucleus_size``: resample so the median
    nucleus extent is ``nucleus_um / voxel_size`` voxels on each axis, i.e. nuclei look as large in
    voxels as target nuclei do (for samples whose nuclei are much smaller or larger than ~11 um);
    ``none``: keep the sample's grid."""
    voxel_size: PositiveFloat3 = (5.0, 1.24, 1.24)
    """Target voxel size (z, y, x) in um (thesis data: 5.0, 1.24, 1.24)."""
    nucleus_um: float = Field(11.0, gt=0)
    """Typical nucleus extent of the target data in um (breast-cancer nuclei, 8-14 um): with the
    default voxel size ~9 px in x/y and ~2 slices in z. Used by ``nucleus_size``."""

    @field_validator("voxel_size")
    @classmethod
    def _positive(cls, value: PositiveFloat3) -> PositiveFloat3:
        if any(v <= 0 for v in value):
            raise ValueError(f"voxel sizes must be positive, got {value}")
        return value


class SampleSource(StrictModel):
    """One real 3D sample with instance ground truth (a raw TIFF and a label TIFF)."""

    id: str
    """Item id in the training set (letters, digits, ``._-``)."""
    image: str
    """Raw image TIFF, relative to the data folder (``--data``)."""
    labels: str
    """Instance label TIFF of the same shape, relative to the data folder."""
    dataset: str
    """Dataset name: the item's source becomes ``real:<dataset>``."""
    channel: str = "Hoechst"
    """What the image shows, in pipeline channel terms (a nuclear stain is ``Hoechst``)."""
    split: Split = "train"
    """Training-set split of this sample."""
    voxel_size: PositiveFloat3 | None = None
    """Voxel size (z, y, x) in um; ``null`` reads it from the TIFF metadata (image, else labels)."""
    rescale: RescaleConfig | None = None
    """Per-sample rescaling; ``null`` uses ``samples.rescale``."""


def _default_samples() -> list[SampleSource]:
    ovule = RescaleConfig(mode="nucleus_size")
    out = [
        SampleSource(
            id=f"ovule-{n}",
            image=f"ovule-nuclei-3d/{n}_mini_raw.tif",
            labels=f"ovule-nuclei-3d/{n}_mini_label.tif",
            dataset="ovule-nuclei-3d",
            split=split,
            rescale=ovule,
        )
        for n, split in (("1135", "train"), ("1136", "val"), ("1137", "train"))
    ]
    out.append(
        SampleSource(
            id="embryo-8cell",
            image="embryo-nuclei-3d/8_cell_stage_raw.tif",
            labels="embryo-nuclei-3d/8_cell_stage_label.tif",
            dataset="embryo-nuclei-3d",
            split="train",
            voxel_size=(2.18, 1.0, 1.0),
        )
    )
    return out


class SamplesConfig(StrictModel):
    """Training items from real 3D samples (``spheroid trainset from-samples``)."""

    items: list[SampleSource] = Field(default_factory=_default_samples)
    """The samples; paths are relative to ``--data`` (default: the public samples in ../shared/data)."""
    rescale: RescaleConfig = Field(default_factory=RescaleConfig)
    """Default rescaling for samples without their own ``rescale``."""
    target: TargetConfig = Field(default_factory=lambda: TargetConfig(min_area=0, smooth="majority", smooth_radius=1))
    """Target preparation after rescaling: gold labels need no small-piece removal, only smoothing of
    the nearest-neighbour resampling steps."""


class SynthSetConfig(StrictModel):
    """Training items from the synthetic generator (``spheroid trainset from-synth``)."""

    synth: SynthConfig = Field(default_factory=lambda: SynthConfig(shape=(21, 256, 256), n_timepoints=2))
    """Generator settings (its ``wells`` are replaced by the keys of ``wells`` below)."""
    wells: dict[str, Split] = Field(default_factory=lambda: {"B2": "train", "B3": "train", "B4": "train", "B5": "val", "B6": "test"})
    """Wells to simulate and the split each goes to; a whole spheroid stays in one split, so
    validation never sees a time point of a training spheroid."""
    timepoints: list[int] | None = None
    """Time points to take from each well (0-based); ``null`` takes all."""
    channel: Literal["Hoechst", "Cy3", "GFP"] = "Hoechst"
    """Channel stored as the item image."""
    target: TargetConfig = Field(default_factory=lambda: TargetConfig(min_area=0, smooth="none"))
    """Target preparation: synthetic labels are exact, so only the edge class is added by default."""
    vary: dict[str, list[float] | list[list[float]]] = Field(default_factory=dict)
    """Generator settings drawn anew for every well, uniformly in ``[low, high]``: keys are
    ``synth`` fields, dotted for nested ones (``noise.read_noise``, ``brightness.hoechst``).
    A number field takes ``[low, high]``; a tuple field takes one ``[low, high]`` per element,
    or a single ``[low, high]`` factor applied to the whole tuple. What was drawn is recorded
    in each item's provenance. E.g. ``{packing: [0.15, 0.45], psf_sigma_um: [[3, 6], [0.7, 1.2],
    [0.7, 1.2]]}``: training data that varies what real stacks vary."""
    resample_to: PositiveFloat3 | None = None
    """Render at ``synth.voxel_size`` (which ``vary`` may change) and resample image (linear,
    anti-aliased) and labels (nearest) to this voxel size (z, y, x um), as ``spheroid segment``
    resamples data to a model's voxel size; ``synth.shape`` is then the shape after resampling."""

    @field_validator("vary")
    @classmethod
    def _known_settings(cls, value: dict) -> dict:
        base = SynthConfig().model_dump()
        for key, spec in value.items():
            node = base
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise ValueError(f"{key!r} is not a synth setting")
                node = node[part]
            if isinstance(node, bool) or not isinstance(node, (int, float, list, tuple)):
                raise ValueError(f"{key!r} is not a number or a tuple of numbers")
            pairs = spec if spec and isinstance(spec[0], list) else [spec]
            if isinstance(node, (list, tuple)) and isinstance(spec[0], list) and len(spec) != len(node):
                raise ValueError(f"{key!r}: {len(spec)} ranges for a tuple of {len(node)}")
            if not isinstance(node, (list, tuple)) and isinstance(spec[0], list):
                raise ValueError(f"{key!r}: one [low, high] range for a number")
            for pair in pairs:
                if len(pair) != 2 or pair[0] > pair[1]:
                    raise ValueError(f"{key!r}: ranges are [low, high] with low <= high, got {pair}")
        return value

    @field_validator("wells")
    @classmethod
    def _some_wells(cls, value: dict[str, Split]) -> dict[str, Split]:
        if not value:
            raise ValueError("at least one well is needed")
        return value


class CorrectionsConfig(StrictModel):
    """Human-in-the-loop round trips (``export-corrections`` / ``import-corrections``)."""

    images: list[str] = Field(default_factory=lambda: ["preprocessed", "raw"], min_length=1)
    """Store images to export, in order of preference (the first whose volume is done is used)."""
    labels: str = "nuclei"
    """Label image of the store holding the predictions to correct."""
    channel: str | None = None
    """Channel to export; ``null``: Hoechst if present, else the first channel."""
    split: Split = "train"
    """Split that imported corrections go to."""
    source: Literal["hand-corrected"] = "hand-corrected"
    """Training-set source of imported corrections."""


class GroundTruthConfig(StrictModel):
    """Ground truth, training sets and corrections (``spheroid groundtruth`` and friends)."""

    target: TargetConfig = Field(default_factory=TargetConfig)
    """Target preparation for Cellpose output and hand-drawn / corrected masks (thesis defaults)."""
    masks: MaskConfig = Field(default_factory=MaskConfig)
    """How input masks are read (binary masks become instances)."""
    samples: SamplesConfig = Field(default_factory=SamplesConfig)
    """Real samples for ``trainset from-samples``."""
    synth: SynthSetConfig = Field(default_factory=SynthSetConfig)
    """Synthetic spheroids for ``trainset from-synth``."""
    corrections: CorrectionsConfig = Field(default_factory=CorrectionsConfig)
    """Export / import of corrections."""

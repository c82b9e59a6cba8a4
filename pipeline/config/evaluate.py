"""Configuration of the evaluation stage: matching thresholds, the thesis' score, plots."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import StrictModel
from pipeline.config.cluster import ClusterConfig


class PlotConfig(StrictModel):
    """The PNG figures written beside the tables."""

    enabled: bool = True
    """Write the figures (metrics against threshold, score histogram, error plots, overlay)."""
    overlay_image: int = Field(0, ge=0)
    """Which evaluated volume (in the order of ``per_image.csv``) the overlay shows; the last
    one when there are fewer."""
    overlay_slices: list[Annotated[int, Field(ge=0)]] | None = None
    """z indices of the overlay's panels; by default three through the ground truth's extent
    in z: near its top, its middle and near its bottom."""
    image_channel: int | str | None = None
    """Channel of the raw image under the overlay: an index, or a name for store images; by
    default the channel the labels were made from (stores), else the first."""
    histogram_bins: int = Field(20, ge=2, le=200)
    """Bins of the per-nucleus score histogram over [0, 1]."""
    error_bins: int = Field(10, ge=2, le=50)
    """Bins of depth and of nucleus size in the error plots (``errors.png``)."""
    dpi: int = Field(120, ge=50, le=600)
    """Resolution of the PNG files."""


class EvaluateConfig(StrictModel):
    """``spheroid evaluate``: predicted labels against ground truth."""

    thresholds: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    """Matching thresholds (a pair matches when its score is >= the threshold); each in (0, 1]."""
    criterion: Literal["iou", "iot", "iop"] = "iou"
    """Pair score: intersection over union, over the true object, or over the predicted one."""
    report_threshold: float = Field(0.5, gt=0, le=1)
    """Threshold of the per-nucleus ``matched_id``/``iou`` columns, ``per_image.csv`` and the overlay."""
    sub_weight: float = Field(0.95, ge=0)
    """Weight of the sub-region Dice in the Evaluation Score (thesis Eq. 9: 0.95)."""
    full_weight: float = Field(1.05, ge=0)
    """Weight of the full-image Dice in the Evaluation Score (thesis Eq. 9: 1.05)."""
    sub_region: Literal["foreground", "nucleus"] = "foreground"
    """Ground truth of the sub-region Dice inside each nucleus' bounding box: every true
    voxel in the box (``foreground``: identical inputs score 1 even where nuclei touch) or
    the nucleus alone (``nucleus``: predicted neighbours in the box count as false positives)."""
    ctc_seg: bool = True
    """Also compute the Cell Tracking Challenge SEG measure."""
    class_names: list[str] = Field(default_factory=lambda: ["background", "edge", "nucleus"])
    """Names of the classes 0, 1, 2... of semantic masks (``--semantic-truth/--semantic-pred``)."""
    truth_labels: str = "nuclei"
    """Label image (``labels/<name>``) read from a ground-truth store."""
    pred_labels: str = "nuclei"
    """Label image read from a prediction store."""
    semantic_labels: str = "semantic"
    """Label image holding class maps, read from stores given as semantic masks."""
    tiff_axes: Literal["YX", "ZYX", "TZYX", "TCZYX"] | None = None
    """Axes of label TIFFs whose metadata does not name them; by default by dimension:
    2 YX, 3 ZYX, 4 TZYX, 5 TCZYX. Axes named in the file (ImageJ, OME) are used as they are."""
    channel_names: list[str] | None = None
    """Names of the channels (the c axis of stores and TCZYX files); ``c0, c1...`` (or the
    store's raw channel names) when unset."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Where the volumes are evaluated (several in parallel); a single pair runs in-process."""
    plots: PlotConfig = Field(default_factory=PlotConfig)
    """The figures."""

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("give at least one threshold")
        if any(not 0 < t <= 1 for t in value):
            raise ValueError(f"thresholds must lie in (0, 1], got {value}")
        if len(set(value)) != len(value):
            raise ValueError(f"thresholds repeat: {value}")
        return sorted(float(t) for t in value)

    @field_validator("class_names")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError(f"give at least two distinct class names, got {value}")
        return value

    @model_validator(mode="after")
    def _report_in_thresholds(self) -> "EvaluateConfig":
        if self.report_threshold not in self.thresholds:
            raise ValueError(f"report_threshold {self.report_threshold} must be one of thresholds {self.thresholds}")
        return self

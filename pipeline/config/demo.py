"""Configuration of ``spheroid demo``: the whole pipeline on a generated example."""

from __future__ import annotations

from pydantic import Field

from pipeline.config.base import StrictModel
from pipeline.config.cluster import ClusterConfig
from pipeline.config.convert import ConvertConfig
from pipeline.config.evaluate import EvaluateConfig
from pipeline.config.preprocess import PreprocessConfig
from pipeline.config.segment import SegmentConfig
from pipeline.config.synth import PhaseDurations, SynthConfig


def _demo_synth() -> SynthConfig:
    return SynthConfig(
        shape=(21, 256, 256),
        n_timepoints=4,
        wells=["B10", "B11"],
        seed=0,
        phases=PhaseDurations(early_g1=1.0, g1=3.0, g1_s=1.0, s_g2_m=3.0, cv=0.2),
    )


class DemoConfig(StrictModel):
    """Every stage's settings for the demo; each section is that stage's own config model."""

    synth: SynthConfig = Field(default_factory=_demo_synth)
    """The example: two wells, 4 time points of 21 x 256 x 256, a fast cell cycle."""
    convert: ConvertConfig = Field(default_factory=ConvertConfig)
    """Conversion of the exported TIFFs into the store."""
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    """The filter chain (thesis section 2.6)."""
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    """Segmentation (the shipped U-Net on raw Hoechst)."""
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    """Scoring against the generator's ground truth."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """One local Dask cluster shared by all stages."""

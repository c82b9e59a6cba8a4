"""Configuration of ``spheroid demo``: ``spheroid run`` on a generated example plate."""

from __future__ import annotations

from pydantic import Field

from pipeline.config.base import StrictModel
from pipeline.config.cellcycle import CellcycleConfig, TrackConfig
from pipeline.config.cluster import ClusterConfig
from pipeline.config.convert import ConvertConfig
from pipeline.config.evaluate import EvaluateConfig
from pipeline.config.preprocess import PreprocessConfig
from pipeline.config.report import DoseResponseConfig, ReportConfig
from pipeline.config.segment import SegmentConfig
from pipeline.config.synth import DrugResponse, PhaseDurations, SynthConfig

DEMO_DOSES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
"""Doses of the demo's drug (uM): six, half a decade apart, around its EC50 of 1 uM."""
DEMO_CONTROLS = ("B2", "B3", "B4")
"""Untreated wells of the demo plate."""
DEMO_REPLICATE_ROWS = ("C", "D")
"""Each dose is given to one well per row (columns 2-7): two replicates."""


def demo_plate() -> dict[str, float]:
    """Well -> dose of the demo plate (controls at 0)."""
    doses = {w: 0.0 for w in DEMO_CONTROLS}
    for row in DEMO_REPLICATE_ROWS:
        for col, dose in enumerate(DEMO_DOSES, start=2):
            doses[f"{row}{col}"] = dose
    return doses


def _demo_synth() -> SynthConfig:
    doses = demo_plate()
    return SynthConfig(
        shape=(21, 128, 128),
        n_timepoints=6,
        wells=list(doses),
        seed=0,
        phases=PhaseDurations(early_g1=1.0, g1=3.0, g1_s=1.0, s_g2_m=3.0, cv=0.2),
        arrest_depth_um=35.0,
        drug=DrugResponse(name="arrestin", unit="uM", ec50=1.0, hill=1.5, bottom=0.0, top=0.9, doses={w: d for w, d in doses.items() if d > 0}),
    )


def _demo_report() -> ReportConfig:
    return ReportConfig(dose_response=DoseResponseConfig(g1_time="first"))


class DemoConfig(StrictModel):
    """The example plate and every stage's settings; each section is that stage's own config model."""

    synth: SynthConfig = Field(default_factory=_demo_synth)
    """The example plate: 3 control wells and one G1-arresting drug (EC50 1 uM, Hill 1.5, up to
    90 % of the cells arrested) at 6 doses in 2 replicate wells each; 6 time points of
    21 x 128 x 128 voxels, a fast cell cycle (8 time points). Wells with a dose in
    ``synth.drug.doses`` are the drug's, the others controls."""
    convert: ConvertConfig = Field(default_factory=ConvertConfig)
    """Conversion of the exported TIFFs into the store."""
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    """The filter chain (thesis section 2.6)."""
    segment: SegmentConfig = Field(default_factory=lambda: SegmentConfig(channel=["Hoechst", "Cy3", "GFP"]))
    """Segmentation: the shipped U-Net on the sum of the three raw channels. On Hoechst alone
    the share of nuclei found moves with the cell cycle (G1-arrested wells gain recall over
    time, 0.60 -> 0.71 at 30 uM), which biases the growth read-out; on the sum it does not
    (0.69 -> 0.69)."""
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    """Scoring against the generator's ground truth."""
    evaluate_wells: list[str] | None = Field(default_factory=lambda: ["B2", "C4", "D7"])
    """Wells whose ground truth is scored (a control, the EC50 dose, the highest dose); all
    when ``null``."""
    cellcycle: CellcycleConfig = Field(default_factory=CellcycleConfig)
    """Intensities and phases."""
    track: TrackConfig = Field(default_factory=TrackConfig)
    """Tracking."""
    report: ReportConfig = Field(default_factory=_demo_report)
    """The report. The G1 fraction is read at the first time point: the wells are imaged after
    the drug has acted, and later the untreated cells outgrow the arrested ones."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """One local Dask cluster shared by all stages."""

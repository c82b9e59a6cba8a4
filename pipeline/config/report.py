"""Configuration of the report (``spheroid report``, the last stage of ``spheroid run``)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, field_validator

from pipeline.config.base import StrictModel

TimePoint = Union[int, Literal["first", "last"]]
"""A time point: its 0-based index, or ``first`` / ``last``."""

CutFace = Literal["top", "bottom", "y-", "y+", "x-", "x+"]


class DepthConfig(StrictModel):
    """Depth of each nucleus below the spheroid's rim (see :mod:`pipeline.report.tables`)."""

    bins_um: list[float] = Field(default_factory=lambda: [0.0, 20.0, 40.0, 60.0, 90.0])
    """Left edges of the depth classes (um from the rim); the last class is open-ended."""
    cut_faces: list[CutFace] = Field(default_factory=lambda: ["top"])
    """Faces of the image stack that cut through the spheroid, so that the hull of the nuclei
    there is not its surface. ``top``: the last z slice (an inverted microscope images a
    spheroid from below: slice 0 lies at the well bottom, the stack ends inside the
    spheroid); add ``y-``, ``y+``, ``x-``, ``x+`` when the spheroid is wider than the field."""
    cut_margin_um: float = Field(10.0, ge=0)
    """A hull face counts as lying on a cut face of the stack when all its corners are this close
    to it (about one nucleus diameter)."""

    @field_validator("bins_um")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if not value or value[0] != 0 or any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError("depth classes start at 0 and increase, e.g. [0, 20, 40, 60, 90]")
        return value


class DoseResponseConfig(StrictModel):
    """Four-parameter log-logistic fits per drug and read-out (see :mod:`pipeline.report.doseresponse`)."""

    readouts: list[Literal["g1_fraction", "growth"]] = Field(default_factory=lambda: ["g1_fraction", "growth"])
    """Read-outs fitted: ``g1_fraction`` (fraction of live nuclei called G1 at ``g1_time``) and
    ``growth`` (nuclei at ``growth_to`` over nuclei at ``growth_from``)."""
    g1_time: TimePoint = "last"
    """Time point of the G1 fraction read-out. The default, the last, is the longest exposure
    when the drug is added as imaging starts; for wells imaged after the drug has acted
    (the demo plate) the first time point shows the arrest before the untreated cells have
    grown past the arrested ones."""
    growth_from: TimePoint = "first"
    """Time point the growth read-out starts from."""
    growth_to: TimePoint = "last"
    """Time point the growth read-out ends at."""
    confidence: float = Field(0.95, gt=0.5, lt=1)
    """Level of the EC50 confidence interval (Wald interval on log10 EC50, t distribution
    with n - 4 degrees of freedom)."""
    min_doses: int = Field(3, ge=2)
    """Fewest distinct positive doses (controls aside) for a fit; fewer are flagged, not fitted."""
    max_hill: float = Field(10.0, gt=0)
    """Largest Hill slope the fit may take (bounds keep it from a step function)."""


class ReportConfig(StrictModel):
    """The experiment's report: tables, figures and one HTML page under ``<store>/<output>/``."""

    output: str = "report"
    """Folder inside the store (or a path or URL of its own) the report is written to."""
    labels: str = "nuclei"
    """Label image the thumbnails outline."""
    table: str = "nuclei"
    """Per-field nucleus table (from ``spheroid cellcycle`` / ``spheroid track``)."""
    tracks_table: str = "tracks"
    """Per-field track table (from ``spheroid track``); per-track phase durations."""
    depth: DepthConfig = Field(default_factory=DepthConfig)
    """Depth below the spheroid's rim."""
    depth_time: TimePoint = "last"
    """Time point of the phase-by-depth figure (the table has every time point)."""
    dose_response: DoseResponseConfig = Field(default_factory=DoseResponseConfig)
    """Dose-response fits."""
    thumbnail_time: TimePoint = "last"
    """Time point shown in each well's thumbnail (its middle z slice)."""
    thumbnail_px: int = Field(160, ge=32, le=1024)
    """Width of the thumbnails in pixels."""
    dpi: int = Field(100, ge=50, le=300)
    """Resolution of the figures."""
    csv: bool = True
    """Write every table as CSV too (beside the Parquet file)."""

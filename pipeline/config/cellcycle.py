"""Configuration of the cell-cycle stage (``spheroid cellcycle``) and of tracking (``spheroid track``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import StrictModel
from pipeline.config.cluster import ClusterConfig


class ChannelRoles(StrictModel):
    """Which channel of the image plays which part (names as the store or ``--channels`` give them)."""

    nuclear: str = "Hoechst"
    """The DNA stain that shows every nucleus (measured, not used for the phase)."""
    red: str = "Cy3"
    """FUCCI red: Cdt1, high in G1 and G1/S."""
    green: str = "GFP"
    """FUCCI green: Geminin, high in G1/S and S/G2/M."""
    dead: str | None = None
    """A dead-cell stain (DRAQ7...), when the data have one: its high nuclei are flagged ``dead``."""


class BackgroundConfig(StrictModel):
    """How the background under each nucleus is estimated (see ``pipeline.cellcycle.background``)."""

    method: Literal["local", "slice"] = "local"
    """``local``: median of a shell of free voxels around each nucleus; ``slice``: median of the
    voxels outside nuclei in each z-slice."""
    shell_um: float = Field(2.5, gt=0)
    """Thickness of the ``local`` shell in um."""


class ThresholdConfig(StrictModel):
    """How intensities become low/high calls (see ``pipeline.cellcycle.phase``)."""

    statistic: Literal["mean", "median"] = "median"
    """Per-nucleus intensity the calls use (background-corrected). The median is the
    robust choice: a nucleus' edge voxels carry the blur of its neighbours."""
    method: Literal["otsu", "gmm", "fixed"] = "otsu"
    """``otsu``: Otsu's threshold on log10 intensity over all nuclei of all wells; ``gmm``: a
    Gaussian mixture on the same; ``fixed``: the values below. Otsu classified synthetic
    spheroids best (docs/CELLCYCLE.md)."""
    components: int = Field(3, ge=2, le=6)
    """Mixture components for ``gmm``: the brightest is the high class, the others together
    the low class (background-corrected reporters have a spike at zero, a spread of
    dim nuclei and the expressing nuclei: three)."""
    floor: float | None = Field(None, gt=0)
    """Intensities below this count as this before taking the log; when unset, the noise of the
    background-corrected values (1.4826 x median |value| of the nuclei at or below zero)."""
    red: float | None = Field(None, gt=0)
    """Fixed red threshold (intensity units, after background and depth correction); ``method: fixed``."""
    green: float | None = Field(None, gt=0)
    """Fixed green threshold; ``method: fixed``."""
    dead: float | None = Field(None, gt=0)
    """Fixed dead-stain threshold; when unset the dead stain is split like the reporters."""
    dead_separation: float = Field(2.0, ge=0)
    """The dead stain's two classes must be at least this far apart (Ashman's D) for any
    nucleus to be flagged dead: a channel without dead nuclei is not split in two."""
    overexposed_sigma: float | None = Field(3.0, gt=0)
    """A nucleus whose nuclear stain (depth-corrected) lies more than this many robust spreads
    above the median is over-exposed (bright in every channel): its reporters are scaled down
    by the same factor before the calls (``pipeline.cellcycle.overexposure``); null: off."""

    @model_validator(mode="after")
    def _fixed_needs_values(self) -> "ThresholdConfig":
        if self.method == "fixed" and (self.red is None or self.green is None):
            raise ValueError("method 'fixed' needs both 'red' and 'green' thresholds")
        return self


class DepthConfig(StrictModel):
    """Correction of the fall of intensity with depth (see ``pipeline.cellcycle.depth``)."""

    enabled: bool = True
    """Fit and remove each reporter's fall with z before thresholding (3-D data only)."""
    iterations: int = Field(3, ge=1, le=20)
    """Alternations of threshold and slope."""


class CellcycleConfig(StrictModel):
    """Per-nucleus intensities and FUCCI phase for every field and time point."""

    input: str = "raw"
    """Image measured: the raw data (``raw``), not a contrast-enhanced copy."""
    labels: str = "nuclei"
    """Label image under ``labels/`` that outlines the nuclei."""
    channels: ChannelRoles = Field(default_factory=ChannelRoles)
    """Channel roles."""
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    """Background per nucleus."""
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    """Low/high calls."""
    depth: DepthConfig = Field(default_factory=DepthConfig)
    """Depth correction."""
    table: str = "nuclei"
    """Name of the per-field table written (``tables/<table>.parquet``)."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Where the measurement tasks run (one task per field and time point)."""


class SmoothingConfig(StrictModel):
    """Phases along each track: an HMM with the cycle's order (see ``pipeline.cellcycle.smooth``)."""

    enabled: bool = True
    """Decode each track's phases (``phase_track``); the per-track durations then use them."""
    error_rate: float = Field(0.2, gt=0, lt=1)
    """Probability that a frame's single-frame call is misread whatever its confidence (mixed
    in as a uniform emission), so one outlying frame does not move the whole path."""
    dwell_frames: float = Field(3.0, gt=1)
    """Mean frames per phase in the transition prior (stay ``1 - 1/dwell_frames``). The same for
    every phase on purpose: the durations are what the experiment measures, not an input."""
    missed_division: float = Field(0.1, ge=0, lt=0.5)
    """Probability per frame that a track in S/G2/M goes on in early G1: a division the tracker
    missed, which continues the mother's track into one daughter (the cycle wraps round)."""
    birth_early_g1: float = Field(0.9, gt=0, lt=1)
    """Probability that a track born by division starts in early G1."""
    off_order: float = Field(1e-6, gt=0, lt=0.1)
    """Probability of any move against the cycle's order (a tracking error)."""


class TrackConfig(StrictModel):
    """Linking nuclei over time (laptrack: LAP frame linking, then gap closing and divisions)."""

    max_distance_um: float = Field(10.0, gt=0)
    """Farthest a nucleus moves between two frames (um)."""
    gap_frames: int = Field(2, ge=0, le=10)
    """Longest gap closed (frames a nucleus may be missed, plus one); 0 closes no gap."""
    gap_distance_um: float | None = Field(None, gt=0)
    """Farthest distance across a gap (um); ``max_distance_um`` when unset."""
    division_distance_um: float = Field(12.0, gt=0)
    """Farthest a daughter's first position lies from its mother's last (um); 0 disables divisions."""
    divisions: bool = True
    """Detect divisions (a mother's track ends, two daughter tracks start)."""
    division_phase_check: bool = True
    """With phases in the table: keep a division only if the mother was last seen in S/G2/M
    or G1/S and is not dead (a FUCCI mother is green before it divides)."""
    tile_nuclei: int | None = Field(None, ge=10)
    """When set, fields of more than twice this many nuclei per frame are tracked in overlapping
    y/x tiles of about this many nuclei each (see ``pipeline.cellcycle.tiles``); ``null``
    (default) tracks every frame whole. Tiles paid off while laptrack's candidate search was
    quadratic in the nuclei per frame; with the k-d tree search (``pipeline.cellcycle.lap``)
    whole frames are faster (5,000 nuclei x 40 frames 30 s whole, 65 s in tiles of 1,500)."""
    tile_margin: float = Field(3.0, ge=1.0)
    """Overlap of the tiles on every side, in multiples of the longest linking distance."""
    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig)
    """Phases along each track (written as ``phase_track``), when the table has phases."""
    window: int = Field(40, ge=4)
    """Frames tracked at once; consecutive windows overlap and carry their links forward, so
    memory stays flat in the number of time points."""
    table: str = "nuclei"
    """Per-field nucleus table to read and update with ``track_id`` / ``parent_track_id``."""
    tracks_table: str = "tracks"
    """Per-field table of tracks written (``tables/<tracks_table>.parquet``)."""

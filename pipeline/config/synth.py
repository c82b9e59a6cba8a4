"""Configuration of the synthetic FUCCI spheroid generator (``spheroid synth``).

Intensities are in 16-bit camera units (ADU) whatever ``bit_depth`` says; a lower
bit depth scales them down and saturates at ``2**bit_depth - 1``. Lengths are in
micrometres, durations in time points. See :mod:`pipeline.synth` for the model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import StrictModel

PositiveFloat3 = tuple[float, float, float]


class PhaseDurations(StrictModel):
    """Mean time spent in each FUCCI phase, in time points (one cycle is their sum).

    The defaults (48 time points of 30 min: a 24 h cycle) suit real time-lapses;
    for a short demo use a fast cycle such as ``{early_g1: 1, g1: 2, g1_s: 1, s_g2_m: 2}``.
    """

    early_g1: float = Field(4.0, gt=0)
    """Early G1, right after division: neither FUCCI reporter is visible."""
    g1: float = Field(18.0, gt=0)
    """G1: Cdt1-Cy3 (red) only."""
    g1_s: float = Field(4.0, gt=0)
    """G1/S transition: red fading while green rises, both visible (yellow)."""
    s_g2_m: float = Field(22.0, gt=0)
    """S/G2/M: Geminin-GFP (green) only; the nucleus divides at its end."""
    cv: float = Field(0.2, ge=0, le=1)
    """Cell-to-cell coefficient of variation of every duration (log-normal)."""


def parse_well_name(well: str) -> tuple[str, str]:
    """Row and column of a well name (see :func:`pipeline.io.plate.parse_well`)."""
    from pipeline.io.plate import parse_well

    return parse_well(well)


class ChannelTriple(StrictModel):
    """One value per channel, in channel order (Hoechst, Cy3, GFP)."""

    hoechst: float = Field(ge=0)
    """Hoechst (nuclear stain, all nuclei)."""
    cy3: float = Field(ge=0)
    """Cy3: FUCCI red (Cdt1), G1."""
    gfp: float = Field(ge=0)
    """GFP: FUCCI green (Geminin), S/G2/M."""

    def values(self) -> tuple[float, float, float]:
        """The three values in channel order."""
        return (self.hoechst, self.cy3, self.gfp)


class NoiseConfig(StrictModel):
    """Detector model: background, shot noise and read noise (all in 16-bit ADU)."""

    background: ChannelTriple = Field(default_factory=lambda: ChannelTriple(hoechst=180.0, cy3=220.0, gfp=150.0))
    """Mean background (dark offset plus out-of-focus light) per channel."""
    vignetting: float = Field(0.2, ge=0, lt=1)
    """Relative drop of background and signal from the centre to the corners of the field."""
    gain: float = Field(4.0, gt=0)
    """ADU per photo-electron: the signal is divided by it, Poisson-sampled, multiplied back."""
    read_noise: float = Field(20.0, ge=0)
    """Standard deviation of the Gaussian read noise (ADU)."""


class DrugResponse(StrictModel):
    """One drug that holds cells in G1, with a known dose-response (a Hill curve).

    The images show the wells after the drug has acted: at the first time point a
    fraction ``p(dose)`` of the cells, drawn at random, is arrested in late G1 (bright
    Cdt1-red) and never divides; the others cycle as without the drug. With
    ``p(d) = bottom + (top - bottom) * d**hill / (d**hill + ec50**hill)`` the fraction of
    G1 nuclei at the first time point and the growth of the nucleus count are both linear
    in ``p``, so a dose-response fit of either read-out recovers ``ec50``.
    """

    name: str = "drug"
    """Name of the drug (as a plate layout gives it)."""
    unit: str = "uM"
    """Unit of ``ec50`` and of the doses."""
    ec50: float = Field(gt=0)
    """Dose at which half of the maximal arrest is reached (in ``unit``)."""
    hill: float = Field(1.0, gt=0)
    """Hill coefficient: the steepness of the curve."""
    bottom: float = Field(0.0, ge=0, le=1)
    """Fraction of cells arrested without the drug (dose 0)."""
    top: float = Field(0.9, ge=0, le=1)
    """Fraction of cells arrested at saturating doses."""
    doses: dict[str, float] = Field(default_factory=dict)
    """Dose per well (in ``unit``); wells not listed get dose 0 (untreated controls)."""

    @field_validator("doses")
    @classmethod
    def _doses(cls, value: dict[str, float]) -> dict[str, float]:
        from pipeline.errors import SpheroidError
        from pipeline.io.plate import parse_well

        out = {}
        for well, dose in value.items():
            try:
                row, col = parse_well(well)
            except SpheroidError as exc:
                raise ValueError(str(exc)) from None
            if not dose >= 0:
                raise ValueError(f"well {well}: dose must be >= 0 (got {dose})")
            out[f"{row}{col}"] = float(dose)
        return out

    def dose(self, well: str) -> float:
        """The dose given to ``well`` (0 when it is not listed)."""
        from pipeline.io.plate import parse_well

        row, col = parse_well(well)
        return self.doses.get(f"{row}{col}", 0.0)

    def arrested_fraction(self, dose: float) -> float:
        """``p(dose)``: the Hill curve (the fraction of cells arrested in G1)."""
        if dose <= 0:
            return self.bottom
        x = (dose / self.ec50) ** self.hill
        return self.bottom + (self.top - self.bottom) * x / (1.0 + x)


class SynthConfig(StrictModel):
    """Synthetic 3-channel FUCCI spheroid time-lapses with ground truth (``spheroid synth``)."""

    shape: tuple[int, int, int] = (21, 512, 512)
    """Stack shape ``(z, y, x)`` in voxels (thesis data: 21 x 512 x 512)."""
    n_timepoints: int = Field(11, ge=1)
    """Number of time points (thesis data: 11)."""
    wells: list[str] = Field(default_factory=lambda: ["B10"])
    """Wells to generate, one spheroid each (different random streams), e.g. ``["B10", "B11"]``."""
    voxel_size: PositiveFloat3 = (5.0, 1.24, 1.24)
    """Voxel size ``(z, y, x)`` in micrometres (thesis: 5 um z-step, 1.24 um pixels)."""
    time_step_s: float = Field(1800.0, gt=0)
    """Seconds between time points (thesis: 30 min)."""
    seed: int = Field(0, ge=0)
    """Random seed; with the well name it fixes every random draw (same seed, same output)."""

    n_nuclei: int | None = Field(None, ge=1)
    """Nuclei in the simulated slab at the first time point; derived from ``packing`` when unset."""
    spheroid_radius_um: float | None = Field(None, gt=0)
    """Spheroid radius in x/y (um); when unset 36 % of the field width, or derived from
    ``n_nuclei`` and ``packing`` when only ``n_nuclei`` is given."""
    spheroid_flattening: float = Field(0.8, gt=0, le=2)
    """Spheroid z semi-axis as a fraction of its x/y radius (spheroids settle on the well bottom)."""
    spheroid_bottom_um: float = -5.0
    """Height of the spheroid's lowest point above the first slice (um); slice 0 is closest to the
    objective, so deeper slices image further into the spheroid."""
    packing: float = Field(0.3, gt=0, le=0.6)
    """Fraction of the spheroid volume occupied by nuclei, used to derive the nucleus count or
    the spheroid radius."""
    contact: float = Field(0.92, gt=0.5, le=1.2)
    """Closest centre distance of two nuclei as a fraction of the sum of their radii; below 1
    neighbours touch along flat faces (the labels still never overlap)."""

    nucleus_diameter_um: tuple[float, float] = (8.0, 14.0)
    """Range of nucleus diameters (um, equivalent sphere); a nucleus grows within it from birth to
    division (breast-cancer nuclei: ~8-14 um, i.e. ~6-11 px in x/y and ~2-3 slices in z)."""
    elongation: tuple[float, float] = (1.0, 1.6)
    """Range of the long-to-short axis ratio in x/y; orientation in x/y is random."""
    z_ratio: tuple[float, float] = (0.75, 1.0)
    """Range of the z semi-axis relative to the x/y mean (nuclei are slightly flattened)."""

    phases: PhaseDurations = Field(default_factory=PhaseDurations)
    """Cell-cycle phase durations (time points)."""
    arrest_depth_um: float | None = Field(90.0, gt=0)
    """Quiescent core: cells deeper than about this below the spheroid surface (um, varying
    by ~20 % per cell) stop in late G1, bright Cdt1-red, as FUCCI spheroids show a cycling rim
    around an arrested core; ``null`` lets every cell cycle."""
    drug: DrugResponse | None = None
    """A drug that arrests cells in G1 with a known dose-response, and the dose of each well
    (:class:`DrugResponse`); ``null`` (the default): no drug in any well."""
    division: bool = True
    """Nuclei at the end of S/G2/M divide into two early-G1 daughters with new track ids."""
    motion_um: float = Field(1.2, ge=0)
    """Standard deviation of a nucleus' random step per time point (um, per axis)."""
    motion_persistence: float = Field(0.6, ge=0, lt=1)
    """Velocity memory between time points (0: independent steps; towards 1: smooth drift)."""
    rotation_deg: float = Field(8.0, ge=0)
    """Standard deviation of a nucleus' turn in x/y per time point (degrees)."""

    brightness: ChannelTriple = Field(default_factory=lambda: ChannelTriple(hoechst=8000.0, cy3=10000.0, gfp=8000.0))
    """Median peak intensity of a nucleus fully expressing the channel, before attenuation (ADU)."""
    brightness_cv: float = Field(0.35, ge=0, le=2)
    """Nucleus-to-nucleus variability of every channel's brightness (log-normal CV)."""
    texture: float = Field(0.35, ge=0, le=1)
    """Relative voxel-scale chromatin texture inside nuclei (Hoechst; half as much for FUCCI)."""
    hoechst_g2_gain: float = Field(0.6, ge=0)
    """Extra Hoechst brightness at the end of S/G2/M (doubled DNA content), ramped over the phase."""
    depth_attenuation_um: ChannelTriple = Field(default_factory=lambda: ChannelTriple(hoechst=90.0, cy3=250.0, gfp=180.0))
    """Signal falls as ``exp(-z / length)`` with depth z (um) below the first slice, per channel."""
    hoechst_penetration_um: float | None = Field(40.0, gt=0)
    """Hoechst staining fades towards the spheroid core with this length (um from the surface);
    ``null`` for uniform staining."""
    hoechst_core_floor: float = Field(0.3, ge=0, le=1)
    """Relative Hoechst staining left deep in the core."""
    cytoplasm: ChannelTriple = Field(default_factory=lambda: ChannelTriple(hoechst=120.0, cy3=90.0, gfp=110.0))
    """Diffuse autofluorescence inside the spheroid, between nuclei (ADU)."""

    psf_sigma_um: PositiveFloat3 = (4.5, 0.9, 0.9)
    """Gaussian PSF standard deviation ``(z, y, x)`` in um: the axial blur is much stronger."""
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    """Background and detector noise."""
    bit_depth: Literal[12, 14, 16] = 16
    """Detector bit depth: values saturate at ``2**bit_depth - 1`` (stored as uint16 anyway)."""

    glowing_fraction: float = Field(0.03, ge=0, le=1)
    """Fraction of nuclei that glow (over-exposed; they saturate the detector)."""
    glowing_gain: tuple[float, float] = (12.0, 30.0)
    """Range of the brightness factor of glowing nuclei."""
    artefacts: int = Field(150, ge=0)
    """Small bright point artefacts per channel and time point (scaled to a 21x512x512 stack),
    placed outside nuclei; a white top-hat removes them."""
    artefact_brightness: float = Field(9000.0, ge=0)
    """Median peak intensity of an artefact after blurring (ADU)."""

    @field_validator("shape")
    @classmethod
    def _shape_positive(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(value) < 1 or min(value[1:]) < 8:
            raise ValueError("shape needs z >= 1 and y, x >= 8 voxels")
        return value

    @field_validator("voxel_size", "psf_sigma_um")
    @classmethod
    def _positive_triple(cls, value: PositiveFloat3) -> PositiveFloat3:
        if min(value) <= 0:
            raise ValueError("all three values must be > 0")
        return value

    @field_validator("nucleus_diameter_um", "elongation", "z_ratio", "glowing_gain")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("expected a range (low, high) with 0 < low <= high")
        return value

    @field_validator("wells")
    @classmethod
    def _wells(cls, value: list[str]) -> list[str]:
        from pipeline.errors import SpheroidError
        from pipeline.io.plate import parse_well

        if not value:
            raise ValueError("at least one well is needed")
        for well in value:
            try:
                parse_well(well)
            except SpheroidError as exc:
                raise ValueError(str(exc)) from None
        if len(set(value)) != len(value):
            raise ValueError("well names must be unique")
        return value

    @model_validator(mode="after")
    def _elongation_at_least_one(self) -> "SynthConfig":
        if self.elongation[0] < 1:
            raise ValueError("elongation: the long-to-short axis ratio must be >= 1")
        return self

    @model_validator(mode="after")
    def _dosed_wells_exist(self) -> "SynthConfig":
        if self.drug is not None:
            wells = {"".join(parse_well_name(w)) for w in self.wells}
            unknown = sorted(set(self.drug.doses) - wells)
            if unknown:
                raise ValueError(f"drug.doses: well(s) {', '.join(unknown)} are not in 'wells'")
        return self

    @property
    def saturation(self) -> int:
        """The largest value the detector records."""
        return 2**self.bit_depth - 1

    @property
    def intensity_scale(self) -> float:
        """Factor from the 16-bit intensities in this config to the detector's range."""
        return 2.0 ** (self.bit_depth - 16)

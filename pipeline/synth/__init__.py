"""Synthetic FUCCI spheroids: 3-channel confocal time-lapses with exact ground truth.

:func:`generate` simulates one well and returns a :class:`SynthResult` (images,
instance labels, a per-nucleus truth table); :func:`write_export` writes it as a
microscope export (ImageJ TIFFs or an OME-TIFF) next to the truth. The command
line is ``spheroid synth OUT_DIR``; settings are :class:`SynthConfig`
(``configs/synth.yaml``). Same config, well and seed give identical output.

The model
---------
Geometry (:mod:`pipeline.synth.packing`, physical units, ``(z, y, x)``).
    The spheroid is an ellipsoid centred in the field, flattened in z
    (``spheroid_flattening``), its lowest point ``spheroid_bottom_um`` from the
    first slice. Slice 0 is closest to the objective of an inverted microscope, so
    deeper slices cut further into it. Cells live in the spheroid inside the imaged
    stack plus one nucleus radius around it, so nuclei cut by the stack borders
    exist. Their number comes from ``packing`` (nuclear volume fraction, ~7 % of
    a 21x512x512 stack is nucleus, as in the thesis) unless given.
Nuclei.
    Ellipsoids with a random x/y orientation, a long/short ratio in
    ``elongation`` and a z semi-axis ``z_ratio`` of the x/y mean. A nucleus' volume
    doubles from birth to division within ``nucleus_diameter_um`` (8-14 um:
    6-11 px in x/y, 2-3 slices in z). Packing: random start, then
    soft-sphere relaxation pushes pairs closer than ``contact * (r_i + r_j)``
    apart, keeping centres inside the spheroid; with ``contact < 1`` neighbours
    touch along flat faces. The labels are a partition: each voxel belongs to the
    nucleus it lies deepest in (smallest normalised ellipsoid distance).
Cell cycle (:mod:`pipeline.synth.population`).
    Phases early G1 -> G1 -> G1/S -> S/G2/M, with log-normal per-cell durations
    (``phases``, in time points); the first frame is an asynchronous population.
    Cells deeper than ``arrest_depth_um`` below the spheroid surface are
    quiescent: they stop in late G1 (bright red), so a cycling rim surrounds an
    arrested core, as FUCCI spheroids show (Browning et al., eLife 2021).
    Once nuclei fill half of the simulated region (the spheroid outgrew the
    field), contact inhibition holds every cell in G1, which bounds the population.
    At the end of S/G2/M a nucleus divides: the mother's track ends and two
    early-G1 daughters (new track ids, ``parent_track_id`` set) appear side by
    side at its place, each half its volume. The last 8 % of S/G2/M is mitosis:
    the chromatin condenses into a smaller, round, Hoechst-bright nucleus. The
    spheroid grows with the number of cells (radius ~ N^(1/3), bottom fixed).
Drug (optional, ``drug``: :class:`~pipeline.config.synth.DrugResponse`).
    One drug that holds cells in G1, given to each well at its own dose. The
    images show the wells after the drug has acted: at the first time point a
    fraction ``p(dose)`` of the cells (a Hill curve with a known ``ec50``, ``hill``,
    ``bottom`` and ``top``), drawn at random from the well's own drug stream, is
    arrested in late G1 and never divides; the other cells cycle as without the
    drug. The G1 fraction at the first time point and the growth of the nucleus
    count are then both linear in ``p``, so their dose-response curves have the
    generator's ``ec50``. Without ``drug`` (the default) nothing changes: the cells'
    and the pixels' random streams are the same as before the option existed.
Motion.
    A persistent random walk (``motion_um``, ``motion_persistence``), slow turns
    of the long axis (``rotation_deg``), then a few relaxation passes, so motion
    is small and smooth and divisions push neighbours aside.
FUCCI and Hoechst (:func:`pipeline.synth.population.fucci_levels`).
    Cy3 (Cdt1, red) ramps up in early G1 -> G1 and fades through G1/S (to the
    level early G1 ends at, then to nothing early in S/G2/M: the phases are the
    FUCCI read-out's, yellow G1/S, green S/G2/M); GFP (Geminin, green) rises through G1/S and early
    S/G2/M; both are low in early G1. Hoechst labels every nucleus and grows by
    ``hoechst_g2_gain`` over S/G2/M (DNA content). Per-nucleus log-normal
    brightness (``brightness``, ``brightness_cv``); nuclei are dimmer at their rim
    and carry voxel-scale chromatin texture (``texture``). Hoechst staining fades
    towards the spheroid core (``hoechst_penetration_um``, ``hoechst_core_floor``).
    A fraction ``glowing_fraction`` of nuclei glows ``glowing_gain`` times
    brighter and saturates the detector.
Optics (:mod:`pipeline.synth.render`).
    Diffuse autofluorescence in the spheroid between nuclei (``cytoplasm``);
    point artefacts outside nuclei (``artefacts``, ``artefact_brightness``);
    an anisotropic Gaussian PSF (``psf_sigma_um``, much wider in z); signal
    attenuation with depth ``exp(-z / depth_attenuation_um)``, strongest for
    Hoechst (UV excitation scatters most); vignetting.
Detector.
    Background per channel, Poisson shot noise (``gain`` ADU per
    photo-electron; sampled exactly below 30 expected electrons, with the normal
    approximation above), Gaussian read noise, rounding, clipping at
    ``2**bit_depth - 1``; uint16.

Truth.
    ``labels`` carry the track id of each nucleus (consistent over time); the
    table has one row per visible nucleus and frame with phase, phase progress,
    centroid and volume from the labels, and whether any of its voxels saturated.
"""

from pipeline.config.synth import SynthConfig
from pipeline.synth.export import read_table, write_export
from pipeline.synth.timelapse import CHANNELS, TABLE_COLUMNS, SynthResult, generate
from pipeline.synth.population import PHASES

__all__ = ["CHANNELS", "PHASES", "TABLE_COLUMNS", "SynthConfig", "SynthResult", "generate", "read_table", "write_export"]

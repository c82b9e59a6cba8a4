"""Time-lapse simulation: cells evolve, each time point is rendered, truth is tabulated."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pipeline.progress import progress_bar

from pipeline.config.synth import SynthConfig
from pipeline.io.ngff import ImageMeta
from pipeline.synth import packing
from pipeline.synth import population as pop
from pipeline.synth import render

LOG = logging.getLogger(__name__)

CHANNELS = ("Hoechst", "Cy3", "GFP")
"""Channel order of :attr:`SynthResult.images`."""
TABLE_COLUMNS = (
    "well",
    "t",
    "label",
    "track_id",
    "parent_track_id",
    "phase",
    "phase_progress",
    "centroid_z",
    "centroid_y",
    "centroid_x",
    "volume",
    "saturated",
    "glowing",
)
INITIAL_RELAX = 80
"""Relaxation passes that turn the random start into a packed spheroid."""
STEP_RELAX = 12
"""Relaxation passes after each time step (motion and divisions create small overlaps)."""
RIM = 0.3
"""Nuclei are dimmer at their boundary: intensity ``1 - RIM * d2``."""


@dataclass(frozen=True)
class SynthResult:
    """One well's synthetic time-lapse with its ground truth.

    Attributes
    ----------
    images : numpy.ndarray
        ``(T, C, Z, Y, X)`` uint16, channels :data:`CHANNELS`.
    labels : numpy.ndarray
        ``(T, Z, Y, X)`` uint32 instance labels; a nucleus' label is its track id.
    table : pandas.DataFrame
        One row per visible nucleus and time point, columns :data:`TABLE_COLUMNS`;
        ``t`` is the 0-based index into ``images``; centroids in voxels; ``volume``
        in voxels; ``saturated`` when a voxel of the nucleus reached the detector
        maximum in any channel; ``glowing`` is the simulated over-exposure.
    well : str
        Well name.
    channels : tuple of str
        Channel names.
    voxel_size : tuple of float
        ``(z, y, x)`` in um.
    time_step_s : float
        Seconds between time points.
    config : SynthConfig
        The configuration used (with ``seed`` as used).
    """

    images: np.ndarray
    labels: np.ndarray
    table: pd.DataFrame
    well: str
    channels: tuple[str, ...]
    voxel_size: tuple[float, float, float]
    time_step_s: float
    config: SynthConfig

    @property
    def image_meta(self) -> ImageMeta:
        """Channels, voxel size and time step as the plate store describes an image."""
        return ImageMeta(channels=self.channels, voxel_size=self.voxel_size, time_step=self.time_step_s)


def well_streams(seed: int, well: str) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent random streams for the cells and for the rendering of one well.

    Seeding from ``(seed, crc32(well))`` makes each well different but reproducible;
    separate streams keep the cells unchanged when only optics or noise settings change.
    """
    cells, pixels = np.random.SeedSequence([int(seed), zlib.crc32(well.encode())]).spawn(2)
    return np.random.default_rng(cells), np.random.default_rng(pixels)


def drug_stream(seed: int, well: str) -> np.random.Generator:
    """The random stream of a well's drug response: a third child of the well's seed
    sequence, so that :func:`well_streams` (and every well without a drug) is unchanged."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(well.encode())]).spawn(3)[2])


def generate(config: SynthConfig, *, well: str | None = None, seed: int | None = None, progress: bool = False) -> SynthResult:
    """Simulate one well: a FUCCI spheroid time-lapse with labels and a truth table.

    Parameters
    ----------
    config : SynthConfig
        Geometry, cell cycle, optics and detector settings.
    well : str, optional
        Well name (default: the first of ``config.wells``); it selects the random stream.
    seed : int, optional
        Overrides ``config.seed``.
    progress : bool
        Show a progress bar over time points.

    Returns
    -------
    SynthResult

    Examples
    --------
    >>> from pipeline.config.synth import SynthConfig
    >>> res = generate(SynthConfig(shape=(6, 48, 48), n_timepoints=2, n_nuclei=20))
    >>> res.images.shape, res.images.dtype.name, res.labels.shape
    ((2, 3, 6, 48, 48), 'uint16', (2, 6, 48, 48))
    """
    well = config.wells[0] if well is None else str(well)
    seed = config.seed if seed is None else int(seed)
    if seed != config.seed:
        config = config.model_copy(update={"seed": seed})
    rng_cells, rng_pixels = well_streams(seed, well)
    spheroid0, n0 = packing.initial_geometry(config)
    box = packing.stack_box(config)
    LOG.info("well %s: %d nuclei, spheroid radius %.0f um, %d time points", well, n0, spheroid0.radii[1], config.n_timepoints)

    cells = pop.init_cells(config, spheroid0, n0, rng_cells)
    if config.drug is not None:
        dose = config.drug.dose(well)
        fraction = config.drug.arrested_fraction(dose)
        hit = pop.drug_arrest(cells, fraction, drug_stream(seed, well))
        LOG.info("well %s: %s %g %s, %d of %d cells arrested in G1 (p = %.3f)", well, config.drug.name, dose, config.drug.unit, int(hit.sum()), n0, fraction)
    pop.settle_core(cells, spheroid0)
    cells.pos = packing.relax(cells.pos, pop.diameters(cells, config) / 2.0, spheroid0, box, config.contact, INITIAL_RELAX)
    next_track, population = n0 + 1, float(n0)

    T, (Z, Y, X) = config.n_timepoints, config.shape
    images = np.zeros((T, len(CHANNELS), Z, Y, X), dtype=np.uint16)
    labels = np.zeros((T, Z, Y, X), dtype=np.uint32)
    tables = []
    for t in progress_bar(range(T), desc=f"synth {well}", unit="tp", disable=not progress, leave=False):
        spheroid = spheroid0.grown(population / n0, config.spheroid_bottom_um)
        if t > 0:
            cells, next_track, n_div = pop.advance(
                cells, config, rng_cells, next_track, spheroid, crowded=len(cells) >= packing.capacity(config, spheroid)
            )
            population += n_div
            spheroid = spheroid0.grown(population / n0, config.spheroid_bottom_um)
            cells.pos = packing.relax(cells.pos, pop.diameters(cells, config) / 2.0, spheroid, box, config.contact, STEP_RELAX)
        labels[t], d2 = render.rasterize(
            cells.pos, pop.semi_axes(cells, config), cells.angle, cells.track, config.shape, config.voxel_size
        )
        images[t] = render_frame(labels[t], d2, cells, spheroid, config, rng_pixels)
        tables.append(truth_table(labels[t], images[t], cells, well, t, config.saturation))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(TABLE_COLUMNS))
    return SynthResult(
        images=images,
        labels=labels,
        table=table,
        well=well,
        channels=CHANNELS,
        voxel_size=tuple(float(v) for v in config.voxel_size),
        time_step_s=float(config.time_step_s),
        config=config,
    )


def amplitudes(cells: pop.Cells, spheroid: packing.Spheroid, config: SynthConfig) -> np.ndarray:
    """``(max_track + 1, 3)`` peak intensity (ADU, 16-bit scale) per label value and channel.

    Brightness x per-cell variability x FUCCI level x glow, and for Hoechst the
    staining that fades towards the spheroid core.
    """
    amp = np.asarray(config.brightness.values())[None, :] * cells.bright
    amp = amp * pop.fucci_levels(cells, config.hoechst_g2_gain) * cells.glow[:, None]
    if config.hoechst_penetration_um is not None:
        depth = spheroid.depth(cells.pos)
        floor = config.hoechst_core_floor
        amp[:, 0] *= floor + (1.0 - floor) * np.exp(-depth / config.hoechst_penetration_um)
    table = np.zeros((int(cells.track.max(initial=0)) + 1, 3), dtype=np.float32)
    table[cells.track] = amp
    return table


def render_frame(
    labels: np.ndarray, d2: np.ndarray, cells: pop.Cells, spheroid: packing.Spheroid, config: SynthConfig, rng: np.random.Generator
) -> np.ndarray:
    """The ``(C, Z, Y, X)`` uint16 image of one time point (see :mod:`pipeline.synth`)."""
    shape, voxel = config.shape, config.voxel_size
    amp = amplitudes(cells, spheroid, config)
    inside = np.flatnonzero(labels)
    texture = rng.standard_normal(inside.size, dtype=np.float32)
    cyto = render.ellipsoid_mask(shape, voxel, spheroid.center, spheroid.radii)
    vig = render.vignetting(shape[1:], config.noise.vignetting)
    sigma_px = render.psf_sigma_px(config.psf_sigma_um, voxel)
    peak = render.gaussian_peak(sigma_px)
    n_art = config.artefacts * labels.size / render.REFERENCE_VOXELS
    scale = config.intensity_scale
    out = np.empty((len(CHANNELS), *shape), dtype=np.uint16)
    for c, (background, cytoplasm, length) in enumerate(
        zip(config.noise.background.values(), config.cytoplasm.values(), config.depth_attenuation_um.values())
    ):
        strength = config.texture if c == 0 else config.texture / 2.0
        tex = np.maximum(1.0 + strength * texture, 0.0)
        sites = render.artefact_sites(labels, int(rng.poisson(n_art)), rng)
        spike = config.artefact_brightness / peak * rng.lognormal(0.0, 0.5, size=sites.size)
        obj = render.render_channel(
            labels, d2, amp[:, c], inside=inside, texture=tex, rim=RIM, diffuse=cytoplasm * cyto, spikes=(sites, spike)
        )
        signal = render.psf_blur(obj, config.psf_sigma_um, voxel)
        signal *= render.depth_attenuation(shape[0], voxel[0], length)[:, None, None]
        signal += np.float32(background)
        signal *= vig[None]
        out[c] = render.detector(
            signal * np.float32(scale), config.noise.gain * scale, config.noise.read_noise * scale, config.saturation, rng
        )
    return out


def truth_table(labels: np.ndarray, image: np.ndarray, cells: pop.Cells, well: str, t: int, saturation: int) -> pd.DataFrame:
    """Rows for the nuclei visible in one frame: volume and centroid from the labels."""
    flat = labels.reshape(-1)
    inside = np.flatnonzero(flat)
    ids = flat[inside].astype(np.int64)
    size = int(cells.track.max(initial=0)) + 1
    volume = np.bincount(ids, minlength=size)
    coords = np.unravel_index(inside, labels.shape)
    sums = [np.bincount(ids, weights=c, minlength=size) for c in coords]
    sat_voxels = np.flatnonzero((image >= saturation).any(axis=0).reshape(-1) & (flat > 0))
    saturated = np.bincount(flat[sat_voxels].astype(np.int64), minlength=size) > 0
    visible = volume[cells.track] > 0
    track = cells.track[visible]
    vol = volume[track]
    phase_names = np.asarray(pop.PHASES, dtype=object)
    return pd.DataFrame(
        {
            "well": well,
            "t": np.full(track.size, t, dtype=np.int64),
            "label": track.astype(np.int64),
            "track_id": track.astype(np.int64),
            "parent_track_id": cells.parent[visible].astype(np.int64),
            "phase": phase_names[cells.phase[visible]],
            "phase_progress": pop.phase_progress(cells)[visible],
            "centroid_z": sums[0][track] / vol,
            "centroid_y": sums[1][track] / vol,
            "centroid_x": sums[2][track] / vol,
            "volume": vol.astype(np.int64),
            "saturated": saturated[track],
            "glowing": cells.glow[visible] > 1.0,
        },
        columns=list(TABLE_COLUMNS),
    )

"""The synthetic FUCCI spheroid generator: determinism, ground truth, biology and optics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from pipeline.config.synth import SynthConfig
from pipeline.synth import CHANNELS, PHASES, TABLE_COLUMNS, generate
from pipeline.synth import packing
from pipeline.synth import population as pop
from pipeline.synth.render import depth_attenuation, detector, psf_blur, rasterize

SMALL = dict(shape=(8, 64, 64), n_timepoints=3)
FAST_CYCLE = {"early_g1": 1.0, "g1": 1.5, "g1_s": 1.0, "s_g2_m": 1.5, "cv": 0.2}


@pytest.fixture(scope="module")
def small():
    return generate(SynthConfig(**SMALL, seed=3))


@pytest.fixture(scope="module")
def deep():
    """A spheroid filling a 21-slice stack (for phase and depth statistics)."""
    cfg = SynthConfig(shape=(21, 112, 112), n_timepoints=1, spheroid_radius_um=110.0, spheroid_flattening=1.0, glowing_fraction=0.0, seed=5)
    return generate(cfg)


def nucleus_means(result, t: int = 0):
    """Per-nucleus mean of every channel, aligned with the table rows of frame t."""
    rows = result.table[result.table["t"] == t].copy()
    for c, name in enumerate(result.channels):
        rows[name] = ndi.mean(result.images[t, c].astype(float), result.labels[t], rows["label"].to_numpy())
    return rows


def test_shapes_dtypes_and_columns(small):
    assert small.images.shape == (3, 3, 8, 64, 64) and small.images.dtype == np.uint16
    assert small.labels.shape == (3, 8, 64, 64) and small.labels.dtype == np.uint32
    assert small.channels == CHANNELS == ("Hoechst", "Cy3", "GFP")
    assert tuple(small.table.columns) == TABLE_COLUMNS
    assert set(small.table["phase"]) <= set(PHASES)
    assert small.voxel_size == (5.0, 1.24, 1.24) and small.time_step_s == 1800.0
    assert small.image_meta.channels == CHANNELS and small.image_meta.scale == [1800.0, 1.0, 5.0, 1.24, 1.24]
    assert len(small.table) > 20 and small.images.max() > 1000


def test_same_seed_same_output_other_seed_or_well_differs():
    cfg = SynthConfig(**SMALL, seed=11)
    a, b = generate(cfg), generate(cfg)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.table.equals(b.table)
    c = generate(cfg, seed=12)
    assert c.config.seed == 12 and not np.array_equal(a.labels, c.labels)
    d = generate(cfg, well="C4")
    assert d.well == "C4" and not np.array_equal(a.labels, d.labels)
    assert (d.table["well"] == "C4").all()


def test_noise_settings_do_not_move_the_cells():
    cfg = SynthConfig(**SMALL, seed=2)
    a = generate(cfg)
    b = generate(cfg.model_copy(update={"noise": cfg.noise.model_copy(update={"read_noise": 30.0})}))
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, b.images)


def test_table_matches_labels(small):
    for t in range(small.labels.shape[0]):
        frame = small.labels[t]
        rows = small.table[small.table["t"] == t]
        ids, counts = np.unique(frame[frame > 0], return_counts=True)
        assert sorted(rows["label"]) == list(ids)
        vol = dict(zip(ids, counts))
        assert all(vol[lab] == v for lab, v in zip(rows["label"], rows["volume"]))
        com = ndi.center_of_mass(np.ones_like(frame), frame, rows["label"].to_numpy())
        np.testing.assert_allclose(np.array(com), rows[["centroid_z", "centroid_y", "centroid_x"]].to_numpy(), atol=1e-9)
    assert (small.table["label"] == small.table["track_id"]).all()


def test_rasterize_partitions_overlapping_ellipsoids():
    vox = (5.0, 1.24, 1.24)
    centres = np.array([[20.0, 30.0, 30.0], [20.0, 30.0, 38.0], [10.0, 10.0, 10.0]])
    axes = np.array([[6.0, 7.0, 5.0], [6.0, 6.0, 6.0], [5.0, 5.0, 5.0]])
    labels, d2 = rasterize(centres, axes, np.array([0.3, 0.0, 0.0]), np.array([4, 9, 2]), (9, 48, 48), vox)
    zz, yy, xx = np.meshgrid(*[np.arange(n) * v for n, v in zip((9, 48, 48), vox)], indexing="ij")
    inside = []
    for (cz, cy, cx), (c, a, b), ang in zip(centres, axes, (0.3, 0.0, 0.0)):
        u = (yy - cy) * np.cos(ang) + (xx - cx) * np.sin(ang)
        v = (xx - cx) * np.cos(ang) - (yy - cy) * np.sin(ang)
        inside.append((u / a) ** 2 + (v / b) ** 2 + ((zz - cz) / c) ** 2 < 1)
    union = np.any(inside, axis=0)
    np.testing.assert_array_equal(labels > 0, union)  # every covered voxel gets exactly one label
    both = inside[0] & inside[1]
    assert both.sum() > 10 and set(np.unique(labels[both])) == {4, 9}  # the overlap is split
    assert np.all(d2[labels == 0] == 1) and np.all(d2[labels > 0] < 1)
    assert set(np.unique(labels)) == {0, 2, 4, 9}


def test_nuclei_are_packed_and_touching(deep):
    lab = deep.labels[0]
    # touching: many face-adjacent voxel pairs with two different labels
    touch = 0
    for axis in range(3):
        a, b = np.moveaxis(lab, axis, 0)[1:], np.moveaxis(lab, axis, 0)[:-1]
        touch += np.count_nonzero((a > 0) & (b > 0) & (a != b))
    assert touch > 200
    vol = deep.table["volume"]
    assert vol.quantile(0.9) > 2 * vol.quantile(0.1)  # varied sizes
    full = deep.table[(deep.table["centroid_z"] > 2) & (deep.table["centroid_z"] < 18)]
    diam_xy_px = 2 * np.sqrt(full["volume"].median() * 5.0 / np.pi / (4 / 3 * 5.0)) / 1.24
    assert 4 < diam_xy_px < 14


def test_phases_map_to_fucci_channels(deep):
    rows = nucleus_means(deep)
    by = rows.groupby("phase")[["Hoechst", "Cy3", "GFP"]].mean()
    assert set(by.index) == set(PHASES)
    bg = {c: float(np.median(deep.images[0, i][deep.labels[0] == 0])) for i, c in enumerate(CHANNELS)}
    sig = by - np.array([bg[c] for c in ("Hoechst", "Cy3", "GFP")])
    assert sig.loc["G1", "Cy3"] > 3 * sig.loc["S/G2/M", "Cy3"]
    assert sig.loc["S/G2/M", "GFP"] > 3 * sig.loc["G1", "GFP"]
    assert sig.loc["G1/S", "Cy3"] > 0.5 * sig.loc["G1", "Cy3"] and sig.loc["G1/S", "GFP"] > 0.4 * sig.loc["S/G2/M", "GFP"]
    assert sig.loc["early G1", "Cy3"] < 0.4 * sig.loc["G1", "Cy3"]
    assert sig.loc["early G1", "GFP"] < 0.4 * sig.loc["S/G2/M", "GFP"]
    assert by.loc["S/G2/M", "Hoechst"] > by.loc["G1", "Hoechst"]  # more DNA


def test_hoechst_fades_with_depth(deep):
    rows = nucleus_means(deep)
    top = rows[rows["centroid_z"] < 5]
    bottom = rows[rows["centroid_z"] > 15]
    assert len(top) > 10 and len(bottom) > 10
    assert bottom["Hoechst"].mean() < 0.6 * top["Hoechst"].mean()
    att = depth_attenuation(21, 5.0, 90.0)
    assert att[0] == 1.0 and np.all(np.diff(att) < 0)


def test_divisions_create_daughters_with_parents():
    cfg = SynthConfig(shape=(8, 64, 64), n_timepoints=4, phases=FAST_CYCLE, seed=4)
    res = generate(cfg)
    tab = res.table
    daughters = tab[tab["parent_track_id"] > 0].drop_duplicates("track_id")
    assert len(daughters) >= 4
    first = tab.groupby("track_id")["t"].min()
    last = tab.groupby("track_id")["t"].max()
    for _, row in daughters.iterrows():
        mother = row["parent_track_id"]
        born = first[row["track_id"]]
        assert born > 0
        sisters = tab[(tab["parent_track_id"] == mother) & (tab["t"] == born)]
        assert len(sisters) <= 2
        if mother in last.index:  # the mother was visible: she ends right before her daughters start
            assert last[mother] == born - 1
            m = tab[(tab["track_id"] == mother) & (tab["t"] == born - 1)].iloc[0]
            assert m["phase"] == "S/G2/M"
            dist = np.hypot((row["centroid_y"] - m["centroid_y"]) * 1.24, (row["centroid_x"] - m["centroid_x"]) * 1.24)
            assert dist < 14.0
        birth = tab[(tab["track_id"] == row["track_id"]) & (tab["t"] == born)].iloc[0]
        assert birth["phase"] == "early G1"
    no_div = generate(cfg.model_copy(update={"division": False}))
    assert (no_div.table["parent_track_id"] == 0).all()


def test_motion_is_small_and_smooth():
    res = generate(SynthConfig(shape=(12, 96, 96), n_timepoints=3, seed=6))
    tab = res.table.set_index(["track_id", "t"])
    steps = []
    for tid, grp in res.table.groupby("track_id"):
        if len(grp) >= 2 and grp["volume"].min() > 40:  # fully visible nuclei only
            xy = grp.sort_values("t")[["centroid_y", "centroid_x"]].to_numpy() * 1.24
            steps.extend(np.linalg.norm(np.diff(xy, axis=0), axis=1))
    assert len(steps) > 20 and len(tab) > 0
    assert 0.1 < np.median(steps) < 4.0


def test_glowing_nuclei_saturate():
    cfg = SynthConfig(**SMALL, glowing_fraction=0.4, seed=8)
    res = generate(cfg)
    tab = res.table
    assert tab["glowing"].any() and tab["saturated"].any()
    assert tab.loc[tab["glowing"], "saturated"].mean() > 0.8
    # neighbours of glowing nuclei catch some of their saturated blur, but far less often
    assert tab.loc[~tab["glowing"], "saturated"].mean() < 0.5 * tab.loc[tab["glowing"], "saturated"].mean()
    assert (res.images == 65535).any()
    quiet = generate(cfg.model_copy(update={"glowing_fraction": 0.0, "artefacts": 0}))
    assert not quiet.table["saturated"].any() and not quiet.table["glowing"].any()


def test_bit_depth_limits_values():
    res = generate(SynthConfig(**SMALL, bit_depth=12, glowing_fraction=0.5, seed=1))
    assert res.images.max() == 4095


def test_artefacts_are_small_bright_spots_outside_nuclei():
    base = dict(shape=(8, 96, 96), n_timepoints=1, n_nuclei=5, glowing_fraction=0.0, seed=9)
    with_art = generate(SynthConfig(**base, artefacts=20000, artefact_brightness=20000.0))
    without = generate(SynthConfig(**base, artefacts=0))
    far = ndi.binary_dilation(with_art.labels[0] > 0, iterations=3) == 0
    img = with_art.images[0, 1].astype(float)
    assert img[far].max() > 8000 and without.images[0, 1][far].max() < 3000
    # they are point-like: a small white top-hat removes them, nuclei survive it
    opened = ndi.grey_opening(img, size=(1, 5, 5))
    assert (img - opened)[far].max() > 0.7 * img[far].max()


def test_psf_blur_is_stronger_in_z():
    vol = np.zeros((21, 41, 41), dtype=np.float32)
    vol[10, 20, 20] = 1.0
    out = psf_blur(vol, (4.5, 0.9, 0.9), (5.0, 1.24, 1.24))
    assert out.sum() == pytest.approx(1.0, rel=1e-4)
    z, y, x = (np.arange(n) for n in out.shape)
    sd_z = np.sqrt((out.sum(axis=(1, 2)) * (z - 10) ** 2).sum()) * 5.0
    sd_y = np.sqrt((out.sum(axis=(0, 2)) * (y - 20) ** 2).sum()) * 1.24
    assert sd_z > 3 * sd_y
    # and in a generated stack neighbouring z slices are more alike than the raw sampling implies
    cfg = SynthConfig(**SMALL, seed=5)
    sharp = generate(cfg.model_copy(update={"psf_sigma_um": (0.5, 0.9, 0.9)})).images[0, 0].astype(float)
    blurred = generate(cfg).images[0, 0].astype(float)
    corr = lambda v: np.corrcoef(v[1:].ravel(), v[:-1].ravel())[0, 1]  # noqa: E731
    assert corr(blurred) > corr(sharp) + 0.05


def test_detector_noise_statistics():
    rng = np.random.default_rng(42)
    flat = np.full((200, 200), 1000.0, dtype=np.float32)
    out = detector(flat, gain=2.0, read_noise=5.0, saturation=65535, rng=rng).astype(float)
    assert out.mean() == pytest.approx(1000, abs=2)
    assert out.var() == pytest.approx(2.0 * 1000 + 25, rel=0.05)
    dim = detector(np.full((200, 200), 10.0, dtype=np.float32), gain=1.0, read_noise=0.0, saturation=65535, rng=rng)
    assert dim.mean() == pytest.approx(10, abs=0.2) and dim.var() == pytest.approx(10, rel=0.1)
    assert detector(np.full((4, 4), 1e6, dtype=np.float32), 1.0, 1.0, 4095, rng).max() == 4095


def test_geometry_from_count_or_radius():
    cfg = SynthConfig(shape=(10, 128, 128), n_nuclei=150)
    sph, n = packing.initial_geometry(cfg)
    assert n == 150
    sph2, n2 = packing.initial_geometry(cfg.model_copy(update={"n_nuclei": None, "spheroid_radius_um": sph.radii[1]}))
    assert n2 == pytest.approx(150, rel=0.05)
    res = generate(cfg.model_copy(update={"n_timepoints": 1}))
    assert 100 < len(res.table) <= 150


def test_config_rejects_bad_values():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="range"):
        SynthConfig(nucleus_diameter_um=(14.0, 8.0))
    with pytest.raises(ValidationError, match="row letter"):
        SynthConfig(wells=["12"])
    with pytest.raises(ValidationError, match="Extra inputs"):
        SynthConfig(sigma=1)


def _cells_in(config: SynthConfig, phase: int, progress: float, n: int = 4) -> pop.Cells:
    sph, _ = packing.initial_geometry(config)
    cells = pop.init_cells(config, sph, n, np.random.default_rng(42))
    cells.phase[:] = phase
    cells.age[:] = progress * cells.durations[:, phase]
    return cells


def test_fucci_levels_ramp_through_the_cycle():
    cfg = SynthConfig(shape=(8, 64, 64))
    level = lambda ph, p: pop.fucci_levels(_cells_in(cfg, ph, p), 0.6)[0]  # noqa: E731
    h, r, g = 0, 1, 2
    assert level(pop.EARLY_G1, 0.5)[r] < 0.1 and level(pop.EARLY_G1, 0.5)[g] < 0.1
    assert level(pop.G1, 0.0)[r] < level(pop.G1, 0.2)[r] < level(pop.G1, 0.9)[r] == 1.0
    assert level(pop.G1, 0.9)[g] == 0.0
    assert level(pop.G1_S, 0.2)[r] > level(pop.G1_S, 0.8)[r] > 0.2
    # Cdt1 is down to early G1's level when S/G2/M begins (yellow is G1/S, green S/G2/M)
    assert level(pop.G1_S, 1.0)[r] <= level(pop.EARLY_G1, 1.0)[r] and level(pop.S_G2_M, 0.0)[r] <= 0.1
    assert 0.3 < level(pop.G1_S, 0.2)[g] < level(pop.G1_S, 0.8)[g]
    assert level(pop.S_G2_M, 0.5)[r] == 0.0 and level(pop.S_G2_M, 0.5)[g] == 1.0
    # DNA doubles: Hoechst grows through S/G2/M, mitotic chromatin is brighter and rounder
    assert level(pop.S_G2_M, 0.8)[h] > level(pop.G1, 0.5)[h]
    late = _cells_in(cfg, pop.S_G2_M, 0.97)
    assert pop.mitotic(late).all() and not pop.mitotic(_cells_in(cfg, pop.S_G2_M, 0.8)).any()
    assert pop.fucci_levels(late, 0.6)[0, h] > 1.4 * level(pop.S_G2_M, 0.9)[h]
    axes = pop.semi_axes(late, cfg)
    np.testing.assert_allclose(axes[:, 1], axes[:, 2])


def test_cycle_advances_in_order_and_relax_removes_overlaps():
    cfg = SynthConfig(shape=(8, 64, 64), phases=FAST_CYCLE, motion_um=0.0)
    cells = _cells_in(cfg, pop.G1, 0.0, n=30)
    seen = [cells.phase.copy()]
    nxt = 31
    for _ in range(3):
        cells, nxt, _ = pop.advance(cells, cfg, np.random.default_rng(1), nxt)
        seen.append(cells.phase[np.isin(cells.track, np.arange(1, 31))].copy())
    starts = np.array([s[:10].min() for s in seen])  # phases only move forward
    assert np.all(np.diff(starts) >= 0)
    sph, _ = packing.initial_geometry(cfg)
    box = packing.stack_box(cfg)
    radius = pop.diameters(cells, cfg) / 2
    pos = packing.relax(cells.pos, radius, sph, box, cfg.contact, 200)
    i, j = np.triu_indices(len(pos), 1)
    gap = np.linalg.norm(pos[i] - pos[j], axis=1) - cfg.contact * (radius[i] + radius[j])
    assert gap.min() > -0.2
    assert np.all(sph.rho(pos, shrink=radius) <= 1 + 1e-9)
    assert np.all((pos >= box[0]) & (pos <= box[1]))


def test_quiescent_core_stays_in_g1():
    cfg = SynthConfig(shape=(12, 128, 128), phases=FAST_CYCLE, arrest_depth_um=20.0, spheroid_radius_um=70.0)
    sph, _ = packing.initial_geometry(cfg)
    cells = _cells_in(cfg, pop.EARLY_G1, 0.0, n=200)
    depth = sph.depth(cells.pos)
    core = depth > 1.5 * cells.arrest
    rim = depth < 0.5 * cells.arrest
    assert core.sum() > 5 and rim.sum() > 5
    cfg_still = cfg.model_copy(update={"motion_um": 0.0})
    for _ in range(4):
        cells, _, _ = pop.advance(cells, cfg_still, np.random.default_rng(3), 1000, sph)
    original = cells.track < 1000
    kept = cells.take(original)
    assert np.all(kept.phase[core[kept.track - 1]] == pop.G1)
    assert np.all(pop.phase_progress(kept)[core[kept.track - 1]] == 1.0)  # plateau of Cdt1
    assert set(np.flatnonzero(core) + 1) <= set(kept.track.tolist())  # arrested cells never divide
    assert np.mean(kept.phase[rim[kept.track - 1]] > pop.G1) > 0.8
    free = generate(SynthConfig(shape=(8, 64, 64), n_timepoints=1, arrest_depth_um=None, seed=3))
    assert set(free.table["phase"]) == set(PHASES)


def test_spheroid_outside_the_stack_is_a_config_error():
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="spheroid_bottom_um"):
        generate(SynthConfig(shape=(8, 64, 64), spheroid_bottom_um=500.0))


def test_population_stays_bounded_when_the_region_is_full():
    cfg = SynthConfig(shape=(6, 48, 48), n_timepoints=14, phases={"early_g1": 0.4, "g1": 0.4, "g1_s": 0.4, "s_g2_m": 0.4}, seed=2)
    res = generate(cfg)
    counts = res.table.groupby("t").size()
    sph, n0 = packing.initial_geometry(cfg)
    assert counts.iloc[3] > 1.5 * counts.iloc[0]  # it grows first ...
    full = packing.Spheroid(center=sph.center, radii=(1e4, 1e4, 1e4))
    assert counts.iloc[-1] <= packing.capacity(cfg, full)  # ... then contact inhibition stops it
    assert counts.iloc[-4:].max() < 1.1 * counts.iloc[-4:].min()
    assert (res.table[res.table["t"] == 13]["phase"] == "G1").mean() > 0.9


def test_drug_arrests_a_hill_fraction_in_g1_and_leaves_other_wells_unchanged():
    from pipeline.config.synth import DrugResponse

    drug = DrugResponse(ec50=1.0, hill=1.5, top=0.9, doses={"C2": 1.0, "C3": 100.0})
    assert drug.arrested_fraction(0.0) == 0.0 and drug.arrested_fraction(1.0) == pytest.approx(0.45)
    assert drug.arrested_fraction(1e6) == pytest.approx(0.9) and drug.dose("c02") == 1.0 and drug.dose("B2") == 0.0
    base = SynthConfig(shape=(8, 64, 64), n_timepoints=3, phases=FAST_CYCLE, arrest_depth_um=None, seed=4, wells=["B2", "C2", "C3"])
    dosed = base.model_copy(update={"drug": drug})
    plain, untreated = generate(base, well="B2"), generate(dosed, well="B2")
    np.testing.assert_array_equal(plain.images, untreated.images)  # dose 0: the same well as without a drug
    assert plain.table.equals(untreated.table)
    high = generate(dosed, well="C3").table
    first = high[high["t"] == 0]
    assert (first["phase"] == "G1").mean() > 0.8  # ~90 % arrested in late G1 at the first frame
    held = set(first.loc[first["phase"] == "G1", "track_id"])
    last = high[high["t"] == 2]
    assert (last.loc[last["track_id"].isin(held), "phase"] == "G1").mean() > 0.85  # and they stay there
    assert (generate(dosed, well="C3").table.equals(high))  # deterministic
    with pytest.raises(ValueError, match="not in 'wells'"):
        base.model_copy(update={"drug": None}).model_validate({**base.model_dump(), "drug": {"ec50": 1.0, "doses": {"Z9": 1.0}}})

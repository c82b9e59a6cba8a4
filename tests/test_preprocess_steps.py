"""Preprocessing steps as pure functions, the chain registry, and the stage's config checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from pipeline.config.base import load_config
from pipeline.config.preprocess import (
    ClaheStep,
    GammaStep,
    MedianStep,
    NormalizeStep,
    PreprocessConfig,
    ThresholdStep,
    ToUint8Step,
    TophatStep,
    default_chain,
)
from pipeline.errors import ConfigError
from pipeline.preprocess import chain as ch
from pipeline.preprocess import steps as st
from pipeline.preprocess.normalize import percentile_normalize


def blobs(rng: np.random.Generator, shape=(6, 64, 80), n=25, peak=3000.0, bg=150.0, specks=20) -> np.ndarray:
    """Gaussian nuclei on a noisy background with single-voxel bright specks (uint16)."""
    vol = np.zeros(shape, np.float32)
    idx = tuple(rng.integers(0, s, n) for s in shape)
    vol[idx] = rng.uniform(0.5, 1.5, n)
    vol = ndi.gaussian_filter(vol, (0.8, 3.0, 3.0))
    vol *= peak / vol.max()
    vol += bg + rng.normal(0, 30, shape)
    sidx = tuple(rng.integers(0, s, specks) for s in shape)
    vol[sidx] = 5000
    return np.clip(np.round(vol), 0, 65535).astype(np.uint16)


# -- statistics ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 20001])
def test_histogram_percentiles_equal_numpy(rng, dtype, n):
    v = rng.integers(0, np.iinfo(dtype).max, n).astype(dtype)
    q = [0, 0.1, 1, 2.75, 13.7, 50, 99.5, 99.8, 100]
    got = st.percentiles_from_hist(st.volume_histogram(v), q)
    np.testing.assert_array_equal(got, np.percentile(v, q))


def test_histograms_of_blocks_add_up(rng):
    v = blobs(rng)
    parts = [st.volume_histogram(v[:, :30]), st.volume_histogram(v[:, 30:])]
    np.testing.assert_array_equal(np.sum(parts, axis=0), st.volume_histogram(v))
    with pytest.raises(TypeError, match="uint8/uint16"):
        st.volume_histogram(v.astype(np.float32))


# -- threshold ----------------------------------------------------------------------------------
def test_threshold_absolute_and_dtype_fraction():
    v = np.array([[[0, 99, 100, 101, 65535]]], np.uint16)
    out = st.background_threshold(v, mode="absolute", value=100)
    assert out.tolist() == [[[0, 0, 100, 101, 65535]]]
    assert out.dtype == np.uint16
    frac = st.background_threshold(v, mode="dtype_fraction", value=101 / 65535)
    assert frac.tolist() == [[[0, 0, 0, 101, 65535]]]


def test_threshold_range_fraction_ignores_saturated_outliers(rng):
    v = rng.integers(100, 1100, (4, 32, 32)).astype(np.uint16)
    level = st.threshold_level(v.dtype, "range_fraction", 0.1, st.volume_histogram(v))
    v2 = v.copy()
    v2[0, 0, :3] = 65535  # a few saturated voxels
    level2 = st.threshold_level(v2.dtype, "range_fraction", 0.1, st.volume_histogram(v2))
    assert abs(level2 - level) < 2
    top = np.percentile(v, 99.5)
    assert level == pytest.approx(v.min() + 0.1 * (top - v.min()))
    assert st.threshold_level(v2.dtype, "range_fraction", 0.1, st.volume_histogram(v2), 100) > 6000
    out = st.background_threshold(v, mode="range_fraction", value=0.1)
    assert (out[v < level] == 0).all() and np.array_equal(out[v >= level], v[v >= level])


def test_threshold_percentile(rng):
    v = rng.integers(0, 4000, (3, 20, 20)).astype(np.uint16)
    out = st.background_threshold(v, mode="percentile", value=40)
    level = np.percentile(v, 40)
    assert (out[v < level] == 0).all() and np.array_equal(out[v >= level], v[v >= level])
    assert 0.35 < (out == 0).mean() < 0.45


# -- gamma --------------------------------------------------------------------------------------
def test_gamma_uses_full_16bit_range():
    v = np.array([[[0, 16384, 65535]]], np.uint16)
    assert st.gamma_correction(v, gamma=0.5).tolist() == [[[0, 32768, 65535]]]
    x = np.arange(0, 65536, 7, dtype=np.uint16).reshape(1, 1, -1)
    assert np.array_equal(st.gamma_correction(x, gamma=1.0), x)
    dark = st.gamma_correction(x, gamma=2.0)
    assert dark.dtype == np.uint16 and (np.diff(dark.ravel().astype(int)) >= 0).all()
    assert len(np.unique(st.gamma_correction(x, gamma=0.8))) > 9000  # no 8-bit quantisation
    with pytest.raises(ValueError, match="> 0"):
        st.gamma_correction(x, gamma=0)


# -- CLAHE --------------------------------------------------------------------------------------
def test_clahe_2d_is_opencv_per_slice(rng):
    import cv2

    v = blobs(rng)
    out = st.clahe(v, clip_limit=3.0, tile_grid=(4, 2))
    op = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(2, 4))
    for z in range(v.shape[0]):
        np.testing.assert_array_equal(out[z], op.apply(v[z]))
    # slices are independent: reversing z reverses the result
    np.testing.assert_array_equal(st.clahe(v[::-1].copy(), clip_limit=3.0, tile_grid=(4, 2)), out[::-1])
    assert out.dtype == np.uint16 and out.max() > 4 * v[v < 5000].max()


def test_clahe_3d_mixes_slices(rng):
    v = blobs(rng)
    out = st.clahe(v, mode="3d", tile_grid=(4, 4), tiles_z=2, nbins=256)
    assert out.dtype == np.uint16 and out.shape == v.shape
    assert out.max() > 60000
    sub = st.clahe(v[:3].copy(), mode="3d", tile_grid=(4, 4), tiles_z=2, nbins=256)
    assert not np.array_equal(sub, out[:3])
    flat = np.full((2, 8, 8), 7, np.uint16)
    np.testing.assert_array_equal(st.clahe(flat, mode="3d"), flat)


@pytest.mark.parametrize("nbins", [128, 256, 512])
def test_clahe_3d_tiles_and_clip_limit_match_their_definition(rng, nbins):
    """Non-square y/x tile grid on a non-square volume, and nbins other than 256: the 3D
    tiles are (Z/tiles_z, Y/tile_grid[0], X/tile_grid[1]) voxels, and the clip limit in
    OpenCV's unit (``clip_limit`` times a tile's mean count per bin) is skimage's
    ``clip_limit / nbins`` (skimage clips a bin at its clip_limit times the tile's voxels)."""
    from skimage.exposure import equalize_adapthist

    v = blobs(rng, shape=(6, 40, 96))
    out = st.clahe(v, mode="3d", tile_grid=(4, 2), tiles_z=2, clip_limit=3.0, nbins=nbins)
    kernel = (3, 10, 48)  # 6/2, 40/4, 96/2: y gets 4 tiles, x 2
    expected = np.round(equalize_adapthist(v, kernel_size=kernel, clip_limit=3.0 / nbins, nbins=nbins) * 65535).astype(np.uint16)
    np.testing.assert_array_equal(out, expected)
    swapped = np.round(equalize_adapthist(v, kernel_size=(3, 20, 24), clip_limit=3.0 / nbins, nbins=nbins) * 65535).astype(np.uint16)
    assert not np.array_equal(out, swapped)


# -- median -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [3, 5, 7])
def test_median_2d_equals_scipy_nearest(rng, size):
    v = blobs(rng)
    expected = ndi.median_filter(v, size=(1, size, size), mode="nearest")
    np.testing.assert_array_equal(st.median(v, size=size), expected)
    v8 = (v // 256).astype(np.uint8)
    np.testing.assert_array_equal(st.median(v8, size=size), ndi.median_filter(v8, size=(1, size, size), mode="nearest"))


def test_median_3d_and_bad_sizes(rng):
    v = blobs(rng)
    np.testing.assert_array_equal(st.median(v, size=3, mode="3d", size_z=3), ndi.median_filter(v, size=3, mode="nearest"))
    with pytest.raises(ValueError, match="odd"):
        st.median(v, size=4)


# -- top-hat ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_tophat_removes_specks_keeps_nuclei(mode):
    v = np.full((7, 40, 40), 100, np.uint16)
    zz, yy, xx = np.mgrid[:7, :40, :40]
    nucleus = ((zz - 3) / 2.5) ** 2 + ((yy - 20) ** 2 + (xx - 20) ** 2) / 36 <= 1
    v[nucleus] = 3000
    v[3, 5, 5] = 9000  # a speck
    v[1, 35, 30] = 9000
    out = st.tophat_subtract(v, radius=2, mode=mode, radius_z=1)
    assert out.dtype == np.uint16
    assert out[3, 5, 5] == 100 and out[1, 35, 30] == 100
    assert (out[3, 17:24, 17:24] == 3000).all()  # the nucleus core survives
    assert (out <= v).all()


def test_footprints():
    assert st.disk(2).sum() == 13 and st.disk(2).shape == (5, 5)
    e = st.ellipsoid(1, 2)
    assert e.shape == (3, 5, 5) and e[1].sum() == 13 and e[0].sum() == 1
    assert st.ellipsoid(0, 2).shape == (1, 5, 5)


# -- bit depth and normalisation ------------------------------------------------------------------
def test_normalize_matches_percentile_normalize(rng):
    v = blobs(rng)
    out = st.normalize(v, low=1, high=99.8)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, percentile_normalize(v, 1, 99.8), rtol=1e-5, atol=1e-6)
    lo, hi = np.percentile(v, [1, 99.8])
    assert np.isclose(out[v == v.max()].max(), (v.max() - lo) / (hi - lo), rtol=1e-5)
    assert st.normalize(v, clip=True).max() == 1.0


def test_to_uint8_window(rng):
    v = blobs(rng)
    out = st.to_uint8(v, low=0, high=100)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    np.testing.assert_array_equal(out, np.round((v.astype(np.float64) - v.min()) * 255.0 / (v.max() - v.min())).astype(np.uint8))


# -- chain --------------------------------------------------------------------------------------
def test_chain_order_enabled_and_dtype(rng):
    v = blobs(rng)
    a = [GammaStep(gamma=0.5), TophatStep(radius=2)]
    b = [TophatStep(radius=2), GammaStep(gamma=0.5)]
    assert not np.array_equal(ch.apply_chain(v, a), ch.apply_chain(v, [ThresholdStep(mode="absolute", value=500), *a]))
    np.testing.assert_array_equal(ch.apply_chain(v, [GammaStep(gamma=0.5, enabled=False)]), v)
    np.testing.assert_array_equal(ch.apply_chain(v, a), st.tophat_subtract(st.gamma_correction(v, gamma=0.5), radius=2))
    np.testing.assert_array_equal(ch.apply_chain(v, b), st.gamma_correction(st.tophat_subtract(v, radius=2), gamma=0.5))
    assert ch.chain_dtype(default_chain(), np.uint16) == np.float32
    assert ch.chain_dtype([ToUint8Step(), MedianStep()], np.uint16) == np.uint8
    assert ch.chain_dtype([NormalizeStep(enabled=False)], np.uint16) == np.uint16
    steps_seen = [s.step for s, _ in ch.iter_chain(v, default_chain())]
    assert steps_seen == ["threshold", "gamma", "clahe", "median", "tophat", "normalize"]


def test_chain_halo_adds_up():
    assert ch.chain_halo([MedianStep(size=5), TophatStep(radius=3)]) == (0, 8, 8)
    assert ch.chain_halo([MedianStep(size=3, mode="3d", size_z=5), TophatStep(radius=1, mode="3d", radius_z=1)]) == (4, 3, 3)
    assert ch.chain_halo([ClaheStep(), MedianStep()]) == (0, None, None)
    assert ch.chain_halo([ClaheStep(mode="3d")]) == (None, None, None)
    assert ch.chain_halo([ThresholdStep(), GammaStep(), NormalizeStep()]) == (0, 0, 0)
    assert ch.chain_halo([MedianStep(size=9, enabled=False)]) == (0, 0, 0)


def test_describe_chain_records_library_versions():
    import cv2
    import scipy

    desc = ch.describe_chain([ClaheStep(), MedianStep(mode="3d"), GammaStep(enabled=False)])
    assert [d["step"] for d in desc] == ["clahe", "median"]
    assert desc[0]["library"] == "opencv-python-headless" and desc[0]["version"].startswith(cv2.__version__)
    assert desc[0]["params"]["clip_limit"] == 2.0 and "createCLAHE" in desc[0]["call"]
    assert desc[1]["library"] == "scipy" and desc[1]["version"] == scipy.__version__
    sig = ch.chain_signature({"a": [GammaStep()]})
    assert sig == ch.chain_signature({"a": [GammaStep(), MedianStep(enabled=False)]})
    assert sig != ch.chain_signature({"a": [GammaStep(gamma=0.7)]})


# -- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "yaml_text,match",
    [
        ("chain:\n  - {step: gamma, gamma: -1}\n", r"chain\.0\.gamma\.gamma.*greater than 0.*-1"),
        ("chain:\n  - {step: median, size: 4}\n", r"chain\.0\.median.*size must be odd"),
        ("chain:\n  - {step: clahe, clip_limit: 0}\n", r"chain\.0\.clahe\.clip_limit.*greater than 0"),
        ("chain:\n  - {step: clahe, tile_grid: [0, 8]}\n", r"tile_grid entries must be >= 1"),
        ("chain:\n  - {step: normalize, low: 99, high: 2}\n", r"need low < high"),
        ("chain:\n  - {step: threshold, mode: percentile, value: 120}\n", r"percentile in \[0, 100\]"),
        ("chain:\n  - {step: threshold, mode: dtype_fraction, value: 3}\n", r"fraction in \[0, 1\]"),
        ("chain:\n  - {step: normalize}\n  - {step: gamma}\n", r"'normalize' must be the last enabled step"),
        ("chain:\n  - {step: blur}\n", r"chain\.0"),
        ("chain:\n  - {step: gamma, gama: 2}\n", r"chain\.0\.gamma\.gama.*unknown key"),
        ("channels:\n  Cy3:\n    - {step: median, size: 2}\n", r"channels\.Cy3\.0\.median"),
        ("block_shape: [0, -1, 8]\n", r"block_shape"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, yaml_text, match):
    path = tmp_path / "pre.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(PreprocessConfig, path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_config_reorder_and_disable(tmp_path):
    path = tmp_path / "pre.yaml"
    path.write_text("chain:\n  - {step: tophat, radius: 1}\n  - {step: gamma, gamma: 1.2, enabled: false}\n  - {step: normalize}\n")
    cfg = load_config(PreprocessConfig, path)
    assert [s.step for s in ch.enabled(cfg.chain_for("Hoechst"))] == ["tophat", "normalize"]
    default = PreprocessConfig()
    assert [s.step for s in default.chain] == ["threshold", "gamma", "clahe", "median", "tophat", "normalize"]

"""The preprocessing filters (thesis section 2.6) as pure functions over ``z, y, x`` volumes.

Every step takes an unsigned-integer volume (uint8 or uint16, the raw data's own bit
depth: nothing is cut to 8 bit unless :func:`to_uint8` is put in the chain) and returns
a new array of the same shape. All but :func:`to_uint8` and :func:`normalize` keep the
dtype, so the full 16-bit dynamic range survives the chain; :func:`normalize` gives
float32 and must come last.

Steps that depend on whole-volume statistics (a percentile threshold, the 8-bit window,
the normalisation percentiles) take an optional ``hist``: the value histogram of the
*whole* volume at that point of the chain (:func:`volume_histogram`). Without it they
compute it from ``volume``; with it they are point-wise, which is how a volume split
in blocks gives exactly the single-volume result.

Border handling is part of each step's definition (OpenCV's and scipy's own modes), so
applying a step to a block with a large enough halo reproduces the whole-volume result
in the block's core; :mod:`pipeline.preprocess.chain` records each step's halo.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from typing import Literal, Sequence

import numpy as np

from pipeline.preprocess.normalize import normalize_range

LOG = logging.getLogger(__name__)

THRESHOLD_MODES = ("absolute", "dtype_fraction", "range_fraction", "percentile")


# -- statistics ---------------------------------------------------------------------------
def check_integer(volume: np.ndarray, step: str) -> None:
    """Raise ``TypeError`` unless ``volume`` is uint8 or uint16 (what the steps work on)."""
    if volume.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"step {step!r} works on uint8/uint16 volumes, got {volume.dtype}")


def volume_histogram(volume: np.ndarray) -> np.ndarray:
    """Count of every possible value of a uint8/uint16 volume (length 256 or 65536, int64).

    Histograms of the blocks of a volume add up to the volume's histogram, which is what
    lets a split volume use exact whole-volume percentiles.
    """
    check_integer(volume, "histogram")
    return np.bincount(volume.ravel(), minlength=np.iinfo(volume.dtype).max + 1).astype(np.int64, copy=False)


def percentiles_from_hist(hist: np.ndarray, q: Sequence[float] | float) -> np.ndarray:
    """Percentiles of the values counted in ``hist``, exactly as :func:`numpy.percentile` gives them.

    Parameters
    ----------
    hist : numpy.ndarray
        Value histogram (``hist[v]`` = number of voxels equal to ``v``).
    q : float or sequence of float
        Percentiles in [0, 100].

    Returns
    -------
    numpy.ndarray
        float64, one value per percentile; equal to ``np.percentile(volume, q)`` (method
        ``"linear"``) for the volume the histogram was made from.

    Examples
    --------
    >>> v = np.array([0, 3, 3, 10], np.uint16)
    >>> percentiles_from_hist(volume_histogram(v), [0, 50, 100]).tolist()
    [0.0, 3.0, 10.0]
    """
    q = np.true_divide(np.atleast_1d(np.asarray(q, dtype=np.float64)), 100)
    n = int(hist.sum())
    if n == 0:
        return np.zeros(q.shape, np.float64)
    # numpy's virtual index for method "linear", with the same float operations
    virtual = (n - 1) * q
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = n - 1
    nxt[above] = n - 1
    below = virtual < 0
    prev[below] = 0
    nxt[below] = 0
    cum = np.cumsum(hist)
    a = np.searchsorted(cum, prev.astype(np.int64), side="right").astype(np.float64)
    b = np.searchsorted(cum, nxt.astype(np.int64), side="right").astype(np.float64)
    gamma = virtual - prev
    diff = b - a
    out = a + diff * gamma
    hi = gamma >= 0.5
    out[hi] = (b - diff * (1 - gamma))[hi]
    return out


def _hist(volume: np.ndarray, hist: np.ndarray | None) -> np.ndarray:
    return volume_histogram(volume) if hist is None else hist


def _value_range(hist: np.ndarray) -> tuple[int, int]:
    nz = np.flatnonzero(hist)
    return (int(nz[0]), int(nz[-1])) if nz.size else (0, 0)


# -- steps ----------------------------------------------------------------------------------
def threshold_level(
    dtype: np.dtype,
    mode: str,
    value: float,
    hist: np.ndarray | None = None,
    upper_percentile: float = 99.5,
) -> float:
    """The intensity below which :func:`background_threshold` sets voxels to 0.

    ``absolute``: ``value`` itself; ``dtype_fraction``: ``value`` times the dtype's
    maximum; ``range_fraction``: ``min + value * (top - min)`` with ``top`` the volume's
    ``upper_percentile`` (what the thesis' 8-bit threshold means when the 16 -> 8 bit
    conversion spans the data's range: 7 of 255 is ``value = 7/255``; a high percentile
    rather than the maximum, so saturated nuclei and hot pixels do not set the level);
    ``percentile``: that percentile of the volume.
    """
    if mode == "absolute":
        return float(value)
    if mode == "dtype_fraction":
        return float(value) * np.iinfo(dtype).max
    if hist is None:
        raise ValueError(f"threshold mode {mode!r} needs the volume histogram")
    if mode == "range_fraction":
        lo = _value_range(hist)[0]
        top = float(percentiles_from_hist(hist, upper_percentile)[0])
        return lo + float(value) * (top - lo)
    if mode == "percentile":
        return float(percentiles_from_hist(hist, value)[0])
    raise ValueError(f"unknown threshold mode {mode!r}; use one of {', '.join(THRESHOLD_MODES)}")


def background_threshold(
    volume: np.ndarray,
    *,
    mode: Literal["absolute", "dtype_fraction", "range_fraction", "percentile"] = "range_fraction",
    value: float = 7 / 255,
    upper_percentile: float = 99.5,
    hist: np.ndarray | None = None,
) -> np.ndarray:
    """Set voxels below a background level to 0 (thesis: "values below 7 of 255").

    Parameters
    ----------
    volume : numpy.ndarray
        uint8/uint16 ``z, y, x`` volume.
    mode, value, upper_percentile
        How the level is given; see :func:`threshold_level`.
    hist : numpy.ndarray, optional
        Whole-volume histogram (for the ``range_fraction`` and ``percentile`` modes).

    Returns
    -------
    numpy.ndarray
        Same dtype; voxels ``< level`` are 0, the others unchanged.
    """
    check_integer(volume, "threshold")
    needs_hist = mode in ("range_fraction", "percentile")
    level = threshold_level(volume.dtype, mode, value, _hist(volume, hist) if needs_hist else None, upper_percentile)
    out = volume.copy()
    out[volume < level] = 0
    return out


@lru_cache(maxsize=32)
def _gamma_lut(gamma: float, dtype_str: str) -> np.ndarray:
    top = np.iinfo(dtype_str).max
    x = np.arange(top + 1, dtype=np.float64) / top
    return np.round(top * np.power(x, gamma)).astype(dtype_str)


def gamma_correction(volume: np.ndarray, *, gamma: float = 0.8) -> np.ndarray:
    """``out = max * (in / max) ** gamma`` with ``max`` the dtype's maximum (a lookup table).

    ``gamma < 1`` brightens dark regions, ``gamma > 1`` darkens bright ones. Computed on
    the dtype's full range, so 16-bit data keep 65536 levels.
    """
    check_integer(volume, "gamma")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return _gamma_lut(float(gamma), volume.dtype.str)[volume]


def clahe(
    volume: np.ndarray,
    *,
    clip_limit: float = 2.0,
    tile_grid: tuple[int, int] = (8, 8),
    mode: Literal["2d", "3d"] = "2d",
    tiles_z: int = 1,
    nbins: int = 256,
) -> np.ndarray:
    """Contrast Limited Adaptive Histogram Equalisation.

    Parameters
    ----------
    volume : numpy.ndarray
        uint8/uint16 ``z, y, x`` volume.
    clip_limit : float
        Contrast limit in OpenCV's unit: a histogram bin is clipped at ``clip_limit``
        times the mean bin count of its tile (``max(1, int(clip_limit * tile_area / bins))``
        voxels). On uint16, OpenCV's histogram has 65536 bins, so the clip stays at its
        floor of 1 voxel per bin unless tiles hold more than ``65536 / clip_limit`` pixels.
    tile_grid : (int, int)
        Tiles along y and x (OpenCV's ``tileGridSize`` is ``(x, y)``; we pass it swapped).
    mode : {"2d", "3d"}
        ``"2d"``: each z-slice on its own with ``cv2.createCLAHE`` (the thesis);
        ``"3d"``: ``skimage.exposure.equalize_adapthist`` on the volume with 3D tiles.
    tiles_z : int
        Tiles along z (``"3d"`` only).
    nbins : int
        Histogram bins (``"3d"`` only; the clip limit keeps the unit above).

    Returns
    -------
    numpy.ndarray
        Same dtype, using its full range.
    """
    check_integer(volume, "clahe")
    if mode == "2d":
        import cv2

        op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid[1]), int(tile_grid[0])))
        out = np.empty_like(volume)
        for z in range(volume.shape[0]):
            out[z] = op.apply(np.ascontiguousarray(volume[z]))
        return out
    if mode == "3d":
        from skimage.exposure import equalize_adapthist

        grid = (tiles_z, tile_grid[0], tile_grid[1])
        kernel = tuple(max(1, math.ceil(s / g)) for s, g in zip(volume.shape, grid))
        if volume.max() == volume.min():
            return volume.copy()
        res = equalize_adapthist(volume, kernel_size=kernel, clip_limit=float(clip_limit) / nbins, nbins=int(nbins))
        top = np.iinfo(volume.dtype).max
        return np.round(res * top).astype(volume.dtype)
    raise ValueError(f"unknown CLAHE mode {mode!r}")


def median(
    volume: np.ndarray,
    *,
    size: int = 3,
    mode: Literal["2d", "3d"] = "2d",
    size_z: int = 3,
) -> np.ndarray:
    """Median filter, per z-slice (``"2d"``, a ``size x size`` window) or 3D (``size_z x size x size``).

    2D uses ``cv2.medianBlur`` where OpenCV supports the dtype and size (uint8: any odd
    size; uint16: 3 and 5), else ``scipy.ndimage.median_filter``; both replicate the
    border pixels, so they give the same result. 3D uses ``scipy.ndimage.median_filter``.
    """
    check_integer(volume, "median")
    if size % 2 == 0 or size < 1 or size_z % 2 == 0 or size_z < 1:
        raise ValueError(f"median sizes must be odd and >= 1, got size={size}, size_z={size_z}")
    if mode == "2d":
        if size == 1:
            return volume.copy()
        if volume.dtype == np.uint8 or size in (3, 5):
            import cv2

            out = np.empty_like(volume)
            for z in range(volume.shape[0]):
                out[z] = cv2.medianBlur(np.ascontiguousarray(volume[z]), int(size))
            return out
        from scipy.ndimage import median_filter

        return median_filter(volume, size=(1, size, size), mode="nearest")
    if mode == "3d":
        from scipy.ndimage import median_filter

        return median_filter(volume, size=(size_z, size, size), mode="nearest")
    raise ValueError(f"unknown median mode {mode!r}")


def disk(radius: int) -> np.ndarray:
    """Flat 2D disk footprint (uint8) of the given radius in pixels."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2 <= r**2).astype(np.uint8)


def ellipsoid(radius_z: int, radius: int) -> np.ndarray:
    """Flat 3D footprint (bool) with semi-axes ``radius_z`` (z) and ``radius`` (y, x) in voxels."""
    rz, r = int(radius_z), int(radius)
    zz, yy, xx = np.mgrid[-rz : rz + 1, -r : r + 1, -r : r + 1]
    dz = (zz / rz) ** 2 if rz > 0 else np.where(zz == 0, 0.0, np.inf)
    return (dz + (yy**2 + xx**2) / r**2) <= 1.0


def tophat_subtract(
    volume: np.ndarray,
    *,
    radius: int = 2,
    mode: Literal["2d", "3d"] = "2d",
    radius_z: int = 1,
) -> np.ndarray:
    """Subtract the white top-hat: removes bright specks smaller than the footprint.

    ``volume - white_tophat(volume)`` is the grey opening of the volume, which is how it
    is computed: per z-slice with ``cv2.morphologyEx(MORPH_OPEN)`` and a disk of
    ``radius`` px (``"2d"``), or with ``scipy.ndimage.grey_opening`` and an ellipsoid of
    semi-axes ``radius_z, radius, radius`` (``"3d"``). Bright structures narrower than
    the footprint (hot pixels, fluorescent debris) are flattened to their surroundings;
    choose ``radius`` below the nuclear radius (~4 px at 1.24 um/px).
    """
    check_integer(volume, "tophat")
    if radius < 1:
        raise ValueError(f"top-hat radius must be >= 1, got {radius}")
    if mode == "2d":
        import cv2

        kernel = disk(radius)
        out = np.empty_like(volume)
        for z in range(volume.shape[0]):
            out[z] = cv2.morphologyEx(np.ascontiguousarray(volume[z]), cv2.MORPH_OPEN, kernel)
        return out
    if mode == "3d":
        from scipy.ndimage import grey_opening

        return grey_opening(volume, footprint=ellipsoid(radius_z, radius), mode="reflect")
    raise ValueError(f"unknown top-hat mode {mode!r}")


def to_uint8(
    volume: np.ndarray,
    *,
    low: float = 0.0,
    high: float = 100.0,
    hist: np.ndarray | None = None,
) -> np.ndarray:
    """Map the ``low``..``high`` percentile window linearly onto 0..255 (the thesis' 8-bit conversion).

    Only for reproducing the thesis; it discards dynamic range, so it is off by default.
    """
    check_integer(volume, "to_uint8")
    lo, hi = percentiles_from_hist(_hist(volume, hist), [low, high])
    scale = 255.0 / max(hi - lo, 1e-12)
    out = np.clip(np.round((volume.astype(np.float32) - np.float32(lo)) * np.float32(scale)), 0, 255)
    return out.astype(np.uint8)


def normalize(
    volume: np.ndarray,
    *,
    low: float = 1.0,
    high: float = 99.8,
    clip: bool = False,
    hist: np.ndarray | None = None,
) -> np.ndarray:
    """Percentile normalisation to float32 (the models' input contract).

    The ``low`` and ``high`` percentiles of the whole volume (from its histogram, equal to
    ``numpy.percentile``) map to 0 and 1; see
    :func:`pipeline.preprocess.normalize.percentile_normalize`.
    """
    lo, hi = normalize_bounds(volume, low=low, high=high, hist=hist)
    return normalize_range(volume, lo, hi, clip=clip)


def normalize_bounds(volume: np.ndarray, *, low: float = 1.0, high: float = 99.8, hist: np.ndarray | None = None) -> tuple[float, float]:
    """The values :func:`normalize` maps to 0 and 1: the ``low`` and ``high`` percentiles of ``volume``."""
    check_integer(volume, "normalize")
    lo, hi = percentiles_from_hist(_hist(volume, hist), [low, high])
    return float(lo), float(hi)

"""Percentile intensity normalisation: the input contract of the segmentation models."""

from __future__ import annotations

import numpy as np


def percentile_normalize(
    volume: np.ndarray,
    low: float = 1.0,
    high: float = 99.8,
    *,
    clip: bool = False,
    eps: float = 1e-6,
) -> np.ndarray:
    """Map the ``low`` and ``high`` percentiles of ``volume`` to 0 and 1 (float32).

    Parameters
    ----------
    volume : numpy.ndarray
        Any real-valued array (uint8, uint16, float...).
    low, high : float
        Percentiles (0-100) mapped to 0 and 1; ``low < high``.
    clip : bool
        Clip the result to [0, 1].
    eps : float
        Guards against a flat volume (all values equal -> all zeros).

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.arange(101, dtype=np.uint16)
    >>> out = percentile_normalize(v, 0, 100)
    >>> float(out[0]), float(out[-1])
    (0.0, 1.0)
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    data = np.asarray(volume, dtype=np.float32)
    lo, hi = np.percentile(data, [low, high]) if data.size else (0.0, 1.0)
    return normalize_range(data, lo, hi, clip=clip, eps=eps)


def normalize_range(volume: np.ndarray, lo: float, hi: float, *, clip: bool = False, eps: float = 1e-6) -> np.ndarray:
    """Map ``lo`` and ``hi`` to 0 and 1 (float32): the arithmetic of :func:`percentile_normalize`.

    Used where the percentiles come from elsewhere (the whole-volume histogram when a
    volume is processed in blocks).

    Parameters
    ----------
    volume : numpy.ndarray
        Any real-valued array.
    lo, hi : float
        Values mapped to 0 and 1.
    clip : bool
        Clip the result to [0, 1].
    eps : float
        Smallest ``hi - lo`` used (a flat volume gives zeros).

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape.
    """
    data = np.asarray(volume, dtype=np.float32)
    out = (data - np.float32(lo)) / np.float32(max(hi - lo, eps))
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out.astype(np.float32, copy=False)

"""Optional reduction to 8 bits (the thesis' export step), as a pure function."""

from __future__ import annotations

import numpy as np


def rescale_to_uint8(volume: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly onto 0-255 (rounded, clipped outside).

    With ``low, high = 0, 65535`` a uint16 value ``v`` becomes ``round(v / 257)``, the
    full-range conversion NIS-Elements applied to the thesis data. Using one fixed
    range for every time point keeps intensities comparable over time (a per-volume
    stretch would not).

    Parameters
    ----------
    volume : numpy.ndarray
        Integer or float data.
    low, high : float
        Input values sent to 0 and 255; ``low < high``.

    Returns
    -------
    numpy.ndarray
        uint8 array of the same shape.

    Examples
    --------
    >>> rescale_to_uint8(np.array([0, 257, 65535], np.uint16), 0, 65535).tolist()
    [0, 1, 255]
    """
    if not high > low:
        raise ValueError(f"need low < high, got {low}, {high}")
    out = np.empty(volume.shape, dtype=np.uint8)
    scale = np.float32(255.0 / (high - low))
    for i in range(volume.shape[0] if volume.ndim > 2 else 1):
        plane = volume[i] if volume.ndim > 2 else volume
        scaled = (plane.astype(np.float32) - np.float32(low)) * scale + np.float32(0.5)
        np.clip(scaled, 0, 255, out=scaled)
        if volume.ndim > 2:
            out[i] = scaled.astype(np.uint8)
        else:
            out[...] = scaled.astype(np.uint8)
    return out

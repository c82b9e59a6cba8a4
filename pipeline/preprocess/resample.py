"""Resampling of volumes and label images to another grid (shared by training sets and segmentation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def zoomed_shape(shape: Sequence[int], factors: Sequence[float]) -> tuple[int, int, int]:
    """``round(shape * factors)``, at least 1 per axis."""
    return tuple(max(1, int(round(n * f))) for n, f in zip(shape, factors))


def resample_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear resampling of a ``(z, y, x)`` float image to ``shape`` (anti-aliased when shrinking).

    The same resampling as the training-set builders use (``skimage.transform.resize``,
    edge mode), so a model sees data resampled at segment time as it saw its training data.
    """
    from skimage.transform import resize

    shape = tuple(int(s) for s in shape)
    if tuple(image.shape) == shape:
        return np.asarray(image, dtype=np.float32)
    shrink = any(s < n for s, n in zip(shape, image.shape))
    out = resize(np.asarray(image, dtype=np.float32), shape, order=1, mode="edge", anti_aliasing=shrink, preserve_range=True)
    return out.astype(np.float32, copy=False)


def nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each of ``n_out`` output voxels sampled from ``n_in`` (voxel centres aligned)."""
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.clip(idx, 0, n_in - 1)


def resample_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of integer labels to ``shape`` (ids unchanged)."""
    shape = tuple(int(s) for s in shape)
    if tuple(labels.shape) == shape:
        return labels
    index = np.ix_(*(nearest_indices(o, i) for o, i in zip(shape, labels.shape)))
    return labels[index]

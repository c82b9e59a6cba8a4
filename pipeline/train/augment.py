"""Random augmentation of training patches: flips, 90-degree y-x rotations, intensity, noise."""

from __future__ import annotations

import numpy as np

from pipeline.config.train import AugmentConfig


def augment(
    image: np.ndarray, target: np.ndarray, rng: np.random.Generator, config: AugmentConfig, extra: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment one patch; geometric changes apply to image, target (and ``extra``) alike.

    Parameters
    ----------
    image : numpy.ndarray
        float32 ``(channels, z, y, x)``.
    target : numpy.ndarray
        Integer ``(z, y, x)``.
    rng : numpy.random.Generator
        Source of all random numbers (its state is checkpointed).
    config : AugmentConfig
        What to apply.
    extra : numpy.ndarray, optional
        A second ``(z, y, x)`` target (the centre map) that gets the geometric changes only;
        when given it is returned third.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray[, numpy.ndarray])
        Contiguous augmented copies.

    Examples
    --------
    >>> img = np.zeros((1, 2, 4, 4), np.float32); tgt = np.zeros((2, 4, 4), np.int64)
    >>> a, b = augment(img, tgt, np.random.default_rng(0), AugmentConfig())
    >>> a.shape, b.shape
    ((1, 2, 4, 4), (2, 4, 4))
    """
    if config.flip:
        for axis in range(3):
            if rng.random() < 0.5:
                image = np.flip(image, axis=axis + 1)
                target = np.flip(target, axis=axis)
                extra = None if extra is None else np.flip(extra, axis=axis)
    if config.rotate90 and image.shape[-1] == image.shape[-2]:
        k = int(rng.integers(4))
        if k:
            image = np.rot90(image, k, axes=(-2, -1))
            target = np.rot90(target, k, axes=(-2, -1))
            extra = None if extra is None else np.rot90(extra, k, axes=(-2, -1))
    image = np.array(image, dtype=np.float32, order="C")  # a copy: the caller's array is never changed
    lo, hi = config.blur_sigma
    if hi > 0 and rng.random() < 0.5:
        from scipy import ndimage as ndi

        sigma = float(rng.uniform(lo, hi))
        image = ndi.gaussian_filter(image, (0, 0, sigma, sigma), mode="nearest").astype(np.float32)
    lo, hi = config.gamma
    if hi > lo or lo != 1.0:
        low, high = float(image.min()), float(image.max())
        if high > low:
            scaled = (image - low) / (high - low)
            image = (scaled ** np.float32(rng.uniform(lo, hi))) * np.float32(high - low) + np.float32(low)
    lo, hi = config.intensity_scale
    if hi > lo or lo != 1.0:
        image *= np.float32(rng.uniform(lo, hi))
    lo, hi = config.intensity_shift
    if hi > lo or lo != 0.0:
        image += np.float32(rng.uniform(lo, hi))
    if config.noise_std > 0:
        std = rng.uniform(0, config.noise_std)
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(std)
    if extra is not None:
        return image, np.ascontiguousarray(target), np.ascontiguousarray(extra)
    return image, np.ascontiguousarray(target)

"""Patch sampling over-samples rare classes; augmentation keeps image and target aligned."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.train import AugmentConfig
from pipeline.train.augment import augment
from pipeline.train.data import Volume, pad_to
from pipeline.train.sampling import PatchSampler


def make_volume(shape=(8, 64, 64)) -> Volume:
    sem = np.zeros(shape, np.uint8)
    sem[1:3, -8:-4, -8:-4] = 2  # one small nucleus near a corner: 0.2% of the voxels
    sem[1:3, -9, -8:-4] = 1
    img = sem.astype(np.float32)[None]
    vol = Volume("v", img, sem, (sem == 2).astype(np.uint32), shape, (5.0, 1.24, 1.24), "synthetic", "train", "Hoechst")
    vol.centres = {c: np.flatnonzero(sem.ravel() == c) for c in (1, 2)}
    return vol


def test_foreground_oversampling(rng):
    vol = make_volume()
    hits = {}
    for frac in (0.0, 1.0):
        sampler = PatchSampler([vol], (4, 16, 16), foreground_fraction=frac, edge_fraction=0.5)
        hits[frac] = np.mean([(sampler.sample(rng)[1] > 0).any() for _ in range(300)])
    assert hits[1.0] == 1.0
    assert hits[0.0] < 0.3


def test_sampling_is_reproducible():
    vol = make_volume()
    sampler = PatchSampler([vol], (4, 16, 16))
    a = [sampler.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [sampler.sample(np.random.default_rng(7)) for _ in range(3)]
    for (ia, ta, _), (ib, tb, _) in zip(a, b):
        assert np.array_equal(ia, ib) and np.array_equal(ta, tb)
    img, tgt, dist = a[0]
    assert dist is None
    assert img.shape == (1, 4, 16, 16) and img.dtype == np.float32 and tgt.dtype == np.int64


def test_small_volume_must_be_padded():
    vol = make_volume((4, 12, 12))
    with pytest.raises(ValueError, match="smaller than the patch"):
        PatchSampler([vol], (4, 16, 16))
    assert pad_to(vol.semantic, (4, 16, 16)).shape == (4, 16, 16)
    assert pad_to(vol.image, (4, 16, 16)).shape == (1, 4, 16, 16)


def test_augment_keeps_alignment(rng):
    target = rng.integers(0, 3, size=(4, 16, 16))
    image = target.astype(np.float32)[None]
    geometric = AugmentConfig(intensity_scale=[1, 1], intensity_shift=[0, 0], noise_std=0)
    seen = set()
    for _ in range(20):
        img, tgt = augment(image, target, rng, geometric)
        assert np.array_equal(img[0], tgt.astype(np.float32))
        assert np.array_equal(image[0], target)  # inputs untouched
        seen.add(img.tobytes())
    assert len(seen) > 5  # flips and rotations do change the patch
    img, tgt = augment(image, target, rng, AugmentConfig(flip=False, rotate90=False, intensity_scale=[2, 2], intensity_shift=[1, 1], noise_std=0))
    assert np.array_equal(tgt, target) and np.allclose(img, image * 2 + 1)

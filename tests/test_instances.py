"""Instance labelling: the seeded watershed splits touching nuclei that connected components merge."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.segment.instances import label_components, label_nuclei


def ellipsoid(shape, centre, radii):
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2 + ((xx - centre[2]) / radii[2]) ** 2 <= 1


def touching_pair(shape=(9, 40, 48)):
    """Two ellipsoids whose nucleus classes touch over a neck (the edge prediction failed there)."""
    a = ellipsoid(shape, (4, 20, 15), (3.5, 8, 8))
    b = ellipsoid(shape, (4, 20, 31), (3.5, 8, 8))  # centres 16 px apart, radii 8: they touch
    truth = np.zeros(shape, np.uint32)
    truth[a] = 1
    truth[b & ~a] = 2
    sem = np.zeros(shape, np.uint8)
    sem[a | b] = 2
    # the predicted edge ring around the pair, but nothing between the two
    from scipy import ndimage as ndi

    ring = ndi.binary_dilation(a | b, iterations=1) & ~(a | b)
    sem[ring] = 1
    return sem, truth


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_semantic_touching_pair_split():
    sem, truth = touching_pair()
    assert label_components(sem).max() == 1  # the thesis' cc3d merges them
    labels = label_nuclei(sem, erode_xy=2, min_size=10)
    assert labels.dtype == np.uint32 and labels.max() == 2
    for t in (1, 2):
        best = max(iou(truth == t, labels == k) for k in (1, 2))
        assert best > 0.8


def test_probabilities_touching_pair_split(rng):
    sem, truth = touching_pair()
    # soft probabilities: p(nucleus) dips in the neck where the two nuclei meet
    from scipy import ndimage as ndi

    # distance to each nucleus' own border: small in the neck where the two meet
    dist = np.maximum(ndi.distance_transform_edt(truth == 1), ndi.distance_transform_edt(truth == 2))
    p_nuc = (0.5 + 0.45 * np.clip(dist / 4.0, 0, 1)) * (sem == 2)
    p_edge = (sem == 1) * 0.8 + (sem == 2) * (1 - p_nuc) * 0.7
    p_bg = 1 - p_nuc - p_edge
    probs = np.stack([p_bg, p_edge, p_nuc]).astype(np.float32)
    probs += rng.normal(0, 0.01, probs.shape).astype(np.float32)
    probs = np.clip(probs, 0, None)
    probs /= probs.sum(0, keepdims=True)
    assert label_components(np.argmax(probs, 0)).max() == 1
    labels = label_nuclei(probs, seed_threshold=0.7, erode_xy=0, min_size=10)
    assert labels.max() == 2
    assert ((labels > 0) == (np.argmax(probs, 0) == 2)).all()
    grown = label_nuclei(probs, seed_threshold=0.7, erode_xy=0, min_size=10, include_edge=True)
    assert (grown > 0).sum() > (labels > 0).sum()
    for t in (1, 2):
        assert max(iou(truth == t, labels == k) for k in (1, 2)) > 0.75


def test_small_objects_removed_and_relabelled():
    sem = np.zeros((5, 30, 30), np.uint8)
    sem[1:4, 2:10, 2:10] = 2
    sem[2, 20, 20] = 2  # one voxel: too small for a seed
    sem[1:4, 18:26, 2:10] = 2
    labels = label_nuclei(sem, erode_xy=0, min_seed_size=4, min_size=10)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert labels[2, 20, 20] == 0


def test_erosion_keeps_small_nuclei():
    sem = np.zeros((3, 12, 12), np.uint8)
    sem[1, 4:6, 4:6] = 2  # erased by y-x erosion, must survive as its own seed
    labels = label_nuclei(sem, erode_xy=2, min_seed_size=1, min_size=1)
    assert labels.max() == 1 and (labels > 0).sum() == 4


def test_empty_and_bad_input():
    assert label_nuclei(np.zeros((3, 8, 8), np.uint8)).max() == 0
    with pytest.raises(ValueError, match="3 classes"):
        label_nuclei(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="semantic map of integers"):
        label_nuclei(np.zeros((3, 8, 8), np.float32))


# -- the exact meaning of each labelling parameter (boundaries, connectivity) -----------------
def _cube(sem, z, y, x, size):
    sem[z : z + size[0], y : y + size[1], x : x + size[2]] = 2


@pytest.mark.parametrize("n_voxels,kept", [(11, False), (12, True), (13, True)])
def test_min_size_removes_only_instances_smaller_than_it(n_voxels, kept):
    """``min_size`` voxels is the smallest instance kept (``sizes < min_size`` are removed)."""
    sem = np.zeros((4, 12, 20), np.uint8)
    sem.reshape(-1)[np.ravel_multi_index(np.unravel_index(np.arange(n_voxels), (1, 1, n_voxels)), sem.shape) + 2 * 20 + 1] = 2
    assert (sem == 2).sum() == n_voxels
    labels = label_nuclei(sem, erode_xy=0, min_seed_size=1, min_size=12)
    assert int(labels.max()) == int(kept)
    if kept:
        assert (labels > 0).sum() == n_voxels


@pytest.mark.parametrize("seed_voxels,kept", [(3, False), (4, True)])
def test_min_seed_size_drops_only_seeds_smaller_than_it(seed_voxels, kept):
    """A seed of exactly ``min_seed_size`` voxels is kept; one voxel fewer is dropped."""
    sem = np.zeros((3, 10, 10), np.uint8)
    sem[1, 4, 2 : 2 + seed_voxels] = 2
    labels = label_nuclei(sem, erode_xy=0, min_seed_size=4, min_size=0)
    assert int(labels.max()) == int(kept)


@pytest.mark.parametrize(
    "second",
    [(0, 2, 2), (2, 2, 2), (2, 0, 2)],
    ids=["y-x diagonal (edge-adjacent)", "3D corner (vertex-adjacent)", "z-x diagonal (edge-adjacent)"],
)
def test_seeds_are_6_connected(second):
    """Interiors that touch only along an edge or at a corner are two seeds, so two nuclei
    (26- or 18-connected seeds would merge them)."""
    sem = np.zeros((5, 12, 12), np.uint8)
    _cube(sem, 0, 0, 0, (2, 2, 2))  # voxels 0..1 on each axis
    _cube(sem, *second, (2, 2, 2))  # starts at 2 on the diagonal axes: touches only diagonally
    assert label_components(sem, connectivity=26).max() == 1  # one object to a 26-connected labeller
    labels = label_nuclei(sem, erode_xy=0, min_seed_size=1, min_size=0, elevation="distance")
    assert int(labels.max()) == 2


# -- maxima seeds: one seed per nucleus where the blob of nucleus class covers two --------------
def stacked_pair(dip: float):
    """Two nuclei stacked in z, 2 slices each, whose nucleus class forms one 4-slice blob.

    p(nucleus) is above every seed threshold on all 4 slices (the axial blur left no edge
    between them) but dips by ``dip`` on the two slices where they meet.
    """
    shape = (8, 24, 24)
    disc = ellipsoid((1, 24, 24), (0, 12, 12), (1, 7, 7))[0]
    truth = np.zeros(shape, np.uint32)
    truth[2:4][:, disc] = 1
    truth[4:6][:, disc] = 2
    p_nuc = np.zeros(shape, np.float32)
    for z, level in zip(range(2, 6), (0.95, 0.95 - dip, 0.95 - dip, 0.94)):
        p_nuc[z][disc] = level
    yy, xx = np.mgrid[:24, :24]
    p_nuc *= (1.0 - 0.02 * np.hypot(yy - 12, xx - 12) / 7)[None]  # a peak at each nucleus' centre
    p_edge = np.where(p_nuc > 0, 0.03, 0.0).astype(np.float32)
    probs = np.stack([1 - p_nuc - p_edge, p_edge, p_nuc])
    return probs, truth


def test_maxima_seeds_split_nuclei_stacked_in_z():
    probs, truth = stacked_pair(dip=0.15)
    interior = label_nuclei(probs, seed_threshold=0.5, erode_xy=0, min_size=5)
    assert interior.max() == 1  # one 6-connected interior over both nuclei: merged
    maxima = label_nuclei(probs, seed_threshold=0.5, min_size=5, seeds="maxima", seed_footprint=(3, 5, 5), seed_smooth=(0, 0.8, 0.8))
    assert maxima.max() == 2
    for t in (1, 2):
        assert max(iou(truth == t, maxima == k) for k in (1, 2)) > 0.9


def test_maxima_seeds_footprint_and_threshold():
    probs, truth = stacked_pair(dip=0.15)
    # a footprint deep enough to reach the other nucleus' peak leaves one maximum
    assert label_nuclei(probs, seed_threshold=0.5, min_size=5, seeds="maxima", seed_footprint=(7, 5, 5)).max() == 1
    # maxima at or below the seed threshold seed nothing
    assert label_nuclei(probs, seed_threshold=0.96, min_size=5, seeds="maxima").max() == 0
    with pytest.raises(ValueError, match="seeds must be"):
        label_nuclei(probs, seeds="peaks")


def test_labelling_scaled_to_a_finer_grid():
    from pipeline.config.train import LabelingConfig
    from pipeline.segment.backends.unet import scale_labeling

    lab = LabelingConfig(min_size=16, min_seed_size=4, erode_xy=2, seeds="maxima", seed_footprint=[3, 5, 5], seed_smooth=[0.0, 0.8, 0.8])
    fine = scale_labeling(lab, (0.5, 0.5, 0.5))  # data twice as fine per axis as the model's grid
    assert fine.min_size == 128 and fine.min_seed_size == 32 and fine.erode_xy == 4
    assert fine.seed_footprint == [5, 9, 9] and fine.seed_smooth == [0.0, 1.6, 1.6]
    assert scale_labeling(lab, (1.0, 1.0, 1.0)).seed_footprint == [3, 5, 5]


def test_maxima_seeds_found_on_the_model_grid_and_placed_on_a_finer_one():
    from pipeline.config.train import LabelingConfig
    from pipeline.segment.instances import maxima_seeds_on

    probs, _ = stacked_pair(dip=0.15)  # peaks at z 2 and 5, y-x centre (12, 12)
    lab = LabelingConfig(seeds="maxima", seed_threshold=0.5, foreground_threshold=0.5)
    fine = maxima_seeds_on(probs, lab, (16, 48, 48))  # twice as fine per axis
    assert fine.dtype == np.uint32 and fine.max() == 2 and (fine > 0).sum() == 2
    zs, ys, xs = np.nonzero(fine)
    assert sorted(zs) == [4, 10] and set(ys) == {24} and set(xs) == {24}  # (2, 12, 12) -> (4.5 - 0.5, 24.5 - 0.5, ...)
    # the same seeds as labelling on the model's grid finds there
    same = maxima_seeds_on(probs, lab, probs.shape[1:])
    assert sorted(np.nonzero(same)[0]) == [2, 5]
    grown = label_nuclei(probs, seed_threshold=0.5, min_size=5, seeds="maxima", markers=same)
    assert grown.max() == 2
    assert maxima_seeds_on(probs, lab.model_copy(update={"seed_threshold": 0.99}), (16, 48, 48)).max() == 0


def blurred_nucleus():
    """One nucleus 2 slices thick whose foreground the axial blur spreads a slice above and below,
    where only a narrower cap passes the threshold (what predicted masks do at 5 um per slice)."""
    shape = (8, 24, 24)
    disc = ellipsoid((1, 24, 24), (0, 12, 12), (1, 7, 7))[0]
    cap = ellipsoid((1, 24, 24), (0, 12, 12), (1, 3, 3))[0]
    truth = np.zeros(shape, np.uint32)
    truth[3:5][:, disc] = 1
    p_fg = np.zeros(shape, np.float32)
    p_fg[3:5][:, disc] = 0.95
    p_fg[2][cap] = p_fg[5][cap] = 0.7
    p_nuc = np.where(p_fg > 0.9, 0.8, 0.0).astype(np.float32)
    probs = np.stack([1 - p_fg, p_fg - p_nuc, p_nuc])
    return probs, truth


def test_z_trim_cuts_the_blurred_end_slices_only():
    from pipeline.segment.instances import trim_z

    probs, truth = blurred_nucleus()
    kwargs = dict(seed_threshold=0.5, erode_xy=0, min_size=5, include_edge=True)
    plain = label_nuclei(probs, **kwargs)
    assert sorted(np.unique(np.nonzero(plain)[0])) == [2, 3, 4, 5]  # 4 slices for a 2-slice nucleus
    assert iou(truth == 1, plain == 1) < 0.9
    trimmed = label_nuclei(probs, z_trim=0.3, **kwargs)  # caps: 29 of 149 voxels per slice
    assert iou(truth == 1, trimmed == 1) == 1.0
    # a middle slice below the fraction stays: an instance is never cut in two
    lab = np.zeros((5, 6, 6), np.uint32)
    lab[0:5, 1:5, 1:5] = 1
    lab[2] = 0
    lab[2, 2, 2] = 1
    lab[:, 0, 0] = 2  # a thin column: every slice is its largest
    before = lab.copy()
    trim_z(lab, 0.5)
    assert np.array_equal(lab, before)
    assert trim_z(np.zeros((3, 4, 4), np.uint32), 0.5).max() == 0


def test_min_peak_drops_instances_the_model_is_unsure_of():
    probs, _ = blurred_nucleus()
    faint = probs.copy()
    faint[1:, :, :, :] *= 0.45  # the whole nucleus at p(nucleus) 0.36, foreground 0.45
    faint[0] = 1 - faint[1] - faint[2]
    both = np.concatenate([probs, faint], axis=3)
    kwargs = dict(seeds="maxima", seed_threshold=0.2, foreground_threshold=0.3, erode_xy=0, min_size=5, include_edge=True)
    assert label_nuclei(both, **kwargs).max() == 2
    kept = label_nuclei(both, min_peak=0.5, **kwargs)
    assert kept.max() == 1 and not kept[..., probs.shape[3]:].any()


@pytest.mark.parametrize("key,value", [("z_trim", -0.1), ("z_trim", 1.0), ("seed_footprint", [0, 5, 5]), ("seed_smooth", [0, -1, 0]), ("min_peak", 1.0)])
def test_labeling_config_rejects_bad_values_naming_the_key(key, value):
    from pydantic import ValidationError

    from pipeline.config.train import LabelingConfig

    with pytest.raises(ValidationError, match=key):
        LabelingConfig(**{key: value})

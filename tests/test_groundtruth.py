"""Ground-truth preparation: the vectorised target equals a per-label, per-slice loop."""

from __future__ import annotations

import itertools

import cc3d
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

from pipeline.errors import InputError
from pipeline.groundtruth.prepare import as_instances, prepare_target, summarize
from pipeline.groundtruth.trainset import class_balance


def blobs(rng, shape=(5, 40, 44), n=14, distance=4, noise=25, id_scale=1):
    """Touching anisotropic nuclei (seeds grown with expand_labels) plus scattered label noise."""
    lab = np.zeros(shape, np.uint32)
    idx = tuple(rng.integers(0, s, n) for s in shape)
    lab[idx] = np.arange(1, n + 1)
    lab = expand_labels(lab, distance=distance, spacing=(3, 1, 1)).astype(np.uint32)
    noise_idx = tuple(rng.integers(0, s, noise) for s in shape)
    lab[noise_idx] = rng.integers(1, n + 1, noise)
    return lab * np.uint32(id_scale)


def reference(lab, *, min_area, smooth, smooth_radius, min_volume, edge_width, edge_mode, edge_z):
    """The thesis' algorithm, written the slow way: loops over every label and every slice."""
    lab = lab.astype(np.int64).copy()
    ids = [int(v) for v in np.unique(lab) if v]
    nz = lab.shape[0]
    for label, z in itertools.product(ids, range(nz)):
        piece = lab[z] == label
        if 0 < piece.sum() < min_area:
            lab[z][piece] = 0
    r = smooth_radius
    if smooth == "majority" and r:
        k = 2 * r + 1
        new = np.zeros_like(lab)
        for label, z in itertools.product(ids, range(nz)):
            count = ndi.convolve((lab[z] == label).astype(int), np.ones((k, k), int), mode="nearest")
            new[z][2 * count > k * k] = label
        lab = new
    elif smooth == "opening" and r:
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = yy**2 + xx**2 <= r**2
        new = np.zeros_like(lab)
        for label, z in itertools.product(ids, range(nz)):
            eroded = ndi.binary_erosion(lab[z] == label, disk, border_value=1)
            new[z][ndi.binary_dilation(eroded, disk)] = label
        lab = new
    for label in ids:
        mask = lab == label
        if 0 < mask.sum() < min_volume:
            lab[mask] = 0
    k = 2 * edge_width + 1
    in_plane = np.ones((1, k, k), bool)
    with_z = np.zeros((3, k, k), bool)  # the slice window plus the voxels directly above and below
    with_z[1] = True
    with_z[:, edge_width, edge_width] = True
    across_labels = in_plane if edge_z == "none" else with_z
    across_background = with_z if edge_z == "all" else in_plane
    edge = np.zeros(lab.shape, bool)
    for label in ids:
        mask = lab == label
        if not mask.any():
            continue
        others = (lab > 0) & ~mask
        if edge_mode == "inner":  # the mask minus its erosion by background / by other nuclei
            edge |= mask & ndi.binary_dilation(lab == 0, across_background)
            edge |= mask & ndi.binary_dilation(others, across_labels)
        else:  # dilation minus mask (thesis)
            edge |= ndi.binary_dilation(mask, across_background) & (lab == 0)
            edge |= ndi.binary_dilation(mask, across_labels) & others
    semantic = np.where(lab > 0, 2, 0).astype(np.uint8)
    semantic[edge] = 1
    return semantic, lab


PARAMS = [
    dict(min_area=20, smooth="majority", smooth_radius=1, min_volume=0, edge_width=1, edge_mode="inner", edge_z="contacts"),
    dict(min_area=5, smooth="majority", smooth_radius=2, min_volume=60, edge_width=1, edge_mode="outer", edge_z="none"),
    dict(min_area=10, smooth="opening", smooth_radius=1, min_volume=0, edge_width=2, edge_mode="inner", edge_z="all"),
    dict(min_area=0, smooth="opening", smooth_radius=2, min_volume=30, edge_width=1, edge_mode="outer", edge_z="contacts"),
    dict(min_area=20, smooth="none", smooth_radius=1, min_volume=0, edge_width=1, edge_mode="outer", edge_z="all"),
]


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"{p['smooth']}-{p['edge_mode']}-{p['edge_z']}-w{p['edge_width']}")
@pytest.mark.parametrize("seed,id_scale", [(0, 1), (1, 1), (2, 100_003)])
def test_vectorised_equals_per_label_reference(params, seed, id_scale):
    lab = blobs(np.random.default_rng(seed), id_scale=id_scale)
    sem, inst = prepare_target(lab, **params)
    ref_sem, ref_inst = reference(lab, **params)
    np.testing.assert_array_equal(inst, ref_inst)
    np.testing.assert_array_equal(sem, ref_sem)
    assert sem.dtype == np.uint8 and inst.dtype == np.uint32
    assert set(np.unique(sem)) <= {0, 1, 2} and (sem == 1).any() and (sem == 2).any()


def test_small_pieces_removed_ids_kept():
    lab = np.zeros((3, 30, 30), np.uint16)
    lab[:, 2:12, 2:12] = 7  # 100 px per slice
    lab[1, 20:24, 20:24] = 9  # 16 px: below 20
    lab[0, 20:25, 14:18] = 300  # 20 px: kept (not below)
    lab[2, 14:16, 2:6] = 7  # a second, small piece of 7 in slice 2: the slice area counts (108 px)
    _, inst = prepare_target(lab, min_area=20, smooth="none")
    assert set(np.unique(inst)) == {0, 7, 300}
    assert not (inst == 9).any()
    np.testing.assert_array_equal(inst[2, 14:16, 2:6], 7)
    _, inst = prepare_target(lab, min_area=20, smooth="none", min_volume=50)
    assert set(np.unique(inst)) == {0, 7}


def test_smoothing_removes_spurs_and_pixel_noise():
    lab = np.zeros((1, 30, 30), np.uint32)
    lab[0, 8:20, 8:20] = 4
    lab[0, 13, 20:27] = 4  # a one-pixel spur
    lab[0, 3, 3] = 4  # an isolated pixel of the same label
    for smooth in ("majority", "opening"):
        _, inst = prepare_target(lab, min_area=0, smooth=smooth)
        assert not inst[0, 13, 21:27].any() and inst[0, 3, 3] == 0, smooth
        assert (inst[0, 9:19, 9:19] == 4).all(), smooth


def test_edges_separate_touching_nuclei(rng):
    """6-connected components of the nucleus class never merge instances; every instance keeps a core."""
    lab = blobs(rng, shape=(6, 64, 64), n=30, distance=6, noise=0)
    sem, inst = prepare_target(lab, min_area=0, smooth="none")
    assert np.count_nonzero(np.unique(inst)) == 30
    touching = inst[:, :, 1:] != inst[:, :, :-1]
    assert (touching & (inst[:, :, 1:] > 0) & (inst[:, :, :-1] > 0)).any(), "test data should have touching nuclei"
    cores = cc3d.connected_components(sem == 2, connectivity=6)
    pairs = np.unique(np.stack([cores[sem == 2], inst[sem == 2]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1], "a nucleus component spans two instances"
    # every instance keeps a nucleus core, and nucleus + edge is exactly the instance mask (inner edges)
    assert set(np.unique(pairs[1])) == set(np.unique(inst)) - {0}
    assert ((sem > 0) == (inst > 0)).all()
    # per-slice edges only (edge_z="none", the thesis): nuclei stacked in z merge in 3D
    sem2d, _ = prepare_target(lab, min_area=0, smooth="none", edge_z="none")
    merged = cc3d.connected_components(sem2d == 2, connectivity=6)
    pairs2d = np.unique(np.stack([merged[sem2d == 2], inst[sem2d == 2]]), axis=1)
    assert len(np.unique(pairs2d[0])) < pairs2d.shape[1]


def test_outer_edges_lie_outside_instances():
    lab = np.zeros((1, 20, 30), np.uint32)
    lab[0, 5:15, 3:13] = 1
    lab[0, 5:15, 13:23] = 2  # touching 1
    sem, inst = prepare_target(lab, min_area=0, smooth="none", edge_mode="outer")
    assert (sem[0, 4, 3:23] == 1).all() and (sem[0, 5:15, 2] == 1).all()  # ring in the background
    assert (sem[0, 5:15, 12:14] == 1).all()  # the contact, on both sides
    assert (sem[0, 6:14, 4:11] == 2).all()
    assert ((sem == 2) <= (inst > 0)).all()


def test_class_balance_and_summary(rng):
    lab = blobs(rng)
    sem, inst = prepare_target(lab)
    bal = class_balance(sem)
    assert sum(bal.values()) == pytest.approx(1.0)
    assert bal["edge"] == pytest.approx(np.mean(sem == 1))
    info = summarize(lab, inst, sem)
    assert info["instances_in"] == 14 and info["instances_out"] <= 14
    assert info["class_balance"] == bal


def test_2d_input():
    lab = np.zeros((20, 20), np.uint8)
    lab[4:14, 4:14] = 2
    sem, inst = prepare_target(lab)
    assert sem.shape == (20, 20) and inst.shape == (20, 20)
    assert sem[9, 4] == 1 and sem[9, 9] == 2 and inst[9, 9] == 2


@pytest.mark.parametrize(
    "labels,match",
    [
        (np.ones((2, 4, 4), np.float32), "integer image"),
        (-np.ones((2, 4, 4), np.int16), "negative"),
        (np.ones((2, 2, 4, 4), np.uint8), "shape"),
    ],
)
def test_bad_labels(labels, match):
    with pytest.raises(InputError, match=match) as info:
        prepare_target(labels)
    assert "\n" not in str(info.value)


def test_bad_parameters():
    with pytest.raises(InputError, match="edge_width"):
        prepare_target(np.zeros((1, 4, 4), np.uint8), edge_width=0)
    with pytest.raises(InputError, match="smooth"):
        prepare_target(np.zeros((1, 4, 4), np.uint8), smooth="gauss")


def test_binary_masks_become_instances():
    mask = np.zeros((3, 10, 10), np.uint8)
    mask[0:2, 1:4, 1:4] = 255
    mask[2, 1:4, 1:4] = 255  # 6-connected to the first block through z
    mask[1, 6:9, 6:9] = 255
    mask[2, 5, 5] = 255  # touches the second block only diagonally: its own component at 6-connectivity
    inst, relabelled = as_instances(mask)
    assert relabelled and np.count_nonzero(np.unique(inst)) == 3
    inst26, _ = as_instances(mask, connectivity=26)
    assert np.count_nonzero(np.unique(inst26)) == 2
    labels = np.zeros((1, 4, 4), np.uint16)
    labels[0, :2, :2], labels[0, 2:, 2:] = 5, 9
    same, relabelled = as_instances(labels)
    assert not relabelled and (same == labels).all()
    forced, relabelled = as_instances(labels, kind="binary")
    assert relabelled and set(np.unique(forced)) == {0, 1, 2}


def test_full_volume_takes_seconds(rng):
    """21x512x512 with 1,000 touching nuclei: seconds, not minutes (the thesis loop took minutes)."""
    import time

    shape = (21, 512, 512)
    seeds = np.zeros(shape, np.uint32)
    seeds[tuple(rng.integers(0, s, 1000) for s in shape)] = np.arange(1, 1001)
    lab = expand_labels(seeds, distance=6, spacing=(4, 1, 1)).astype(np.uint32)
    start = time.perf_counter()
    sem, inst = prepare_target(lab)
    elapsed = time.perf_counter() - start
    assert elapsed < 20, elapsed
    assert np.count_nonzero(np.unique(inst)) > 950

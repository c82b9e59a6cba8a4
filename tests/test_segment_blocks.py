"""Block-wise segmentation: labels merged across block faces equal whole-volume segmentation."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
from scipy import ndimage as ndi

from pipeline.segment.blocks import choose_block, overlapping_pairs, plan_blocks, segment_blocks
from pipeline.segment.instances import label_nuclei


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images are equal up to renumbering (one-to-one ids, same background)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def blobs(shape=(12, 90, 110), n=40, seed=0) -> np.ndarray:
    """Separate ellipsoidal blobs (some across any block face) as a float image."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for _ in range(n):
        c = rng.uniform([2, 6, 6], [shape[0] - 2, shape[1] - 6, shape[2] - 6])
        r = rng.uniform([1.5, 3, 3], [2.5, 5, 5])
        image[((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1] = 1
    return image


def components(image: np.ndarray) -> np.ndarray:
    return cc3d.connected_components((image > 0.5).astype(np.uint8), connectivity=6).astype(np.uint32)


def test_plan_blocks_tiles_the_volume():
    shape = (7, 50, 61)
    blocks = plan_blocks(shape, (4, 20, 25), (1, 5, 5))
    cover = np.zeros(shape, int)
    for b in blocks:
        cover[b.core] += 1
        assert all(o.start <= c.start and o.stop >= c.stop for o, c in zip(b.outer, b.core))
    assert (cover == 1).all() and len(blocks) == 2 * 3 * 3


def test_choose_block_fits_the_budget():
    core = choose_block((64, 2048, 2048), (1.0, 1.0, 1.0), (2, 16, 16), 16_000_000)
    assert core[0] == 64  # z is split last
    assert np.prod([min(c + 32, s) for c, s in zip(core[1:], (2048, 2048))]) * 64 <= 16_000_000
    assert choose_block((21, 512, 512), (1.0, 1.0, 1.0), (2, 16, 16), 16_000_000) == (21, 512, 512)


@pytest.mark.parametrize("block", [(12, 30, 40), (5, 45, 55), (12, 90, 110)])
def test_blocks_equal_whole_volume(block):
    image = blobs()
    whole = components(image)
    out = np.zeros(image.shape, np.uint32)
    n = segment_blocks(lambda outer: components(image[outer]), image.shape, plan_blocks(image.shape, block, (4, 12, 12)), out)
    assert n == int(whole.max()) and out.max() == n
    assert same_partition(whole, out)


def test_touching_nuclei_across_a_face_stay_apart():
    # two nuclei touching exactly on the block face x = 24 (their interiors apart: the
    # seeded watershed separates them); the one crossing the face at y = 30 is one nucleus
    shape = (9, 60, 48)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    truth = np.zeros(shape, np.uint32)
    truth[(((zz - 4) / 3.5) ** 2 + ((yy - 12) / 7) ** 2 + ((xx - 17) / 7) ** 2) <= 1] = 1
    truth[(((zz - 4) / 3.5) ** 2 + ((yy - 12) / 7) ** 2 + ((xx - 31) / 7) ** 2) <= 1] = 2
    truth[(((zz - 4) / 3.5) ** 2 + ((yy - 40) / 7) ** 2 + ((xx - 24) / 7) ** 2) <= 1] = 3
    semantic = np.where(truth > 0, 2, 0).astype(np.uint8)
    semantic[ndi.binary_dilation(truth > 0) & (truth == 0)] = 1
    semantic[(truth == 1) & ndi.binary_dilation(truth == 2)] = 1  # the contact is an edge
    semantic[(truth == 2) & ndi.binary_dilation(truth == 1)] = 1

    def seg(outer):
        return label_nuclei(semantic[outer], min_size=0, erode_xy=0)

    whole = seg(tuple(slice(0, s) for s in shape))
    out = np.zeros(shape, np.uint32)
    n = segment_blocks(seg, shape, plan_blocks(shape, (9, 30, 24), (0, 16, 16)), out)
    assert n == int(whole.max()) == 3
    assert same_partition(whole, out)


def test_overlapping_pairs_needs_iou():
    a = np.array([[1, 1, 1, 1, 0, 2, 2]])
    b = np.array([[5, 5, 5, 0, 0, 6, 0]])
    pairs = overlapping_pairs(a, b)
    assert pairs.tolist() == [[1, 5], [2, 6]]
    assert overlapping_pairs(a, b, min_iou=0.8).tolist() == []


def test_objects_measured_in_blocks_equal_whole_volume_measurement():
    """The per-nucleus table combined over y/x blocks equals one measurement of the whole volume."""
    from pipeline.measure import measure_regions
    from pipeline.segment.objects import measure_objects, object_columns

    rng = np.random.default_rng(0)
    labels = np.zeros((5, 40, 50), np.uint32)
    for i in range(1, 30):
        z, y, x = rng.integers(0, 5), rng.integers(0, 36), rng.integers(0, 46)
        labels[z : z + 2, y : y + 5, x : x + 5] = i
    image = rng.random((2, 5, 40, 50)).astype(np.float32)
    blocks = measure_objects(lambda i: labels[i], lambda i: image[(slice(None), *i)], labels.shape, ["A", "B"], voxel_size=(2, 1.5, 1.2), t=3, block_yx=(7, 9))
    whole = measure_regions(labels, image, channels=["a", "b"], voxel_size=(2, 1.5, 1.2))
    assert list(blocks.columns) == object_columns(["A", "B"]) and set(blocks.t) == {3}
    assert list(blocks.label) == list(whole.label) and len(blocks) == len(np.unique(labels)) - 1
    for column in blocks.columns.drop("t"):
        np.testing.assert_allclose(blocks[column], whole[column], rtol=1e-6, err_msg=column)
    empty = measure_objects(lambda i: np.zeros((5, 7, 9), np.uint32)[: 5], lambda i: image, (5, 7, 9), ["A"], voxel_size=(1, 1, 1))
    assert empty.empty and list(empty.columns) == object_columns(["A"])

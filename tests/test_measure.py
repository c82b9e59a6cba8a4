"""Vectorised region measurement: the same numbers as scikit-image, whatever the label ids."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops

from pipeline.cellcycle.background import background
from pipeline.measure import measure_regions, regions


def _blobs(rng, shape=(6, 40, 40), n=25):
    labels = np.zeros(shape, dtype=np.uint32)
    ids = rng.choice(np.arange(1, 10_000), size=n, replace=False)
    for i in ids:
        z, y, x = (rng.integers(0, s - 3) for s in shape)
        labels[z : z + rng.integers(1, 4), y : y + rng.integers(2, 7), x : x + rng.integers(2, 7)] = i
    image = rng.normal(100, 20, size=(2, *shape)).astype(np.float32) + labels.astype(bool) * rng.uniform(50, 500)
    return labels, image


def test_matches_regionprops(rng):
    labels, image = _blobs(rng)
    voxel = (2.0, 0.5, 0.25)
    table = measure_regions(labels, image, channels=["A", "b"], voxel_size=voxel)
    props = {p.label: p for p in regionprops(labels.astype(np.int64), intensity_image=np.moveaxis(image, 0, -1))}
    assert sorted(props) == table["label"].tolist()
    for row in table.itertuples():
        p = props[row.label]
        assert row.voxels == p.area
        assert row.volume == pytest.approx(p.area * 2.0 * 0.5 * 0.25)
        np.testing.assert_allclose([row.centroid_z, row.centroid_y, row.centroid_x], np.array(p.centroid) * voxel)
        assert (row.bbox_z0, row.bbox_y0, row.bbox_x0, row.bbox_z1, row.bbox_y1, row.bbox_x1) == tuple(p.bbox)
        assert row.a_mean == pytest.approx(p.intensity_mean[0], rel=1e-5)
        assert row.b_integrated == pytest.approx(image[1][labels == row.label].sum(), rel=1e-5)
        assert row.a_median == pytest.approx(np.median(image[0][labels == row.label]))


def test_label_ids_do_not_matter(rng):
    labels, image = _blobs(rng)
    ids = np.unique(labels)[1:]
    remap = np.zeros(labels.max() + 1, dtype=np.uint32)
    remap[ids] = rng.permutation(ids.size) + 1
    a = measure_regions(labels, image)
    b = measure_regions(remap[labels], image)
    a["label"] = remap[a["label"].to_numpy()]
    a = a.sort_values("label").reset_index(drop=True)
    np.testing.assert_allclose(a.to_numpy(dtype=float), b.to_numpy(dtype=float))


def test_planar_and_empty():
    labels = np.zeros((5, 6), dtype=np.uint16)
    labels[1:3, 1:4] = 4
    image = np.arange(60, dtype=np.float32).reshape(2, 5, 6)
    table = measure_regions(labels, image, voxel_size=(1.3, 0.5, 2.0))
    assert table["volume"].tolist() == [6 * 0.5 * 2.0] and table["centroid_z"].tolist() == [0.0]
    empty = measure_regions(np.zeros((2, 4, 4), np.uint8), np.zeros((1, 2, 4, 4)))
    assert len(empty) == 0 and "c0_mean" in empty
    with pytest.raises(ValueError, match="does not match"):
        measure_regions(np.zeros((2, 4, 4), np.uint8), np.zeros((1, 2, 4, 5)))


def test_background_recovers_offset(rng):
    """A constant background under and around nuclei is removed by both estimates."""
    labels = np.zeros((4, 30, 30), dtype=np.uint16)
    labels[1:3, 5:10, 5:10] = 1
    labels[1:3, 15:22, 12:20] = 2
    image = np.full((1, *labels.shape), 200.0, dtype=np.float32)
    image[0][labels == 1] += 1000
    image[0][labels == 2] += 300
    grp = regions(labels)
    for method in ("local", "slice"):
        bg = background(labels, image, method=method, voxel_size=(2.0, 1.0, 1.0), grouped=grp)
        np.testing.assert_allclose(bg[:, 0], 200.0)
        table = measure_regions(labels, image, background=bg, grouped=grp)
        np.testing.assert_allclose(table["c0_mean"], [1000, 300])
        np.testing.assert_allclose(table["c0_integrated"], [1000 * 50, 300 * 112])

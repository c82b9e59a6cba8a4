"""Images stored as integers plus one linear map per volume read back as the float32 values, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline.io.volumes import read_volume, write_normalized_volume
from pipeline.preprocess.normalize import normalize_range


@pytest.fixture
def stored(tmp_path, rng):
    field = Plate.create(str(tmp_path / "p.zarr")).add_field("B10")
    shape = (2, 2, 3, 40, 36)
    field.create_image("norm", shape, "uint16", ImageMeta(channels=("a", "b")), chunk_yx=(16, 16), normalized=True)
    data = rng.integers(0, 4000, shape, dtype=np.uint16)
    maps = {(t, c): (float(rng.integers(0, 200)), float(rng.integers(2000, 4000)), (t + c) % 2 == 1) for t in range(2) for c in range(2)}
    for (t, c), (low, high, clip) in maps.items():
        write_normalized_volume(field.plate.location, field.array_path("norm"), t, c, data[t, c], low, high, clip)
    expected = np.stack([np.stack([normalize_range(data[t, c], *maps[t, c][:2], clip=maps[t, c][2]) for c in range(2)]) for t in range(2)])
    return field, data, expected


def test_views_and_reads_give_the_float32_values(stored):
    field, data, expected = stored
    image = field.image("norm")
    assert image.dtype == np.float32 and image.shape == data.shape and image.chunks == field.stored_image("norm").chunks
    np.testing.assert_array_equal(image[:], expected)
    np.testing.assert_array_equal(image[...], expected)
    np.testing.assert_array_equal(image[1, 0], expected[1, 0])
    np.testing.assert_array_equal(image[:, 1, 2, 5:9], expected[:, 1, 2, 5:9])
    np.testing.assert_array_equal(np.asarray(image), expected)
    np.testing.assert_array_equal(read_volume(field.plate.location, field.array_path("norm"), 0, 1), expected[0, 1])
    assert expected[0, 1].max() <= 1.0 and expected[0, 0].max() > 1.0  # the clip flag is per volume
    np.testing.assert_array_equal(field.stored_image("norm")[:], data)  # what NGFF readers see
    assert field.done("norm").all()
    with pytest.raises(TypeError, match="only integers, slices"):
        image[[0, 1]]


def test_a_volume_without_its_map_is_an_error(tmp_path, rng):
    field = Plate.create(str(tmp_path / "p.zarr")).add_field("B10")
    field.create_image("norm", (1, 1, 2, 8, 8), "uint16", ImageMeta(channels=("a",)), normalized=True)
    field.stored_image("norm")[0, 0] = rng.integers(0, 99, (2, 8, 8), dtype=np.uint16)  # integers without their map
    with pytest.raises(StoreError, match="normalisation was never written"):
        field.image("norm")[0, 0]
    with pytest.raises(StoreError, match="normalisation was never written"):
        read_volume(field.plate.location, field.array_path("norm"), 0, 0)


def test_a_plain_image_is_not_taken_for_a_normalised_one(tmp_path):
    field = Plate.create(str(tmp_path / "p.zarr")).add_field("B10")
    field.create_image("plain", (1, 1, 2, 8, 8), "uint16", ImageMeta(channels=("a",)))
    with pytest.raises(StoreError, match="exists with shape"):
        field.create_image("plain", (1, 1, 2, 8, 8), "uint16", ImageMeta(channels=("a",)), normalized=True)
    assert field.image("plain").dtype == np.uint16

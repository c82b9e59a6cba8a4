"""write_volume / read_volume through hand-coded chunks: zarr agrees both ways; bad chunks are caught; other layouts fall back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import pipeline.io.chunks as chunks
from pipeline.io.chunks import blosc_of
from pipeline.io.volumes import read_volume, write_volume
from pipeline.errors import StoreError
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate


@pytest.fixture
def field(tmp_path):
    plate = Plate.create(str(tmp_path / "p.zarr"))
    field = plate.add_field("A1")
    return field


@pytest.mark.parametrize("dtype", ["uint16", "uint8", "float32"])
@pytest.mark.parametrize("level", [1, 5])
def test_zarr_reads_hand_encoded_chunks(field, rng, dtype, level, monkeypatch):
    monkeypatch.setattr(chunks, "_checked_once", False)
    shape = (2, 2, 3, 70, 45)  # y and x not multiples of the chunk: padded edge chunks
    field.create_image("raw", shape, dtype, ImageMeta(channels=("a", "b")), chunk_yx=(32, 20), compression_level=level)
    data = (rng.random(shape[2:]) * 200).astype(dtype)
    out = write_volume(field.plate.location, field.array_path(), 1, 0, data)
    assert out["nbytes"] == data.nbytes
    stored = zarr.open_array(field.plate.location.child(field.array_path()), mode="r")
    np.testing.assert_array_equal(stored[1, 0], data)
    assert not stored[0].any() and not stored[1, 1].any()
    assert field.done().tolist() == [[False, False], [True, False]]


def test_safe_casts_and_refusals(field, rng):
    field.create_image("raw", (1, 1, 2, 16, 16), "uint16", ImageMeta(channels=("a",)))
    write_volume(field.plate.location, field.array_path(), 0, 0, np.full((2, 16, 16), 7, np.uint8))
    assert field.image()[0, 0].max() == 7 and field.image().dtype == np.uint16
    with pytest.raises(StoreError, match="without loss"):
        write_volume(field.plate.location, field.array_path(), 0, 0, np.zeros((2, 16, 16), np.float32))
    with pytest.raises(StoreError, match="shape"):
        write_volume(field.plate.location, field.array_path(), 0, 0, np.zeros((2, 16, 15), np.uint16))


@pytest.mark.parametrize("where", ["local", "memory"])
def test_bad_read_back_is_caught_and_not_marked_done(tmp_path, rng, monkeypatch, where):
    url = str(tmp_path / "p.zarr") if where == "local" else f"memory://lossy-{tmp_path.name}"
    field = Plate.create(url).add_field("A1")
    field.create_image("raw", (1, 1, 2, 16, 16), "uint16", ImageMeta(channels=("a",)))
    if where == "local":  # a disk that silently drops the last byte of a chunk file
        original = chunks.ChunkIO.put
        monkeypatch.setattr(chunks.ChunkIO, "put", lambda self, key, data: original(self, key, data[:-1]))
    else:  # the same through the zarr store API
        store_type = type(zarr.open_array(field.plate.location.child(field.array_path()), mode="r").store_path.store)
        original_set = store_type.set

        async def lossy_set(self, key, value, *args, **kwargs):
            if "/c/" in key:
                value = value[: len(value) - 1]
            return await original_set(self, key, value, *args, **kwargs)

        monkeypatch.setattr(store_type, "set", lossy_set)
    with pytest.raises(StoreError, match="reads back differently"):
        write_volume(field.plate.location, field.array_path(), 0, 0, rng.integers(0, 99, (2, 16, 16), dtype=np.uint16))
    assert not field.done().any()


def test_memory_store_chunks_read_by_zarr(rng):
    field = Plate.create("memory://chunks-direct").add_field("A1")
    field.create_image("raw", (1, 1, 2, 40, 30), "uint16", ImageMeta(channels=("a",)), chunk_yx=(16, 16))
    data = rng.integers(0, 999, (2, 40, 30), dtype=np.uint16)
    write_volume(field.plate.location, field.array_path(), 0, 0, data)
    np.testing.assert_array_equal(field.image()[0, 0], data)
    assert field.done().all()


def test_other_layouts_fall_back_to_write_volume(tmp_path, rng):
    from pipeline.io.location import Location

    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    group.create_array("img/0", shape=(1, 1, 2, 8, 8), chunks=(1, 1, 2, 8, 8), dtype="uint16", fill_value=0)  # zarr's default zstd
    group.create_array("img/done", shape=(1, 1), chunks=(1, 1), dtype="uint8", fill_value=0)
    array = group["img/0"]
    assert blosc_of(array) is None
    data = rng.integers(0, 999, (2, 8, 8), dtype=np.uint16)
    out = write_volume(Location(str(tmp_path / "s.zarr")), "img/0", 0, 0, data)
    assert "mean" in out  # the result of write_volume
    np.testing.assert_array_equal(group["img/0"][0, 0], data)
    assert group["img/done"][0, 0] == 1


@pytest.mark.parametrize("url", ["local", "memory://chunks-read"])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_read_volume_decodes_chunks_as_zarr_does(tmp_path, rng, url, dtype, codec):
    url = str(tmp_path / "p.zarr") if url == "local" else f"{url}-{dtype}-{codec}"
    field = Plate.create(url).add_field("A1")
    shape = (2, 2, 3, 70, 45)  # padded edge chunks in y and x
    field.create_image("raw", shape, dtype, ImageMeta(channels=("a", "b")), chunk_yx=(32, 20), codec=codec)
    array = zarr.open_array(field.plate.location.child(field.array_path()), mode="r+")
    data = (rng.random(shape[2:]) * 900).astype(dtype)
    array[1, 0] = data  # written by zarr itself
    assert blosc_of(array) is not None
    got = read_volume(field.plate.location, field.array_path(), 1, 0)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(read_volume(field.plate.location, field.array_path(), 0, 1), array[0, 1])  # never written: fill value


def test_read_volume_names_a_corrupt_chunk(field, rng):
    field.create_image("raw", (1, 1, 2, 16, 16), "uint16", ImageMeta(channels=("a",)), chunk_yx=(8, 8))
    write_volume(field.plate.location, field.array_path(), 0, 0, rng.integers(0, 99, (2, 16, 16), dtype=np.uint16))
    root = field.plate.location.child(field.array_path())
    victim = next(p for p in sorted(Path(root).rglob("*")) if p.is_file() and "/c/" in p.as_posix())
    victim.write_bytes(victim.read_bytes()[:10])  # truncated
    with pytest.raises(StoreError, match=r"cannot be decoded.*corrupt or truncated"):
        read_volume(field.plate.location, field.array_path(), 0, 0)


def test_read_volume_other_layouts_through_zarr(tmp_path, rng):
    from pipeline.io.location import Location

    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    group.create_array("img/0", shape=(1, 1, 2, 8, 8), chunks=(1, 1, 2, 8, 8), dtype="uint16", fill_value=0)
    data = rng.integers(0, 999, (2, 8, 8), dtype=np.uint16)
    group["img/0"][0, 0] = data
    np.testing.assert_array_equal(read_volume(Location(str(tmp_path / "s.zarr")), "img/0", 0, 0), data)

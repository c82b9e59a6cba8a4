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
    with pytest.raises(StoreError, match=r"volume t=0 c=1 is damaged: chunk .* is missing"):
        read_volume(field.plate.location, field.array_path(), 0, 1)  # writers write every chunk: missing is damage
    never = chunks.get_volume_chunks(array, 0, 1, missing="fill")  # unless the caller says it may not be written yet
    np.testing.assert_array_equal(never, array[0, 1])


def test_read_volume_names_a_corrupt_chunk(field, rng):
    field.create_image("raw", (1, 1, 2, 16, 16), "uint16", ImageMeta(channels=("a",)), chunk_yx=(8, 8))
    write_volume(field.plate.location, field.array_path(), 0, 0, rng.integers(0, 99, (2, 16, 16), dtype=np.uint16))
    root = field.plate.location.child(field.array_path())
    victim = next(p for p in sorted(Path(root).rglob("*")) if p.is_file() and "/c/" in p.as_posix())
    victim.write_bytes(victim.read_bytes()[:10])  # truncated
    with pytest.raises(StoreError, match=r"volume t=0 c=0 is damaged: chunk .* fails its checksum.*spheroid verify"):
        read_volume(field.plate.location, field.array_path(), 0, 0)


@pytest.mark.parametrize("where", ["local", "memory"])
@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_damaged_chunks_of_a_finished_volume_are_caught_on_read(tmp_path, rng, where, damage):
    """A flipped byte inside a chunk (the checksum) and a chunk gone missing (not the fill value)."""
    url = str(tmp_path / "p.zarr") if where == "local" else f"memory://damaged-{damage}-{tmp_path.name}"
    field = Plate.create(url).add_field("A1")
    field.create_image("raw", (1, 2, 3, 40, 40), "uint16", ImageMeta(channels=("a", "b")), chunk_yx=(16, 16))
    data = rng.integers(0, 999, (3, 40, 40), dtype=np.uint16)
    location, path = field.plate.location, field.array_path()
    write_volume(location, path, 0, 1, data)
    array = location.open_array(path, mode="r+")
    io = chunks.ChunkIO(array)
    key = io.key((0, 1, 0, 1, 2))
    raw = io.get(key)
    if damage == "flip":  # inside the compressed payload, where Blosc itself does not notice
        flipped = bytearray(raw)
        flipped[len(raw) // 2] ^= 0x01
        io.put(key, bytes(flipped))
        problem = "fails its checksum"
    else:
        if where == "local":
            Path(io.root, key).unlink()
        else:
            from zarr.core.sync import sync

            sync(io.store.delete(key))
        problem = "is missing"
    with pytest.raises(StoreError, match=rf"volume t=0 c=1 is damaged: chunk .*{problem}"):
        read_volume(location, path, 0, 1)
    with pytest.raises(StoreError, match=problem):
        chunks.check_volume_chunks(array, 0, 1, where=location.child(path))
    if damage == "flip":  # zarr's own codec pipeline refuses the chunk too
        with pytest.raises(ValueError, match="checksum"):
            zarr.open_array(location.child(path), mode="r", storage_options=None)[0, 1]


def test_checksummed_chunks_are_zarrs_crc32c_layout(field, rng):
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec

    field.create_image("raw", (1, 1, 2, 16, 16), "uint16", ImageMeta(channels=("a",)))
    array = field.plate.location.open_array(field.array_path(), mode="r+")
    assert [type(c) for c in array.metadata.codecs] == [BytesCodec, BloscCodec, Crc32cCodec]
    data = rng.integers(0, 999, (2, 16, 16), dtype=np.uint16)
    array[0, 0] = data  # encoded by zarr
    assert chunks.volume_codec(array).checksum
    np.testing.assert_array_equal(read_volume(field.plate.location, field.array_path(), 0, 0), data)


def test_missing_chunk_through_zarr_layouts(tmp_path, rng):
    from pipeline.io.location import Location

    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    group.create_array("img/0", shape=(1, 1, 2, 8, 8), chunks=(1, 1, 2, 4, 8), dtype="uint16", fill_value=0)  # zarr's zstd
    group["img/0"][0, 0] = rng.integers(1, 999, (2, 8, 8), dtype=np.uint16)
    (tmp_path / "s.zarr" / "img" / "0" / "c" / "0" / "0" / "0" / "1" / "0").unlink()
    with pytest.raises(StoreError, match=r"t=0 c=0 is damaged: 1 chunk\(s\) missing"):
        read_volume(Location(str(tmp_path / "s.zarr")), "img/0", 0, 0)


def test_read_volume_other_layouts_through_zarr(tmp_path, rng):
    from pipeline.io.location import Location

    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    group.create_array("img/0", shape=(1, 1, 2, 8, 8), chunks=(1, 1, 2, 8, 8), dtype="uint16", fill_value=0)
    data = rng.integers(0, 999, (2, 8, 8), dtype=np.uint16)
    group["img/0"][0, 0] = data
    np.testing.assert_array_equal(read_volume(Location(str(tmp_path / "s.zarr")), "img/0", 0, 0), data)


def test_done_flags_and_normalization_rows_written_as_chunks_read_back_by_zarr(field, rng):
    from pipeline.io.volumes import write_normalized_volume

    shape = (3, 2, 2, 16, 16)
    field.create_image("pre", shape, "uint16", ImageMeta(channels=("a", "b")), normalized=True)
    location, path = field.plate.location, field.array_path("pre")
    group = zarr.open_group(location.child(path.rsplit("/", 1)[0]), mode="r")
    assert chunks.put_chunk(group["done"], (0, 0), 1)  # uncompressed, one entry a chunk: written directly
    data = rng.integers(0, 1000, shape[2:], dtype=np.uint16)
    write_normalized_volume(location, path, 2, 1, data, 10.0, 900.0, True)
    assert group["done"][:].tolist() == [[1, 0], [0, 0], [0, 1]]
    norm = group["normalization"][:]
    assert norm[2, 1].tolist() == [10.0, 900.0, 1.0] and np.isnan(norm[0, 0]).all()
    np.testing.assert_array_equal(read_volume(location, path, 2, 1), np.clip((data - 10.0) / 890.0, 0, 1).astype(np.float32))
    assert not chunks.put_chunk(zarr.open_array(location.child(path), mode="r+"), (0, 0, 0, 0, 0), 1)  # Blosc: not this path
    assert not chunks.put_chunk(group["normalization"], (0, 0, 0), [1.0, 2.0])  # not a whole chunk
    with pytest.raises(IndexError, match="outside"):
        chunks.put_chunk(group["done"], (3, 0), 1)


def test_opened_nodes_are_reused_only_while_their_metadata_is_unchanged(tmp_path):
    from pipeline.io.location import Location

    location = Location(str(tmp_path / "s.zarr"))
    root = zarr.open_group(location.url, mode="w")
    root.create_array("a", shape=(2, 3), chunks=(1, 3), dtype="uint8")
    first = location.open_array("a", mode="r+")
    assert location.open_array("a", mode="r+") is first  # same zarr.json: the same object
    assert location.open_array("a") is not first  # another mode: opened on its own
    root.create_array("a", shape=(3, 2), chunks=(1, 2), dtype="uint8", overwrite=True)  # same JSON length
    assert location.open_array("a", mode="r+").shape == (3, 2)
    group = location.open_group()
    zarr.open_group(location.url, mode="r+").attrs["x"] = 1  # attributes changed by someone else
    assert location.open_group().attrs["x"] == 1 and location.open_group() is not group
    memory = Location("memory://cache-test")
    zarr.open_group(memory.url, mode="w").create_array("b", shape=(1,), dtype="uint8")
    assert memory.open_array("b") is not memory.open_array("b")  # only local stores are kept
    with pytest.raises(StoreError, match="no such array"):
        location.open_array("missing")


def test_opened_nodes_of_a_relative_store_follow_the_working_directory(tmp_path, monkeypatch):
    from pipeline.io.location import Location

    for name in ("one", "two"):  # two stores whose metadata are byte for byte the same
        (tmp_path / name).mkdir()
        zarr.open_group(str(tmp_path / name / "s.zarr"), mode="w").create_array("a", shape=(2,), dtype="uint8", fill_value=0)
    location = Location("s.zarr")
    monkeypatch.chdir(tmp_path / "one")
    location.open_array("a", mode="r+")[:] = 1
    monkeypatch.chdir(tmp_path / "two")
    location.open_array("a", mode="r+")[:] = 2
    assert zarr.open_array(str(tmp_path / "one" / "s.zarr" / "a"))[:].tolist() == [1, 1]
    assert zarr.open_array(str(tmp_path / "two" / "s.zarr" / "a"))[:].tolist() == [2, 2]


@pytest.mark.parametrize(
    "shape,chunk,dtype",
    [((7, 3), (1, 1), "uint8"), ((4, 2, 3), (1, 1, 3), "float64"), ((5, 3), (2, 2), "int32"), ((6,), (4,), "bool")],
)
def test_records_read_chunk_by_chunk_as_zarr_reads_them(tmp_path, rng, shape, chunk, dtype):
    """Small uncompressed arrays (done flags, normalization rows) read from their chunk files, edge
    chunks and chunks never written (fill value) included."""
    arr = zarr.create_array(str(tmp_path / "r.zarr"), shape=shape, chunks=chunk, dtype=dtype, compressors=None, fill_value=False if dtype == "bool" else 3)
    arr[...] = (rng.random(shape) * 100 + 1).astype(dtype)
    first = tuple(slice(0, k) for k in chunk)
    (tmp_path / "r.zarr" / "c" / "/".join("0" * len(shape))).unlink()  # as if never written
    expected = arr[...]
    assert (expected[first] == arr.fill_value).all()
    got = chunks.get_records(arr)
    assert got.dtype == arr.dtype and got.shape == arr.shape
    np.testing.assert_array_equal(got, expected)


def test_records_refuse_truncated_chunks_and_other_layouts(tmp_path):
    arr = zarr.create_array(str(tmp_path / "r.zarr"), shape=(3, 2), chunks=(1, 1), dtype="float32", compressors=None, fill_value=0)
    arr[...] = 1
    (tmp_path / "r.zarr" / "c" / "2" / "1").write_bytes(b"\0\0")
    with pytest.raises(StoreError, match=r"here: chunk c/2/1 holds 2 bytes, not 4"):
        chunks.get_records(arr, where="here")
    packed = zarr.create_array(str(tmp_path / "z.zarr"), shape=(3, 2), chunks=(1, 1), dtype="float32", fill_value=0)  # compressed
    assert chunks.get_records(packed) is None
    remote = zarr.create_array(zarr.storage.MemoryStore(), shape=(3, 2), chunks=(1, 1), dtype="float32", compressors=None, fill_value=0)
    assert chunks.get_records(remote) is None


def test_chunk_files_are_put_in_new_folders_atomically(tmp_path):
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=(2, 2), chunks=(1, 1), dtype="uint8", compressors=None, fill_value=0)
    assert chunks.put_chunk(arr, (1, 0), [7])
    folder = tmp_path / "a.zarr" / "c" / "1"
    assert [p.name for p in folder.iterdir()] == ["0"]  # no partial file left
    import shutil

    shutil.rmtree(tmp_path / "a.zarr" / "c")  # a folder that went away (a store replaced meanwhile)
    assert chunks.put_chunk(arr, (1, 1), [9])
    assert arr[...].tolist() == [[0, 0], [0, 9]]


def test_normalization_map_is_in_place_before_the_volume_is_marked_done(field, rng, monkeypatch):
    """A reader trusts a done volume's map: it must be written before the done flag."""
    import pipeline.io.volumes as volumes

    shape = (2, 1, 2, 16, 16)
    field.create_image("pre", shape, "uint16", ImageMeta(channels=("a",)), normalized=True)
    location, path = field.plate.location, field.array_path("pre")
    seen = []
    original = volumes.mark_done

    def spy(loc, array_path, t, c):
        norm = zarr.open_array(location.child(path.rsplit("/", 1)[0] + "/normalization"), mode="r")[t, c]
        seen.append(norm.tolist())
        return original(loc, array_path, t, c)

    monkeypatch.setattr(volumes, "mark_done", spy)
    volumes.write_normalized_volume(location, path, 1, 0, rng.integers(0, 900, shape[2:], dtype=np.uint16), 5.0, 800.0, False)
    assert seen == [[5.0, 800.0, 0.0]]
    assert field.done("pre").tolist() == [[False], [True]]

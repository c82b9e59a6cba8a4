"""The OME-Zarr plate store: layout, metadata read by ome-zarr-py, completion markers."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipeline.errors import StoreError
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate, parse_well
from pipeline.io.volumes import write_volume


def _fill(plate: Plate, well: str, shape=(2, 3, 4, 40, 48), seed=0):
    rng = np.random.default_rng(seed)
    field = plate.add_field(well, 0)
    field.create_image("raw", shape, "uint16", ImageMeta(), chunk_yx=(16, 32))
    data = rng.integers(0, 65535, size=shape, dtype=np.uint16)
    for t in range(shape[0]):
        for c in range(shape[1]):
            write_volume(plate.location, field.array_path(), t, c, data[t, c])
    field.mark_complete()
    return field, data


@pytest.mark.parametrize("url", ["local", "memory"])
def test_roundtrip_and_layout(tmp_path, url):
    target = str(tmp_path / "p.zarr") if url == "local" else f"memory://roundtrip-{tmp_path.name}"
    plate = Plate.create(target, name="exp")
    field, data = _fill(plate, "B10")
    again = Plate.open(target)
    assert [str(f) for f in again.fields()] == ["B10/0"]
    arr = again.field("B10").image()
    assert arr.shape == data.shape and arr.dtype == np.uint16
    assert arr.chunks == (1, 1, 4, 16, 32)
    np.testing.assert_array_equal(arr[:], data)
    meta = again.field("B10").meta()
    assert meta.channels == ("Hoechst", "Cy3", "GFP")
    assert meta.voxel_size == (5.0, 1.24, 1.24)
    assert meta.time_step == 1800.0
    codec, checksum = arr.metadata.codecs[-2:]
    assert codec.cname.value == "zstd" and type(checksum).__name__ == "Crc32cCodec"
    assert again.field("B10").is_complete()


def test_ome_zarr_py_reads_plate_and_field(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    plate = Plate.create(str(tmp_path / "p.zarr"), name="exp")
    _fill(plate, "B10", seed=1)
    _, data = _fill(plate, "C2", seed=2)
    plate.field("C2").create_labels("nuclei", (2, 1, 4, 40, 48), ImageMeta(channels=("nuclei",)))
    nodes = list(Reader(parse_url(str(tmp_path / "p.zarr")))())
    assert nodes and nodes[0].data[0].shape[:3] == (2, 3, 4)
    field_nodes = list(Reader(parse_url(str(tmp_path / "p.zarr" / "C" / "2" / "0")))())
    image = field_nodes[0]
    np.testing.assert_array_equal(np.asarray(image.data[0]), data)
    assert image.metadata["channel_names"] == ["Hoechst", "Cy3", "GFP"]
    assert [a["name"] for a in image.metadata["axes"]] == ["t", "c", "z", "y", "x"]
    assert any("labels/nuclei" in str(n.zarr) for n in field_nodes)


def test_ngff_models_validate(tmp_path):
    from ome_zarr_models.v05 import HCS, Image

    plate = Plate.create(str(tmp_path / "p.zarr"), name="exp")
    _fill(plate, "B10")
    from ome_zarr_models.v05.labels import Labels

    plate = Plate.open(str(tmp_path / "p.zarr"), mode="r+")
    plate.field("B10").create_labels("nuclei", (2, 1, 4, 40, 48), ImageMeta(channels=("nuclei",)), attrs={"stage": "test"})
    hcs = HCS.from_zarr(zarr.open_group(str(tmp_path / "p.zarr"), mode="r"))
    assert hcs.attributes.ome.plate.wells[0].path == "B/10"
    Image.from_zarr(zarr.open_group(str(tmp_path / "p.zarr" / "B" / "10" / "0"), mode="r"))
    Labels.from_zarr(zarr.open_group(str(tmp_path / "p.zarr" / "B" / "10" / "0" / "labels"), mode="r"))
    label_attrs = zarr.open_group(str(tmp_path / "p.zarr" / "B" / "10" / "0" / "labels" / "nuclei"), mode="r").attrs
    assert "image-label" in label_attrs["ome"] and label_attrs["spheroid"]["stage"] == "test"
    assert label_attrs["ome"]["image-label"]["source"] == {"image": "../../"}  # readers find the image it labels


def test_existing_store_not_overwritten(tmp_path):
    Plate.create(str(tmp_path / "p.zarr"))
    with pytest.raises(StoreError, match="--overwrite"):
        Plate.create(str(tmp_path / "p.zarr"))
    Plate.create(str(tmp_path / "p.zarr"), overwrite=True)


def test_incomplete_image_not_marked(tmp_path):
    plate = Plate.create(str(tmp_path / "p.zarr"))
    field = plate.add_field("A1")
    field.create_image("raw", (2, 1, 2, 8, 8), "uint16", ImageMeta(channels=("Hoechst",)))
    write_volume(plate.location, field.array_path(), 0, 0, np.ones((2, 8, 8), np.uint16))
    assert field.done().tolist() == [[True], [False]]
    with pytest.raises(StoreError, match="not written"):
        field.mark_complete()
    assert not field.is_complete()


def test_resume_keeps_matching_image_and_rejects_other(tmp_path):
    plate = Plate.create(str(tmp_path / "p.zarr"))
    field = plate.add_field("A1")
    meta = ImageMeta(channels=("Hoechst",))
    field.create_image("raw", (2, 1, 2, 8, 8), "uint16", meta)
    write_volume(plate.location, field.array_path(), 0, 0, np.ones((2, 8, 8), np.uint16))
    field.create_image("raw", (2, 1, 2, 8, 8), "uint16", meta)  # resume: kept
    assert field.done()[0, 0]
    with pytest.raises(StoreError, match="exists with shape"):
        field.create_image("raw", (3, 1, 2, 8, 8), "uint16", meta)


def test_write_volume_rejects_lossy_cast(tmp_path):
    plate = Plate.create(str(tmp_path / "p.zarr"))
    field = plate.add_field("A1")
    field.create_image("raw", (1, 1, 2, 8, 8), "uint8", ImageMeta(channels=("Hoechst",)))
    with pytest.raises(StoreError, match="without loss"):
        write_volume(plate.location, field.array_path(), 0, 0, np.ones((2, 8, 8), np.uint16))
    with pytest.raises(StoreError, match="shape"):
        write_volume(plate.location, field.array_path(), 0, 0, np.ones((2, 8, 9), np.uint8))


@pytest.mark.parametrize("name,expected", [("B10", ("B", "10")), ("b010", ("B", "10")), ("C/3", ("C", "3")), ("H_12", ("H", "12"))])
def test_parse_well(name, expected):
    assert parse_well(name) == expected


def test_parse_well_rejects_garbage():
    with pytest.raises(StoreError, match="row letter"):
        parse_well("well-ten")


def test_open_missing_store(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        Plate.open(str(tmp_path / "nope.zarr"))


@pytest.mark.parametrize("url", ["local", "memory"])
def test_tables_round_trip(tmp_path, url):
    import pandas as pd

    from pipeline.io.tables import list_tables, read_table, write_table

    target = str(tmp_path / "p.zarr") if url == "local" else f"memory://tables-{tmp_path.name}"
    plate = Plate.create(target)
    field, _ = _fill(plate, "B10")
    table = pd.DataFrame({"t": [0, 0, 1], "label": [1, 2, 1], "phase": ["G1", "S/G2/M", "G1"]})
    url_written = write_table(field, "nuclei", table)
    assert url_written.endswith("B/10/0/tables/nuclei.parquet")
    pd.testing.assert_frame_equal(read_table(Plate.open(target).field("B10"), "nuclei"), table)
    assert list_tables(field) == ["nuclei"]
    with pytest.raises(StoreError, match="no such table"):
        read_table(field, "tracks")


def test_worker_tuning_applies_each_setting(dask_client):
    import cv2

    from pipeline import workers

    dask_client.run(workers.tune_worker, codec_threads=1)
    dask_client.run(workers.tune_worker, codec_threads=1, opencv_threads=1)
    assert set(dask_client.run(cv2.getNumThreads).values()) == {1}
    assert all(dask_client.run(lambda: workers._state["libc"] is not None).values())
    workers.tune_worker(opencv_threads=1)  # the client's own process is left alone
    assert workers._state["opencv_threads"] is None


def _churn_and_release(mb: int) -> tuple[bool, bool, int, int]:
    """In a worker: free ``mb`` MiB of heap scratch, then release with a bound above and below it."""
    import numpy as np

    from pipeline import workers

    workers.tune_worker(codec_threads=1)
    blocks = [np.ones(2**20, np.uint8) for _ in range(mb)]  # 1 MiB each: from the heap, not mmap
    pin = np.ones(2**16, np.uint8)  # above them: the freed blocks are not at the heap's top, so not trimmed on free
    del blocks
    free = workers.free_heap() or 0
    kept = workers.release_memory(above=free + 1)
    after_kept = workers.free_heap() or 0
    trimmed = workers.release_memory(above=free // 2)
    del pin
    return kept, trimmed, free, after_kept


def test_worker_memory_is_released_only_above_the_bound(dask_client):
    from pipeline import workers

    assert workers.RELEASE_ABOVE == 256 * 2**20
    for kept, trimmed, free, after_kept in dask_client.run(_churn_and_release, 64).values():
        assert free >= 32 * 2**20 and after_kept == free  # under the bound: kept for the next task
        assert kept is False and trimmed is True
    assert workers.release_memory(above=0) is False  # the client's own process is left alone

"""``convert``: files and folders -> plate store; metadata, dtypes, resume, store rules, remote stores."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import tifffile

from pipeline.config.cluster import ClusterConfig
from pipeline.config.convert import ConvertConfig
from pipeline.convert.plan import plan_inputs
from pipeline.convert.run import convert
from pipeline.convert.scale import rescale_to_uint8
from pipeline.errors import InputError, StoreError
from pipeline.io.plate import Plate

from test_readers_pattern import write_folder

THREADS = ClusterConfig(n_workers=2, processes=False)


def cfg(**kw) -> ConvertConfig:
    return ConvertConfig(cluster=THREADS, **kw)


def write_ome(path, data, axes="TCZYX", **meta):
    tifffile.imwrite(path, data, metadata={"axes": axes, **meta}, compression="zlib")


def test_folder_to_plate(tmp_path, rng, dask_client):
    data = write_folder(tmp_path / "raw", rng, wells=("B10", "C3"), times=3)
    out = str(tmp_path / "exp.zarr")
    summary = convert([tmp_path / "raw"], out, cfg(), client=dask_client, progress=False)
    assert summary["written"] == 18 and summary["skipped"] == 0
    plate = Plate.open(out)
    assert [str(f) for f in plate.fields()] == ["B10/0", "C3/0"]
    field = plate.field("C3")
    image = field.image()
    assert image.dtype == np.uint16 and image.shape == (3, 3, 3, 16, 12)
    np.testing.assert_array_equal(image[:], data["C3"])
    assert field.is_complete()
    meta = field.meta()
    assert meta.channels == ("Hoechst", "Cy3", "GFP")
    assert meta.voxel_size == pytest.approx((5.0, 1.24, 1.24)) and meta.time_step == 1800.0
    record = plate.records()["convert"]
    assert record["written"] == 18 and len(record["inputs"]) == 2 and record["config"]["chunk_yx"] == [256, 256]
    # viewers open each channel with a window from the data (0.5-99.5 percentiles), not 0-65535
    windows = [ch["window"] for ch in plate.group["C/3/0"].attrs["ome"]["omero"]["channels"]]
    for c, window in enumerate(windows):
        per_volume = [np.percentile(data["C3"][t, c][:, ::4, ::4], (0.5, 99.5)) for t in range(3)]
        assert (window["start"], window["end"]) == pytest.approx(tuple(np.median(per_volume, axis=0)))
        assert window["min"] == 0 and window["max"] == 65535


@pytest.mark.parametrize("axes", ["TZCYX", "CZYX", "ZYX"])
def test_ome_axis_orders_and_well_from_name(tmp_path, rng, axes, dask_client):
    full = rng.integers(0, 65535, size=(2, 3, 4, 20, 16), dtype=np.uint16)
    keep = [a for a in "TCZYX" if a in axes]
    index = tuple(slice(None) if a in axes else 0 for a in "TCZYX")
    write_ome(tmp_path / "D4.ome.tif", np.transpose(full[index], [keep.index(a) for a in axes]), axes=axes, PhysicalSizeZ=2.0, PhysicalSizeY=0.5, PhysicalSizeX=0.5)
    out = str(tmp_path / "o.zarr")
    convert([tmp_path / "D4.ome.tif"], out, cfg(), client=dask_client, progress=False)
    field = Plate.open(out).field("D4")
    expected = full[tuple(slice(None) if a in axes else slice(0, 1) for a in "TCZYX")]
    np.testing.assert_array_equal(field.image()[:], expected)
    assert field.meta().voxel_size == (2.0, 0.5, 0.5)


def test_metadata_from_file_wins_and_options_fill_gaps(tmp_path, rng, caplog):
    data = rng.integers(0, 65535, size=(2, 2, 3, 8, 8), dtype=np.uint16)
    write_ome(tmp_path / "A1.ome.tif", data, PhysicalSizeX=0.7, PhysicalSizeY=0.7, TimeIncrement=60, Channel={"Name": ["Hoechst", "GFP"]})
    with caplog.at_level(logging.WARNING):
        (plan,) = plan_inputs([tmp_path / "A1.ome.tif"], cfg(voxel_size=(4.0, 9.0, 9.0), time_step=5.0))
    assert plan.meta.voxel_size == (4.0, 0.7, 0.7)  # z from the options, x/y from the file
    assert plan.meta.time_step == 60.0
    assert "time_step 5.0 from the options overrides nothing" in caplog.text
    assert "voxel_size" not in caplog.text
    # ImageJ files carry no channel names: they come from the options, in file order
    tifffile.imwrite(tmp_path / "B2.tif", data.transpose(0, 2, 1, 3, 4), imagej=True, metadata={"axes": "TZCYX"})
    (plan,) = plan_inputs([tmp_path / "B2.tif"], cfg(channels=["Cy3", "GFP"], voxel_size=(5, 1.24, 1.24), time_step=1800))
    assert plan.meta.channels == ("Cy3", "GFP") and plan.meta.voxel_size == (5.0, 1.24, 1.24) and plan.meta.time_step == 1800


def test_channels_option_reorders_named_channels(tmp_path, rng, dask_client):
    data = rng.integers(0, 65535, size=(2, 3, 2, 8, 8), dtype=np.uint16)
    write_ome(tmp_path / "A1.ome.tif", data, Channel={"Name": ["GFP", "Cyr", "Hoechst"]})
    out = str(tmp_path / "o.zarr")
    convert([tmp_path / "A1.ome.tif"], out, cfg(channels=["Hoechst", "Cy3", "GFP"]), client=dask_client, progress=False)
    field = Plate.open(out).field("A1")
    assert field.meta().channels == ("Hoechst", "Cy3", "GFP")
    np.testing.assert_array_equal(field.image()[:], data[:, [2, 1, 0]])
    with pytest.raises(InputError, match="unknown channel name"):
        plan_inputs([tmp_path / "A1.ome.tif"], cfg(channels=["Hoechst", "Cy3", "DAPI"], channel_map={}))


def test_wells_from_names_options_and_defaults(tmp_path, rng):
    data = rng.integers(0, 100, size=(1, 1, 2, 8, 8), dtype=np.uint16)
    for name in ("B10.ome.tif", "B10_second.ome.tif", "sample.ome.tif", "other.ome.tif"):
        write_ome(tmp_path / name, data)
    plans = plan_inputs([tmp_path / n for n in ("B10.ome.tif", "B10_second.ome.tif", "sample.ome.tif", "other.ome.tif")], cfg())
    assert [(p.well, p.index) for p in plans] == [("B10", 0), ("B10", 1), ("A1", 0), ("A2", 0)]
    plans = plan_inputs([tmp_path / "sample.ome.tif", tmp_path / "other.ome.tif"], cfg(well="H12"))
    assert [(p.well, p.index) for p in plans] == [("H12", 0), ("H12", 1)]


def test_sixteen_bit_kept_and_uint8_option(tmp_path, rng, dask_client):
    data = rng.integers(0, 65535, size=(1, 1, 2, 8, 8), dtype=np.uint16)
    data[0, 0, 0, 0, :3] = [0, 257, 65535]
    write_ome(tmp_path / "A1.ome.tif", data)
    out = str(tmp_path / "o.zarr")
    convert([tmp_path / "A1.ome.tif"], out, cfg(), client=dask_client, progress=False)
    assert Plate.open(out).field("A1").image().dtype == np.uint16
    out8 = str(tmp_path / "o8.zarr")
    convert([tmp_path / "A1.ome.tif"], out8, cfg(to_uint8=True), client=dask_client, progress=False)
    image = Plate.open(out8).field("A1").image()
    assert image.dtype == np.uint8
    assert image[0, 0, 0, 0, :3].tolist() == [0, 1, 255]
    np.testing.assert_array_equal(image[:], rescale_to_uint8(data, 0, 65535))
    assert np.abs(image[:].astype(int) - data.astype(float) / 257).max() <= 0.5 + 1e-6


def test_rescale_range_clips():
    out = rescale_to_uint8(np.array([[[0, 100, 200, 300]]], np.uint16), 100, 200)
    assert out.tolist() == [[[0, 0, 255, 255]]]


def test_resume_rewrites_only_missing_volumes(tmp_path, rng, dask_client):
    data = write_folder(tmp_path / "raw", rng, times=3)
    out = tmp_path / "exp.zarr"
    convert([tmp_path / "raw"], str(out), cfg(), client=dask_client, progress=False)
    field = Plate.open(str(out), mode="r+").field("B10")
    chunks = sorted(p for p in (out / "B" / "10" / "0" / "0" / "c").rglob("*") if p.is_file())
    for p in chunks:
        os.utime(p, ns=(1, 1))
    # simulate an interrupted run: volume (t=1, c=2) lost and not done, image not complete
    field.plate.group[f"{field.path}/done"][1, 2] = 0
    field.update_attrs("raw", complete=False)
    field.image()[1, 2] = 0
    assert not Plate.open(str(out)).field("B10").is_complete()
    summary = convert([tmp_path / "raw"], str(out), cfg(), client=dask_client, progress=False)
    assert summary["written"] == 1 and summary["skipped"] == 8
    touched = {p.relative_to(out).parts[5:8] for p in chunks if p.stat().st_mtime_ns != 1}
    assert touched == {("1", "2", "0")}  # only chunks of t=1, c=2 were rewritten
    again = Plate.open(str(out)).field("B10")
    assert again.is_complete()
    np.testing.assert_array_equal(again.image()[:], data["B10"])


def test_existing_store_refused_unless_same_inputs_or_overwrite(tmp_path, rng, dask_client):
    write_folder(tmp_path / "raw", rng, times=2)
    write_folder(tmp_path / "other", rng, wells=("C1",), times=2)
    out = str(tmp_path / "exp.zarr")
    convert([tmp_path / "raw"], out, cfg(), client=dask_client, progress=False)
    with pytest.raises(StoreError, match="pass --overwrite"):
        convert([tmp_path / "other"], out, cfg(), client=dask_client, progress=False)
    with pytest.raises(StoreError, match="pass --overwrite"):
        convert([tmp_path / "raw"], out, cfg(compression_level=1), client=dask_client, progress=False)
    summary = convert([tmp_path / "other"], out, cfg(), overwrite=True, client=dask_client, progress=False)
    assert summary["written"] == 6
    assert [str(f) for f in Plate.open(out).fields()] == ["C1/0"]


def test_never_replaces_a_folder_that_is_not_a_store(tmp_path, rng):
    write_folder(tmp_path / "raw", rng, times=1)
    with pytest.raises(StoreError, match="not a zarr store"):
        convert([tmp_path / "raw"], str(tmp_path / "raw"), cfg(), overwrite=True, progress=False)
    assert len(list((tmp_path / "raw").iterdir())) == 3


def test_corrupt_file_leaves_image_incomplete(tmp_path, rng, dask_client):
    data = rng.integers(0, 65535, size=(3, 2, 4, 16, 16), dtype=np.uint16)
    path = tmp_path / "A1.ome.tif"
    write_ome(path, data)
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].pages[-1]
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[offset + 2 : offset + count] = bytes(count - 2)
    path.write_bytes(bytes(raw))
    out = str(tmp_path / "o.zarr")
    with pytest.raises(InputError, match=r"A1\.ome\.tif: cannot read time point 2"):
        convert([path], out, cfg(), client=dask_client, progress=False)
    field = Plate.open(out).field("A1")
    assert not field.is_complete() and not field.done()[2, 1]  # the volume with the bad page
    assert "convert" not in Plate.open(out).records()


def test_ome_zarr_py_reads_converted_store(tmp_path, rng, dask_client):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    data = write_folder(tmp_path / "raw", rng, times=2)
    out = tmp_path / "exp.zarr"
    convert([tmp_path / "raw"], str(out), cfg(), client=dask_client, progress=False)
    (image,) = [n for n in Reader(parse_url(str(out / "B" / "10" / "0")))() if n.data]
    np.testing.assert_array_equal(np.asarray(image.data[0]), data["B10"])
    assert image.metadata["channel_names"] == ["Hoechst", "Cy3", "GFP"]


def test_memory_store(tmp_path, rng):
    data = write_folder(tmp_path / "raw", rng, times=2)
    url = f"memory://convert-{tmp_path.name}"
    summary = convert([tmp_path / "raw"], url, cfg(), progress=False)  # a threads-only cluster
    assert summary["written"] == 6
    np.testing.assert_array_equal(Plate.open(url).field("B10").image()[:], data["B10"])


@pytest.mark.slow
def test_s3_round_trip(tmp_path, rng, dask_client):
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1").create_bucket(Bucket="spheroid-test")
        options = {"key": "x", "secret": "x", "client_kwargs": {"endpoint_url": endpoint}}
        data = write_folder(tmp_path / "raw", rng, times=2)
        url = "s3://spheroid-test/exp.zarr"
        summary = convert([tmp_path / "raw"], url, cfg(), storage_options=options, client=dask_client, progress=False)
        assert summary["written"] == 6
        again = convert([tmp_path / "raw"], url, cfg(), storage_options=options, progress=False)
        assert again["written"] == 0 and again["skipped"] == 6
        field = Plate.open(url, storage_options=options).field("B10")
        assert field.is_complete()
        np.testing.assert_array_equal(field.image()[:], data["B10"])
    finally:
        server.stop()


def test_file_changed_since_plan_is_named(tmp_path, rng):
    from pipeline.convert.run import _tasks_for
    from pipeline.convert.task import convert_timepoint
    from pipeline.io.location import Location

    write_folder(tmp_path / "raw", rng, times=2)
    plan = plan_inputs([tmp_path / "raw"], cfg())[0]
    (task,) = _tasks_for(plan, "B/10/0/0", np.array([[True] * 3, [False] * 3]), None)
    assert task.t == 1 and len(task.source.files) == 3
    victim = tmp_path / "raw" / "B10_T02_GFP.tif"
    victim.write_bytes(victim.read_bytes()[:-100])  # still being written, say
    with pytest.raises(InputError, match=r"B10_T02_GFP\.tif: file changed size since it was checked"):
        convert_timepoint(task, Location(str(tmp_path / "never.zarr")))
    assert not (tmp_path / "never.zarr").exists()

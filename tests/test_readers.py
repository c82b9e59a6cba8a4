"""TIFF readers: any T/C/Z order, metadata from OME and ImageJ, page-level reads, truncation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile

from pipeline.errors import InputError
from pipeline.io.readers import file_kind, open_file, strip_suffix
from pipeline.io.readers.metadata import ome_meta
from pipeline.io.readers.tiff import layout_from_axes, open_tiff

TCZYX = (3, 2, 4, 24, 20)


@pytest.fixture
def series(rng):
    return rng.integers(0, 65535, size=TCZYX, dtype=np.uint16)


def _to(data: np.ndarray, axes: str) -> np.ndarray:
    """TCZYX data reordered (and squeezed) to ``axes``."""
    keep = [a for a in "TCZYX" if a in axes]
    index = tuple(slice(None) if a in axes else 0 for a in "TCZYX")
    return np.transpose(data[index], [keep.index(a) for a in axes])


def _expect(data: np.ndarray, axes: str) -> np.ndarray:
    index = tuple(slice(None) if a in axes else slice(0, 1) for a in "TCZYX")
    return data[index]


@pytest.mark.parametrize("axes", ["TCZYX", "TZCYX", "ZTCYX", "CZYX", "ZCYX", "TZYX", "ZYX", "CYX", "YX"])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_ome_any_axis_order(tmp_path, series, axes, compression):
    path = tmp_path / "B10.ome.tif"
    tifffile.imwrite(path, _to(series, axes), metadata={"axes": axes, "PhysicalSizeZ": 5.0, "PhysicalSizeX": 1.24, "PhysicalSizeY": 1.24}, compression=compression)
    (src,) = open_file(path)
    expected = _expect(series, axes)
    assert src.shape == expected.shape and src.dtype == np.uint16
    for t in range(src.shape[0]):
        np.testing.assert_array_equal(src.read(t), expected[t])
    if src.shape[1] > 1:
        np.testing.assert_array_equal(src.read(src.shape[0] - 1, [1, 0]), expected[-1][[1, 0]])
    assert src.meta.voxel_size == (5.0, 1.24, 1.24)


def test_ome_metadata_units_and_names(tmp_path, series):
    path = tmp_path / "x.ome.tif"
    meta = {
        "axes": "TCZYX",
        "PhysicalSizeZ": 5000.0,
        "PhysicalSizeZUnit": "nm",
        "PhysicalSizeY": 1.24,
        "PhysicalSizeX": 0.00124,
        "PhysicalSizeXUnit": "mm",
        "TimeIncrement": 30,
        "TimeIncrementUnit": "min",
        "Channel": {"Name": ["Hoechst", "Cy3"]},
    }
    tifffile.imwrite(path, series, metadata=meta)
    (src,) = open_file(path)
    assert src.meta.channels == ("Hoechst", "Cy3")
    assert src.meta.voxel_size == pytest.approx((5.0, 1.24, 1.24))
    assert src.meta.time_step == pytest.approx(1800.0)


def test_ome_time_step_from_plane_delta_t():
    xml = (
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0"><Pixels ID="Pixels:0" '
        'DimensionOrder="XYZCT" Type="uint16" SizeX="4" SizeY="4" SizeZ="1" SizeC="1" SizeT="3">'
        '<Plane TheT="0" TheZ="0" TheC="0" DeltaT="0"/><Plane TheT="1" TheZ="0" TheC="0" DeltaT="1.5" DeltaTUnit="min"/>'
        '<Plane TheT="2" TheZ="0" TheC="0" DeltaT="180"/></Pixels></Image></OME>'
    )
    meta = ome_meta(xml, 0, (3, 1, 1, 4, 4), label="x")
    assert meta.time_step == pytest.approx(90.0)
    assert meta.voxel_size == (None, None, None) and meta.channels is None


def test_ome_several_images_are_several_sources(tmp_path, rng):
    path = tmp_path / "two.ome.tif"
    a = rng.integers(0, 100, (2, 3, 8, 8), dtype=np.uint16)
    b = rng.integers(0, 100, (2, 3, 8, 8), dtype=np.uint16)
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(a, metadata={"axes": "TZYX"})
        tif.write(b, metadata={"axes": "TZYX"})
    sources = open_file(path)
    assert [s.shape for s in sources] == [(2, 1, 3, 8, 8)] * 2
    np.testing.assert_array_equal(sources[1].read(1)[0], b[1])
    assert "series 1" in sources[1].label


def test_imagej_hyperstack(tmp_path, series):
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(
        path,
        _to(series, "TZCYX"),
        imagej=True,
        resolution=(1 / 1.243, 1 / 1.243),
        metadata={"axes": "TZCYX", "spacing": 5.0, "unit": "micron", "finterval": 30, "tunit": "min"},
    )
    (src,) = open_file(path)
    assert src.shape == TCZYX
    np.testing.assert_array_equal(src.read(2), series[2])
    assert src.meta.voxel_size == pytest.approx((5.0, 1.243, 1.243), rel=1e-5)
    assert src.meta.time_step == pytest.approx(1800.0)
    assert src.meta.channels is None


def test_imagej_without_unit_has_no_voxel_size(tmp_path, series):
    path = tmp_path / "nounit.tif"
    tifffile.imwrite(path, _to(series, "ZYX"), imagej=True, metadata={"axes": "ZYX"})
    (src,) = open_file(path)
    assert src.meta.voxel_size == (None, None, None) and src.meta.time_step is None


def test_plain_multipage_and_axes_override(tmp_path, series):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, series[:, 0].reshape(-1, *TCZYX[3:]), photometric="minisblack", metadata=None)  # 12 unnamed pages
    (src,) = open_file(path)
    assert src.shape == (1, 1, 12, 24, 20)  # an unnamed stack axis is taken as Z
    (src,) = open_tiff(path, axes="QYX".replace("Q", "Z"))
    assert src.shape == (1, 1, 12, 24, 20)
    with pytest.raises(InputError, match="'axes'"):
        open_tiff(path, axes="TZYX")


def test_rgb_samples_become_channels(tmp_path, rng):
    data = rng.integers(0, 255, (4, 16, 12, 3), dtype=np.uint8)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, data, photometric="rgb")
    (src,) = open_file(path)
    assert src.shape == (1, 3, 4, 16, 12)
    np.testing.assert_array_equal(src.read(0), np.moveaxis(data, -1, 0))
    np.testing.assert_array_equal(src.read(0, [2]), np.moveaxis(data, -1, 0)[[2]])


def test_layout_rejects_unplaceable_axes():
    with pytest.raises(InputError, match="'R'"):
        layout_from_axes("RZYX", (2, 3, 8, 8), "YX", label="f.tif")
    with pytest.raises(InputError, match="cannot tell"):
        layout_from_axes("QIEYX", (2, 2, 2, 8, 8), "YX", label="f.tif")
    assert layout_from_axes("RZYX", (1, 3, 8, 8), "YX", label="f.tif").shape == (1, 1, 3, 8, 8)


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("imagej", [False, True])
def test_truncated_file_found_in_header(tmp_path, series, compression, imagej):
    path = tmp_path / "cut.tif"
    if imagej:
        tifffile.imwrite(path, _to(series, "TZCYX"), imagej=True, metadata={"axes": "TZCYX"}, compression=compression)
    else:
        tifffile.imwrite(path, series, photometric="minisblack", metadata={"axes": "TCZYX"}, compression=compression)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(InputError, match="truncated") as info:
        open_file(path)
    assert str(info.value).startswith(str(path))


def test_corrupt_pixels_fail_at_read_with_file_name(tmp_path, series):
    path = tmp_path / "bad.ome.tif"
    tifffile.imwrite(path, series, metadata={"axes": "TCZYX"}, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].pages[-1]
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[offset + 2 : offset + count] = bytes(count - 2)
    path.write_bytes(bytes(raw))
    (src,) = open_file(path)  # the header is intact
    np.testing.assert_array_equal(src.read(0), series[0])
    with pytest.raises(InputError, match=r"bad\.ome\.tif.*time point 2"):
        src.read(2)


def test_sources_pickle_and_read_elsewhere(tmp_path, series):
    path = tmp_path / "p.ome.tif"
    tifffile.imwrite(path, series, metadata={"axes": "TCZYX"})
    (src,) = open_file(path)
    again = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(again.read(1), series[1])


def test_unreadable_and_unsupported_files(tmp_path):
    garbage = tmp_path / "junk.tif"
    garbage.write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(InputError, match="junk.tif: not a readable TIFF"):
        open_file(garbage)
    with pytest.raises(InputError, match="unsupported file type"):
        file_kind(tmp_path / "x.czi")
    with pytest.raises(InputError, match="no such file"):
        open_file(tmp_path / "missing.tif")


def test_strip_suffix():
    assert strip_suffix("/a/B10.ome.tif") == "B10"
    assert strip_suffix("C3.TIFF") == "C3"
    assert strip_suffix("run.nd2") == "run"

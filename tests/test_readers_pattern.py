"""Folders of per-well, per-time-point, per-channel stacks matched by a filename pattern."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile

from pipeline.errors import ConfigError, InputError
from pipeline.io.readers.pattern import compile_pattern, scan_pattern

MAP = {"Hoechst": "Hoechst", "Cyr": "Cy3", "Cy3": "Cy3", "GFP": "GFP"}
ZYX = (3, 16, 12)


def write_folder(folder, rng, wells=("B10",), times=3, tokens=("Hoechst", "Cyr", "GFP"), shape=ZYX, name="{well}_T{t:02d}_{c}.tif", first=1):
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for well in wells:
        arr = rng.integers(0, 65535, size=(times, len(tokens), *shape), dtype=np.uint16)
        data[well] = arr
        for t in range(times):
            for c, token in enumerate(tokens):
                tifffile.imwrite(
                    folder / name.format(well=well, t=t + first, c=token),
                    arr[t, c],
                    imagej=True,
                    resolution=(1 / 1.24, 1 / 1.24),
                    metadata={"axes": "ZYX"[-len(shape) :], "spacing": 5.0, "unit": "um", "finterval": 1800},
                )
    return data


def test_compile_pattern_fields_and_endings():
    rx = compile_pattern("{well}_T{t}_{channel}.tif")
    assert rx.fullmatch("B10_T01_Cyr.tif").group("well", "t", "channel") == ("B10", "01", "Cyr")
    assert rx.fullmatch("B10_T01_Cyr.TIFF") is not None
    assert rx.fullmatch("B10_T01_Cyr.tif.bak") is None
    rx = compile_pattern("exp*_{well}-t{t}-C{channel}.tif")
    assert rx.fullmatch("exp_2024_C3-t7-C2.tif").group("well", "t", "channel") == ("C3", "7", "2")


@pytest.mark.parametrize("bad,message", [("{well}_{t}.tif", "channel"), ("{well}_{zz}_{channel}.tif", "unknown field"), ("{t}{t}{channel}.tif", "twice"), ("raw/{channel}.tif", "file names only")])
def test_compile_pattern_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        compile_pattern(bad)


def test_scan_groups_wells_and_reads_timepoints(tmp_path, rng):
    data = write_folder(tmp_path / "raw", rng, wells=("B10", "C3"))
    (tmp_path / "raw" / "notes.txt").write_text("ignored")
    sources = scan_pattern(list((tmp_path / "raw").iterdir()), "{well}_T{t}_{channel}.tif", channel_map=MAP)
    assert [s.well for s in sources] == ["B10", "C3"]
    src = sources[1]
    assert src.shape == (3, 3, *ZYX) and src.dtype == np.uint16
    assert src.meta.channels == ("Hoechst", "Cy3", "GFP")
    assert src.meta.voxel_size == pytest.approx((5.0, 1.24, 1.24)) and src.meta.time_step == 1800
    np.testing.assert_array_equal(src.read(2), data["C3"][2])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(src)).read(0, [2]), data["C3"][0][[2]])


def test_channel_order_follows_channels_option(tmp_path, rng):
    data = write_folder(tmp_path / "raw", rng)
    (src,) = scan_pattern(list((tmp_path / "raw").iterdir()), "{well}_T{t}_{channel}.tif", channel_map=MAP, channels=["GFP", "Hoechst", "Cy3"])
    assert src.meta.channels == ("GFP", "Hoechst", "Cy3")
    np.testing.assert_array_equal(src.read(1), data["B10"][1][[2, 0, 1]])


def test_sections_and_t_from_zero(tmp_path, rng):
    data = write_folder(tmp_path / "raw", rng, times=2, tokens=("1", "2"), shape=(16, 12), name="{well}_t{t}_c{c}.tif", first=0)
    (src,) = scan_pattern(list((tmp_path / "raw").iterdir()), "{well}_t{t}_c{channel}.tif", channel_map={}, first_t=0)
    assert src.shape == (2, 2, 1, 16, 12) and src.meta.channels == ("1", "2")
    np.testing.assert_array_equal(src.read(1)[:, 0], data["B10"][1])


def test_unknown_token_names_the_file(tmp_path, rng):
    write_folder(tmp_path / "raw", rng, tokens=("Hoechst", "DAPI"))
    with pytest.raises(InputError, match=r"B10_T01_DAPI\.tif: unknown channel 'DAPI'"):
        scan_pattern(list((tmp_path / "raw").iterdir()), "{well}_T{t}_{channel}.tif", channel_map=MAP)


def test_missing_timepoint_is_named(tmp_path, rng):
    write_folder(tmp_path / "raw", rng, times=4)
    (tmp_path / "raw" / "B10_T03_GFP.tif").unlink()
    with pytest.raises(InputError, match=r"well B10: missing file\(s\) for t=3 GFP"):
        scan_pattern(list((tmp_path / "raw").iterdir()), "{well}_T{t}_{channel}.tif", channel_map=MAP)


def test_missing_channel_with_strict_channels(tmp_path, rng):
    write_folder(tmp_path / "raw", rng, tokens=("Hoechst", "Cyr"))
    with pytest.raises(InputError, match="no files for channel"):
        scan_pattern(list((tmp_path / "raw").iterdir()), "{well}_T{t}_{channel}.tif", channel_map=MAP, channels=["Hoechst", "Cy3", "GFP"])


def test_duplicate_channel_token(tmp_path, rng):
    write_folder(tmp_path / "raw", rng, tokens=("Cyr", "Cy3"))
    with pytest.raises(InputError, match="same well, time point and channel 'Cy3'"):
        scan_pattern(list((tmp_path / "raw").iterdir()), "{well}_T{t}_{channel}.tif", channel_map=MAP)


@pytest.mark.parametrize("change", ["shape", "dtype"])
def test_inconsistent_files(tmp_path, rng, change):
    write_folder(tmp_path / "raw", rng)
    bad = tmp_path / "raw" / "B10_T02_GFP.tif"
    data = np.zeros((4, 16, 12), np.uint16) if change == "shape" else np.zeros(ZYX, np.float32)
    tifffile.imwrite(bad, data, imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(InputError, match=r"B10_T02_GFP\.tif: .*differs from"):
        scan_pattern(list((tmp_path / "raw").iterdir()), "{well}_T{t}_{channel}.tif", channel_map=MAP)


def test_pattern_matching_nothing(tmp_path, rng):
    write_folder(tmp_path / "raw", rng, name="{well}-{t}-{c}.tif")
    with pytest.raises(InputError, match=r"raw: pattern .* matches no file; files there look like"):
        scan_pattern(list((tmp_path / "raw").iterdir()), "{well}_T{t}_{channel}.tif", channel_map=MAP, label=str(tmp_path / "raw"))


def test_for_timepoint_keeps_one_timepoints_files(tmp_path, rng):
    data = write_folder(tmp_path / "raw", rng, times=6)
    src = scan_pattern(list((tmp_path / "raw").iterdir()), "{well}_T{t}_{channel}.tif", channel_map=MAP)[0]
    part = src.for_timepoint(4)
    assert part.shape == src.shape and part.meta == src.meta
    assert [s.path for s in part.files] == [s.path for s in src.files if "_T05_" in s.path]
    np.testing.assert_array_equal(part.read(4, [2, 0]), data["B10"][4][[2, 0]])
    with pytest.raises(IndexError, match="no files for time point 1"):
        part.read(1)
    with pytest.raises(IndexError, match="outside"):
        src.for_timepoint(6)
    from dataclasses import replace

    shuffled = replace(src, files=tuple(reversed(src.files)))  # stamps not in the order of the paths
    assert sorted(s.path for s in shuffled.for_timepoint(4).files) == sorted(s.path for s in part.files)


def test_a_tasks_source_does_not_grow_with_the_series(tmp_path, rng):
    sizes = {}
    for times in (2, 40):
        write_folder(tmp_path / f"raw{times}", rng, times=times, shape=(1, 4, 4))
        src = scan_pattern(list((tmp_path / f"raw{times}").iterdir()), "{well}_T{t}_{channel}.tif", channel_map=MAP)[0]
        sizes[times] = len(pickle.dumps(src.for_timepoint(1)))
        assert len(pickle.dumps(src)) > 5 * sizes[times] or times == 2
    assert sizes[40] < sizes[2] + 200  # a few bytes per further time point, not its paths and stamps

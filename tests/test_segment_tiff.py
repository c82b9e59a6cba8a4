"""The one-off form ``spheroid segment FILE.tif --out labels.tif`` and its refusals of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config.synth import SynthConfig
from pipeline.evaluate import matching
from pipeline.groundtruth.tiffio import read_tiff, write_tiff
from pipeline.synth import generate

VOXEL = (5.0, 1.24, 1.24)


@pytest.fixture(scope="module")
def spheroid():
    synth = generate(SynthConfig(shape=(21, 96, 96), n_timepoints=1, seed=6), well="D2")
    return synth.images[0], synth.labels[0]


def run(*args):
    return CliRunner().invoke(cli, ["-q", "segment", *[str(a) for a in args]])


def test_zyx_tiff_to_label_tiff(tmp_path, spheroid):
    images, truth = spheroid
    path = write_tiff(tmp_path / "vol.tif", images[0], VOXEL)
    result = run(path, "--out", tmp_path / "labels.tif")
    assert result.exit_code == 0, result.output
    labels, voxel = read_tiff(tmp_path / "labels.tif")
    assert labels.shape == images[0].shape and labels.dtype == np.uint32
    assert voxel == pytest.approx(VOXEL)
    assert matching(truth, labels).f1 > 0.3
    # refuses to replace it without --overwrite
    again = run(path, "--out", tmp_path / "labels.tif")
    assert again.exit_code == 1 and "exists; pass --overwrite" in again.output


@pytest.mark.slow
def test_czyx_channel_by_index_name_and_combination(tmp_path, spheroid):
    images, _ = spheroid
    path = tmp_path / "czyx.ome.tif"
    tifffile.imwrite(path, images, ome=True, metadata={
        "axes": "CZYX", "Channel": {"Name": ["Hoechst", "Cy3", "GFP"]},
        "PhysicalSizeZ": 5.0, "PhysicalSizeY": 1.24, "PhysicalSizeX": 1.24,
    })
    for channel in ("0", "Hoechst", "Hoechst,GFP"):
        out = tmp_path / f"l-{channel.replace(',', '_')}.tif"
        result = run(path, "--out", out, "--channel", channel)
        assert result.exit_code == 0, result.output
        assert read_tiff(out)[0].shape == images.shape[1:]


def test_voxel_size_and_diameter_options(tmp_path, spheroid):
    images, _ = spheroid
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, images[0])  # no calibration
    result = run(path, "--out", tmp_path / "a.tif")
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {path}: no voxel size in the data and none given; pass --voxel-size Z Y X (um)"
    assert not (tmp_path / "a.tif").exists()
    ok = run(path, "--out", tmp_path / "a.tif", "--voxel-size", 5, 1.24, 1.24)
    assert ok.exit_code == 0, ok.output


def test_diameter_per_axis_option(tmp_path, spheroid):
    """``--diameter Z,Y,X``: nuclei twice as tall as the model's are brought back to its shape."""
    images, truth = spheroid
    tall = write_tiff(tmp_path / "tall.tif", np.repeat(images[0], 2, axis=0), VOXEL)
    ok = run(tall, "--out", tmp_path / "t.tif", "--diameter", "20,10,10")
    assert ok.exit_code == 0, ok.output
    labels, _ = read_tiff(tmp_path / "t.tif")
    assert labels.shape == (42, 96, 96) and matching(np.repeat(truth, 2, axis=0), labels).f1 > 0.3
    bad = run(tall, "--out", tmp_path / "b.tif", "--diameter", "20,10")
    assert bad.exit_code == 2 and "give one positive diameter (um) or three, Z,Y,X" in bad.output
    assert not (tmp_path / "b.tif").exists()
    config = tmp_path / "seg.yaml"
    config.write_text("diameter: [20, -1, 10]\n")
    yaml_bad = run(tall, "--out", tmp_path / "b.tif", "-c", config)
    assert yaml_bad.exit_code == 1 and len(yaml_bad.output.strip().splitlines()) == 1
    assert "diameter" in yaml_bad.output and not (tmp_path / "b.tif").exists()


def test_tta_option(tmp_path, spheroid):
    """``--tta 8`` averages 8 flipped passes (recorded in the result); bad values and other backends are refused."""
    from pipeline.config.segment import SegmentConfig
    from pipeline.segment.tiff import segment_file

    images, truth = spheroid
    path = write_tiff(tmp_path / "vol.tif", images[0], VOXEL)
    ok = run(path, "--out", tmp_path / "a.tif", "--tta", 8)
    assert ok.exit_code == 0, ok.output
    assert matching(truth, read_tiff(tmp_path / "a.tif")[0]).f1 > 0.3
    info = segment_file(path, tmp_path / "b.tif", SegmentConfig(tta=2))
    assert info["segmenter"]["settings"]["tta"] == 2
    bad = run(path, "--out", tmp_path / "c.tif", "--tta", 3)
    assert bad.exit_code == 2 and "--tta" in bad.output and not (tmp_path / "c.tif").exists()
    config = tmp_path / "seg.yaml"
    config.write_text("backend: stardist\ntta: 8\n")
    other = run(path, "--out", tmp_path / "c.tif", "-c", config)
    assert other.exit_code == 1 and len(other.output.strip().splitlines()) == 1
    assert "tta (test-time augmentation) applies to the unet backend, not stardist" in other.output
    assert not (tmp_path / "c.tif").exists()
    combined = run(path, "--out", tmp_path / "c.tif", "--backend", "stardist", "--tta", 2)  # options that rule each other out
    assert combined.exit_code == 1 and combined.output.strip() == (
        "error: command line: key 'tta': Value error, tta (test-time augmentation) applies to the unet backend, not stardist; leave it at 1 (got 2)")
    assert SegmentConfig(tta=True).tta == 4 and SegmentConfig(tta=False).tta == 1  # older configs' booleans


@pytest.mark.parametrize(
    "case, message",
    [
        ("2d", "is a single plane of 96 x 96 (2D); segment needs a (z, y, x) volume"),
        ("channel", "channel index 5 out of range: the data has 3 channel(s)"),
        ("time", "holds 2 time points; the one-off form takes one"),
        ("card", "model.json: model card not found"),
        ("nomodel", "the stardist backend needs a model folder (--model DIR)"),
    ],
)
def test_bad_input_one_line_exit_1_nothing_written(tmp_path, spheroid, case, message):
    images, _ = spheroid
    out = tmp_path / "labels.tif"
    args = []
    if case == "2d":
        path = write_tiff(tmp_path / "plane.tif", images[0, 10], VOXEL)
    elif case == "channel":
        path = tmp_path / "czyx.tif"
        tifffile.imwrite(path, images.transpose(1, 0, 2, 3), imagej=True, metadata={"axes": "ZCYX"})
        args = ["--channel", "5", "--voxel-size", 5, 1.24, 1.24]
    elif case == "time":
        path = tmp_path / "tzyx.tif"
        tifffile.imwrite(path, np.stack([images[0], images[0]]), imagej=True, metadata={"axes": "TZYX"})
        args = ["--voxel-size", 5, 1.24, 1.24]
    elif case == "card":
        path = write_tiff(tmp_path / "vol.tif", images[0], VOXEL)
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "weights.pt").write_bytes(b"")
        args = ["--model", tmp_path / "model"]
    else:
        path = write_tiff(tmp_path / "vol.tif", images[0], VOXEL)
        args = ["--backend", "stardist"]
    result = run(path, "--out", out, *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    if case in ("2d", "channel", "time"):
        assert str(path) in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".labels*"))

"""Writing synthetic wells as a microscope export, and the ``spheroid synth`` command."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config.base import load_config
from pipeline.config.synth import SynthConfig
from pipeline.synth import generate, read_table, write_export

SMALL = dict(shape=(6, 40, 48), n_timepoints=2, n_nuclei=12)


@pytest.fixture(scope="module")
def result():
    return generate(SynthConfig(**SMALL, seed=7))


def test_files_layout_imagej_metadata(result, tmp_path):
    written = write_export(result, tmp_path, compression="zlib")
    raw = sorted(p.name for p in (tmp_path / "raw").iterdir())
    assert raw == sorted(f"B10_T{t:02d}_{c}.tif" for t in (1, 2) for c in ("Hoechst", "Cy3", "GFP"))
    with tifffile.TiffFile(tmp_path / "raw" / "B10_T02_GFP.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), result.images[1, 2])
        meta = tif.imagej_metadata
        assert meta["spacing"] == 5.0 and meta["unit"] == "um" and meta["finterval"] == 1800.0
        assert tif.series[0].axes == "ZYX"
        assert tif.pages[0].resolution == pytest.approx((1 / 1.24, 1 / 1.24))
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert len(written) == 6 + 3


def test_ome_layout_physical_metadata(result, tmp_path):
    write_export(result, tmp_path, layout="ome")
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["B10.ome.tif"]
    with tifffile.TiffFile(tmp_path / "raw" / "B10.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "TCZYX"
        np.testing.assert_array_equal(tif.asarray(), result.images)
        root = ET.fromstring(tif.ome_metadata)
    ns = {"ome": root.tag.split("}")[0].strip("{")}
    pixels = root.find(".//ome:Pixels", ns)
    assert float(pixels.get("PhysicalSizeX")) == 1.24 and float(pixels.get("PhysicalSizeZ")) == 5.0
    assert pixels.get("PhysicalSizeZUnit") == "µm"
    assert float(pixels.get("TimeIncrement")) == 1800.0 and pixels.get("TimeIncrementUnit") == "s"
    assert [c.get("Name") for c in pixels.findall("ome:Channel", ns)] == ["Hoechst", "Cy3", "GFP"]


def test_truth_files_roundtrip(result, tmp_path):
    write_export(result, tmp_path)
    with tifffile.TiffFile(tmp_path / "truth" / "B10_labels.tif") as tif:
        labels = tif.asarray()
        assert tif.series[0].axes == "TZYX" and labels.dtype == np.uint16
        assert tif.imagej_metadata["spacing"] == 5.0
    np.testing.assert_array_equal(labels, result.labels)
    table = read_table(tmp_path / "truth" / "B10_nuclei.csv")
    assert list(table.columns) == list(result.table.columns)
    np.testing.assert_array_equal(table["label"], result.table["label"])
    assert list(table["phase"]) == list(result.table["phase"])
    assert table["saturated"].dtype == bool
    np.testing.assert_allclose(table["centroid_x"], result.table["centroid_x"], atol=1e-3)
    first = (tmp_path / "synth.yaml").read_text().splitlines()[0]
    assert first == "# model: pipeline.config.synth:SynthConfig"
    assert load_config(SynthConfig, tmp_path / "synth.yaml") == result.config


def test_large_label_values_stay_uint32(result, tmp_path):
    big = type(result)(**{**result.__dict__, "labels": result.labels.astype(np.uint32) * 5000})
    write_export(big, tmp_path)
    back = tifffile.imread(tmp_path / "truth" / "B10_labels.tif")
    assert back.dtype == np.uint32 and back.shape == result.labels.shape
    np.testing.assert_array_equal(back, big.labels)


def test_cli_writes_and_refuses_non_empty_dir(tmp_path):
    runner = CliRunner()
    out = tmp_path / "export"
    args = ["-q", "synth", str(out), "--shape", "6", "40", "48", "--timepoints", "2", "--wells", "B10,C2", "--seed", "3"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (out / "raw").iterdir())
    assert len(names) == 2 * 2 * 3 and names[0] == "B10_T01_Cy3.tif"
    assert sorted(p.name for p in (out / "truth").iterdir()) == ["B10_labels.tif", "B10_nuclei.csv", "C2_labels.tif", "C2_nuclei.csv"]
    cfg = load_config(SynthConfig, out / "synth.yaml")
    assert cfg.shape == (6, 40, 48) and cfg.wells == ["B10", "C2"] and cfg.seed == 3
    assert not [p for p in out.iterdir() if p.name.startswith(".synth-")]
    before = (out / "raw" / "C2_T02_GFP.tif").read_bytes()

    res = runner.invoke(cli, args)
    assert res.exit_code == 1 and "not empty" in res.output and "--overwrite" in res.output
    assert (out / "raw" / "C2_T02_GFP.tif").read_bytes() == before

    (out / "notes.txt").write_text("keep me")
    res = runner.invoke(cli, [*args[:-4], "--wells", "D5", "--layout", "ome", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert [p.name for p in (out / "raw").iterdir()] == ["D5.ome.tif"]  # old raw files replaced
    assert (out / "notes.txt").read_text() == "keep me"


def test_cli_bad_options_are_one_line_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["synth", str(tmp_path / "a"), "--wells", "12"])
    assert res.exit_code == 1 and "error: command-line options: key 'wells'" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("shape: [4, 32, 32]\nnoise:\n  gian: 2\n")
    res = runner.invoke(cli, ["synth", str(tmp_path / "b"), "-c", str(bad)])
    assert res.exit_code == 1 and "noise.gian" in res.output and "unknown key" in res.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    (tmp_path / "file").write_text("x")
    res = runner.invoke(cli, ["synth", str(tmp_path / "file")])
    assert res.exit_code != 0

"""``spheroid groundtruth`` and ``spheroid trainset ...``: files in, files out, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config.groundtruth import GroundTruthConfig, SynthSetConfig
from pipeline.config.synth import SynthConfig
from pipeline.groundtruth.builders import build_from_samples, build_from_synth, rescale_pair
from pipeline.groundtruth.prepare import prepare_target
from pipeline.groundtruth.trainset import TrainingSet


def _masks(rng, shape=(4, 40, 48)):
    lab = np.zeros(shape, np.uint16)
    lab[0:3, 5:17, 5:17] = 2
    lab[1:4, 5:17, 17:30] = 5  # touches 2
    lab[:, 25:37, 30:44] = 9
    lab[2, 30:33, 5:8] = 12  # 9 px: removed by min_area 20
    return lab


def _write(path, data, voxel=(5.0, 1.24, 1.24)):
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / voxel[2], 1 / voxel[1]), metadata={"spacing": voxel[0], "unit": "um", "axes": "TZYX"[-data.ndim :]})


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def test_groundtruth_writes_target_and_report(tmp_path, rng):
    lab = _masks(rng)
    _write(tmp_path / "masks.tif", lab)
    res = run("groundtruth", "--labels", tmp_path / "masks.tif", "--out", tmp_path / "gt")
    assert res.exit_code == 0, res.output
    assert "class balance: background" in res.output
    sem = tifffile.imread(tmp_path / "gt" / "semantic.tif")
    inst = tifffile.imread(tmp_path / "gt" / "instances.tif")
    assert sem.shape == inst.shape == lab.shape and sem.dtype == np.uint8
    ref_sem, ref_inst = prepare_target(lab)
    np.testing.assert_array_equal(sem, ref_sem)
    np.testing.assert_array_equal(inst, ref_inst)
    assert set(np.unique(inst)) == {0, 2, 5, 9}
    report = json.loads((tmp_path / "gt" / "groundtruth.json").read_text())
    assert sum(report["class_balance"].values()) == pytest.approx(1.0)
    assert report["config"]["min_area"] == 20 and report["volumes"][0]["instances_removed"] == 1
    assert report["voxel_size"] == [5.0, 1.24, 1.24]
    with tifffile.TiffFile(tmp_path / "gt" / "semantic.tif") as tif:
        assert tif.imagej_metadata["spacing"] == 5.0


def test_groundtruth_config_and_timeseries(tmp_path, rng):
    series = np.stack([_masks(rng), np.roll(_masks(rng), 3, axis=2)])
    _write(tmp_path / "series.tif", series)
    (tmp_path / "gt.yaml").write_text("# model: pipeline.config.groundtruth:GroundTruthConfig\ntarget:\n  edge_mode: outer\n  min_area: 0\n")
    res = run("groundtruth", "--labels", tmp_path / "series.tif", "--out", tmp_path / "gt", "-c", tmp_path / "gt.yaml")
    assert res.exit_code == 0, res.output
    sem = tifffile.imread(tmp_path / "gt" / "semantic.tif")
    assert sem.shape == series.shape
    for t in range(2):
        np.testing.assert_array_equal(sem[t], prepare_target(series[t], edge_mode="outer", min_area=0)[0])
    report = json.loads((tmp_path / "gt" / "groundtruth.json").read_text())
    assert len(report["volumes"]) == 2 and report["volumes"][1]["t"] == 1


def test_groundtruth_add_to_trainset(tmp_path, rng):
    lab = _masks(rng)
    image = rng.integers(0, 4000, lab.shape, dtype=np.uint16)
    _write(tmp_path / "masks.tif", lab)
    _write(tmp_path / "img.tif", image)
    res = run("groundtruth", "--labels", tmp_path / "masks.tif", "--out", tmp_path / "gt", "--add-to", tmp_path / "ts", "--image", tmp_path / "img.tif", "--id", "b10-t0", "--split", "val")
    assert res.exit_code == 0, res.output
    ts = TrainingSet.open(tmp_path / "ts")
    item = ts.get("b10-t0")
    assert item["source"] == "cellpose" and item["split"] == "val" and item["voxel_size"] == [5.0, 1.24, 1.24]
    got_image, inst, sem = ts.load(item)
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(sem, tifffile.imread(tmp_path / "gt" / "semantic.tif"))
    res = run("trainset", "info", tmp_path / "ts")
    assert res.exit_code == 0 and "b10-t0" in res.output and "class balance" in res.output
    res = run("trainset", "info", tmp_path / "ts", "--json")
    info = json.loads(res.output)
    assert info["summary"]["items"] == 1 and info["items"][0]["id"] == "b10-t0" and "provenance" not in info["items"][0]
    # the item's median nucleus, as a sphere and per axis (what --diameter Z,Y,X takes)
    from pipeline.groundtruth.sizes import nucleus_sizes, typical_diameters

    stats = info["items"][0]["stats"]
    d, per_axis = typical_diameters([nucleus_sizes(inst, item["voxel_size"])])
    assert stats["nucleus_diameter_um"] == d and stats["nucleus_diameters_um"] == per_axis and len(per_axis) == 3
    size_text = " x ".join(f"{v:.3g}" for v in per_axis)
    assert f"of {size_text} um (z, y, x)" in run("trainset", "info", tmp_path / "ts").output
    res = run("trainset", "add", tmp_path / "ts", "--image", tmp_path / "img.tif", "--labels", tmp_path / "masks.tif", "--source", "real:mine", "--id", "again")
    assert res.exit_code == 0, res.output
    assert TrainingSet.open(tmp_path / "ts").get("again")["source"] == "real:mine"
    res = run("trainset", "remove", tmp_path / "ts", "again")
    assert res.exit_code == 0 and TrainingSet.open(tmp_path / "ts").ids() == ["b10-t0"]


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p, lab: _write(p, lab.astype(np.float32)), "integer image"),
        (lambda p, lab: tifffile.imwrite(p, -lab.astype(np.int16), photometric="minisblack"), "negative"),
        (lambda p, lab: p.write_bytes(b"II*\x00\x08\x00\x00\x00garbage"), "not a readable TIFF"),
        (lambda p, lab: None, "no such file"),
    ],
)
def test_groundtruth_bad_input_one_line_exit_1(tmp_path, rng, make, match):
    make(tmp_path / "masks.tif", _masks(rng))
    res = run("groundtruth", "--labels", tmp_path / "masks.tif", "--out", tmp_path / "gt")
    assert res.exit_code == 1
    assert res.output.startswith("error: ") and res.output.count("\n") == 1 and match in res.output
    assert not (tmp_path / "gt").exists()


def test_groundtruth_refuses_to_overwrite_and_checks_image(tmp_path, rng):
    lab = _masks(rng)
    _write(tmp_path / "masks.tif", lab)
    _write(tmp_path / "img.tif", np.zeros((4, 40, 40), np.uint16))
    assert run("groundtruth", "--labels", tmp_path / "masks.tif", "--out", tmp_path / "gt").exit_code == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "gt").iterdir()}
    res = run("groundtruth", "--labels", tmp_path / "masks.tif", "--out", tmp_path / "gt")  # same input: finished, kept
    assert res.exit_code == 0 and {p.name: p.stat().st_mtime_ns for p in (tmp_path / "gt").iterdir()} == stamps
    _write(tmp_path / "other.tif", lab[:, ::-1].copy())
    res = run("groundtruth", "--labels", tmp_path / "other.tif", "--out", tmp_path / "gt")
    assert res.exit_code == 1 and "another input or with other parameters" in res.output and "--overwrite" in res.output
    assert run("groundtruth", "--labels", tmp_path / "masks.tif", "--out", tmp_path / "gt", "--overwrite").exit_code == 0
    res = run("trainset", "add", tmp_path / "ts", "--image", tmp_path / "img.tif", "--labels", tmp_path / "masks.tif", "--source", "cellpose")
    assert res.exit_code == 1 and "does not match the image" in res.output
    res = run("groundtruth", "--labels", tmp_path / "masks.tif", "--out", tmp_path / "gt3", "--add-to", tmp_path / "ts", "--image", tmp_path / "img.tif")
    assert res.exit_code == 1 and "does not match the image" in res.output
    assert not (tmp_path / "ts").exists() and not (tmp_path / "gt3").exists()  # nothing half-written
    res = run("trainset", "add", tmp_path / "ts", "--image", tmp_path / "img.tif", "--labels", tmp_path / "masks.tif", "--source", "napari")
    assert res.exit_code == 2 and "real:<dataset>" in res.output
    (tmp_path / "bad.yaml").write_text("target:\n  min_aera: 3\n")
    res = run("groundtruth", "--labels", tmp_path / "masks.tif", "--out", tmp_path / "gt2", "-c", tmp_path / "bad.yaml")
    assert res.exit_code == 1 and "target.min_aera" in res.output and "unknown key" in res.output


def test_rescale_pair_shapes_and_labels(rng):
    image = rng.integers(0, 255, (10, 40, 40), dtype=np.uint8)
    labels = np.zeros((10, 40, 40), np.uint32)
    labels[2:8, 10:30, 10:30] = 7
    small_image, small_labels = rescale_pair(image, labels, (0.5, 0.25, 0.25))
    assert small_image.shape == small_labels.shape == (5, 10, 10)
    assert small_image.dtype == np.uint8 and small_labels.dtype == np.uint32
    assert set(np.unique(small_labels)) == {0, 7}  # nearest neighbour: no new ids
    assert np.count_nonzero(small_labels) == pytest.approx(np.count_nonzero(labels) / 32, rel=0.3)


def test_from_synth(tmp_path):
    config = SynthSetConfig(synth=SynthConfig(shape=(6, 48, 48), n_timepoints=2, n_nuclei=25), wells={"B2": "train", "B3": "val"}, timepoints=[1])
    ts = TrainingSet.create(tmp_path / "ts")
    entries = build_from_synth(ts, config, progress=False)
    assert [e["id"] for e in entries] == ["synth-s0-B2-t1", "synth-s0-B3-t1"]
    assert [e["split"] for e in entries] == ["train", "val"]
    image, inst, sem = ts.load(entries[0])
    assert image.dtype == np.uint16 and image.shape == (6, 48, 48) and inst.max() > 0
    assert entries[0]["provenance"]["origin"]["well"] == "B2" and entries[0]["voxel_size"] == [5.0, 1.24, 1.24]
    from pipeline.errors import InputError

    with pytest.raises(InputError, match="already exist"):
        build_from_synth(ts, config, progress=False)


def test_from_samples_real_data(tmp_path, shared_data):
    """The public 3D samples: ovule crops matched by nucleus size, the embryo by voxel size."""
    ts = TrainingSet.create(tmp_path / "ts")
    entries = {e["id"]: e for e in build_from_samples(ts, GroundTruthConfig(), shared_data, progress=False)}
    assert set(entries) == {"ovule-1135", "ovule-1136", "ovule-1137", "embryo-8cell"}
    embryo = entries["embryo-8cell"]
    assert embryo["voxel_size"] == pytest.approx([5.0, 1.24, 1.24], rel=0.02)
    assert embryo["stats"]["shape"] == [22, 97, 98] and embryo["stats"]["n_instances"] == 8
    ovule = entries["ovule-1135"]
    assert ovule["source"] == "real:ovule-nuclei-3d" and ovule["provenance"]["rescale"]["mode"] == "nucleus_size"
    extent = np.array(ovule["provenance"]["rescale"]["nucleus_extent_px"]) * np.array(ovule["provenance"]["rescale"]["factors"])
    np.testing.assert_allclose(extent, [11 / 5, 11 / 1.24, 11 / 1.24], rtol=1e-6)  # nuclei as large in voxels as target nuclei
    assert 0.3 < ovule["voxel_size"][2] < 0.6 and entries["ovule-1136"]["split"] == "val"
    for entry in entries.values():
        image, inst, sem = ts.load(entry)
        assert image.shape == inst.shape == sem.shape == tuple(entry["stats"]["shape"])
        assert ((sem == 2) <= (inst > 0)).all()


def test_from_samples_cli_bad_data_dir(tmp_path):
    res = run("trainset", "from-samples", tmp_path / "ts", "--data", tmp_path / "nothing")
    assert res.exit_code == 1 and "no such data folder" in res.output and not (tmp_path / "ts").exists()


def test_groundtruth_interrupted_between_its_files_is_redone(tmp_path, rng):
    """groundtruth.json is written last: a folder without it holds leftovers of a stopped run,
    which a rerun recomputes (no --overwrite needed) into the same files as an undisturbed run."""
    _write(tmp_path / "masks.tif", _masks(rng))
    assert run("groundtruth", "--labels", tmp_path / "masks.tif", "--out", tmp_path / "ref").exit_code == 0
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "semantic.tif").write_bytes((tmp_path / "ref" / "semantic.tif").read_bytes()[:100])  # stopped mid-set
    res = run("groundtruth", "--labels", tmp_path / "masks.tif", "--out", tmp_path / "gt")
    assert res.exit_code == 0, res.output
    for name in ("semantic.tif", "instances.tif"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "gt" / name), tifffile.imread(tmp_path / "ref" / name))


def test_default_item_ids_are_meaningful_and_unique(tmp_path, rng):
    """Ids say which volume an item is (not the labels' name alone) and never collide."""
    lab = _masks(rng)
    image = rng.integers(0, 4000, lab.shape, dtype=np.uint16)
    for well in ("B2", "B3"):
        (tmp_path / well).mkdir()
        _write(tmp_path / well / "masks.tif", lab)
        _write(tmp_path / well / "image.tif", image if well == "B2" else image[:, ::-1].copy())
    _write(tmp_path / "1135_mini_label.tif", lab)
    _write(tmp_path / "1135_mini_raw.tif", image)
    ts = tmp_path / "ts"
    for well in ("B2", "B3"):
        res = run("trainset", "add", ts, "--image", tmp_path / well / "image.tif", "--labels", tmp_path / well / "masks.tif", "--source", "cellpose")
        assert res.exit_code == 0, res.output
    res = run("groundtruth", "--labels", tmp_path / "1135_mini_label.tif", "--out", tmp_path / "gt", "--add-to", ts, "--image", tmp_path / "1135_mini_raw.tif")
    assert res.exit_code == 0, res.output
    assert TrainingSet.open(ts).ids() == ["B2-image", "B3-image", "1135_mini"]
    # the same command again (a rerun of a script) keeps the item; the same volume with other
    # settings is refused under its id, never stored twice under a new one
    manifest = (ts / "manifest.json").read_text()
    res = run("trainset", "add", ts, "--image", tmp_path / "B2" / "image.tif", "--labels", tmp_path / "B2" / "masks.tif", "--source", "cellpose")
    assert res.exit_code == 0 and "added B2-image" in res.output and (ts / "manifest.json").read_text() == manifest
    res = run("trainset", "add", ts, "--image", tmp_path / "B2" / "image.tif", "--labels", tmp_path / "B2" / "masks.tif", "--source", "cellpose", "--split", "val")
    assert res.exit_code == 1 and "B2-image" in res.output and "--replace" in res.output
    # another volume whose names give a taken id gets a free one
    (tmp_path / "again" / "B2").mkdir(parents=True)
    _write(tmp_path / "again" / "B2" / "masks.tif", lab[:, :, ::-1].copy())
    _write(tmp_path / "again" / "B2" / "image.tif", image)
    res = run("trainset", "add", ts, "--image", tmp_path / "again" / "B2" / "image.tif", "--labels", tmp_path / "again" / "B2" / "masks.tif", "--source", "cellpose")
    assert res.exit_code == 0, res.output
    assert TrainingSet.open(ts).ids()[-1] == "B2-image-2"


def test_train_on_a_groundtruth_folder_names_the_next_command(tmp_path, rng):
    _write(tmp_path / "masks.tif", _masks(rng))
    assert run("groundtruth", "--labels", tmp_path / "masks.tif", "--out", tmp_path / "gt").exit_code == 0
    res = run("train", "--trainset", tmp_path / "gt", "--out", tmp_path / "run", "--max-steps", "1")
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert "not a training set" in res.output and "spheroid groundtruth" in res.output
    assert "spheroid trainset add" in res.output and str(tmp_path / "gt" / "instances.tif") in res.output
    assert not (tmp_path / "run").exists()

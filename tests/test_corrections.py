"""Human in the loop: export image + predictions for Labkit / napari, import the corrections."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.errors import InputError, StoreError
from pipeline.groundtruth.corrections import export_corrections, import_corrections
from pipeline.groundtruth.trainset import TrainingSet
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline.io.volumes import write_volume

SHAPE = (2, 3, 4, 32, 40)  # t, c, z, y, x


def _blobs():
    lab = np.zeros(SHAPE[2:], np.uint32)
    lab[0:3, 4:12, 4:12] = 3
    lab[1:4, 4:12, 12:20] = 8  # touches 3
    lab[0:4, 18:28, 24:34] = 11
    return lab


@pytest.fixture
def store(tmp_path, rng):
    plate = Plate.create(str(tmp_path / "p.zarr"), name="exp1")
    field = plate.add_field("B10", 0)
    meta = ImageMeta()
    field.create_image("raw", SHAPE, "uint16", meta)
    raw = rng.integers(100, 4000, size=SHAPE, dtype=np.uint16)
    for t in range(SHAPE[0]):
        for c in range(SHAPE[1]):
            write_volume(plate.location, field.array_path(), t, c, raw[t, c])
    field.create_labels("nuclei", (SHAPE[0], 1, *SHAPE[2:]), ImageMeta(channels=("nuclei",)), attrs={"model": "unet-demo-v1"})
    labels = _blobs()
    for t in range(SHAPE[0]):
        write_volume(plate.location, field.label_path() + "/0", t, 0, labels)
    return plate, field, raw, labels


def test_export_writes_calibrated_tiffs_and_sidecar(store, tmp_path):
    plate, field, raw, labels = store
    side = export_corrections(plate, field, 1, tmp_path / "exp")
    out = tmp_path / "exp"
    with tifffile.TiffFile(out / "image.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["spacing"] == 5.0 and tif.imagej_metadata["unit"] == "um"
        x = tif.pages[0].tags["XResolution"].value
        assert x[1] / x[0] == pytest.approx(1.24, rel=1e-3)
        np.testing.assert_array_equal(tif.asarray(), raw[1, 0])  # Hoechst = channel 0
    with tifffile.TiffFile(out / "labels.tif") as tif:
        assert tif.is_imagej and tif.asarray().dtype == np.uint16
        np.testing.assert_array_equal(tif.asarray(), labels)
    assert side["store"] == str(tmp_path / "p.zarr") and side["field"] == "B10/0" and side["t"] == 1
    assert side["channel"] == "Hoechst" and side["image_source"] == "raw" and side["model"] == "unet-demo-v1"
    assert json.loads((out / "correction.json").read_text())["labels_sha256"] == side["labels_sha256"]
    assert "import-corrections" in (out / "README.txt").read_text()
    with pytest.raises(InputError, match="earlier export"):
        export_corrections(plate, field, 1, out)


def test_export_prefers_preprocessed_and_picks_channel(store, tmp_path, rng):
    plate, field, _, _ = store
    field.create_image("preprocessed", SHAPE, "float32", ImageMeta())
    pre = rng.random(SHAPE[2:]).astype(np.float32)
    write_volume(plate.location, field.array_path("preprocessed"), 0, 2, pre)
    from pipeline.config.groundtruth import CorrectionsConfig

    side = export_corrections(plate, field, 0, tmp_path / "a", config=CorrectionsConfig(channel="GFP"))
    assert side["image_source"] == "preprocessed" and side["channel"] == "GFP"
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a" / "image.tif"), pre)
    side = export_corrections(plate, field, 1, tmp_path / "b", config=CorrectionsConfig(channel="GFP"))
    assert side["image_source"] == "raw"  # preprocessed t=1 not done
    with pytest.raises(InputError, match="no channel 'DAPI'"):
        export_corrections(plate, field, 0, tmp_path / "c", config=CorrectionsConfig(channel="DAPI"))
    with pytest.raises(InputError, match="outside"):
        export_corrections(plate, field, 5, tmp_path / "d")


def test_export_needs_labels(tmp_path, rng):
    plate = Plate.create(str(tmp_path / "p.zarr"))
    field = plate.add_field("A1", 0)
    field.create_image("raw", (1, 1, 2, 8, 8), "uint16", ImageMeta(channels=("Hoechst",)))
    write_volume(plate.location, field.array_path(), 0, 0, np.ones((2, 8, 8), np.uint16))
    with pytest.raises(StoreError, match="no labels/nuclei"):
        export_corrections(plate, field, 0, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(InputError, match="does not match"):
        export_corrections(plate, field, 0, tmp_path / "x", labels=np.zeros((2, 8, 9), np.uint16))
    export_corrections(plate, field, 0, tmp_path / "x", labels=np.ones((2, 8, 8), np.uint16), labels_file="pred.tif")
    assert json.loads((tmp_path / "x" / "correction.json").read_text())["labels_source"] == "file:pred.tif"


def test_roundtrip_binary_labkit_mask(store, tmp_path):
    """Labkit exports a binary mask: it is split by 6-connected components and prepared."""
    plate, field, raw, labels = store
    out = tmp_path / "exp"
    export_corrections(plate, field, 1, out)
    corrected = (labels > 0).astype(np.uint8) * 255  # "binary" export
    corrected[:, 4:12, 12] = 0  # the annotator separates the touching nuclei 3 and 8 by a cut
    tifffile.imwrite(out / "corrected.tif", corrected, imagej=True)
    ts = TrainingSet.create(tmp_path / "ts")
    entry = import_corrections(out, ts, tool="labkit")
    assert entry["id"] == "hc-exp1-B10-0-t1-Hoechst" and entry["source"] == "hand-corrected" and entry["split"] == "train"
    assert entry["voxel_size"] == [5.0, 1.24, 1.24] and entry["channel"] == "Hoechst"
    prov = entry["provenance"]
    assert prov["corrected_from"]["store"] == str(tmp_path / "p.zarr") and prov["corrected_from"]["t"] == 1
    assert prov["corrected_from"]["model"] == "unet-demo-v1" and prov["tool"] == "labkit"
    assert prov["relabelled_binary"] and prov["connectivity"] == 6
    assert prov["correction_file"].endswith("corrected.tif") and len(prov["correction_sha256"]) == 64
    image, inst, sem = ts.load(entry)
    np.testing.assert_array_equal(image, raw[1, 0])
    assert np.count_nonzero(np.unique(inst)) == 3
    assert set(np.unique(sem)) == {0, 1, 2}
    assert ((sem == 2) <= (inst > 0)).all()


def test_import_instance_mask_keeps_ids_and_replace(store, tmp_path):
    plate, field, _, labels = store
    out = tmp_path / "exp"
    export_corrections(plate, field, 0, out)
    corrected = labels.astype(np.uint16).copy()
    corrected[corrected == 11] = 0  # a false positive deleted
    tifffile.imwrite(out / "corrected.tif", corrected, imagej=True)
    ts = TrainingSet.create(tmp_path / "ts")
    entry = import_corrections(out, ts, split="val")
    _, inst, _ = ts.load(entry)
    assert set(np.unique(inst)) == {0, 3, 8} and entry["split"] == "val"
    with pytest.raises(InputError, match="already exists"):
        import_corrections(out, ts)
    import_corrections(out, ts, replace=True)  # a second correction round of the same volume
    assert len(ts) == 1


def test_import_rejects_bad_masks(store, tmp_path):
    plate, field, _, labels = store
    out = tmp_path / "exp"
    export_corrections(plate, field, 0, out)
    ts = TrainingSet.create(tmp_path / "ts")
    tifffile.imwrite(out / "corrected.tif", labels[:, :, :-1].astype(np.uint16), imagej=True)
    with pytest.raises(InputError, match="does not match the exported image"):
        import_corrections(out, ts)
    tifffile.imwrite(out / "corrected.tif", labels.astype(np.float32), imagej=True)
    with pytest.raises(InputError, match="integer image"):
        import_corrections(out, ts)
    tifffile.imwrite(out / "corrected.tif", -labels.astype(np.int16), photometric="minisblack")
    with pytest.raises(InputError, match="negative"):
        import_corrections(out, ts)
    (out / "corrected.tif").write_bytes(b"II*\x00not really a tiff")
    with pytest.raises(InputError, match="not a readable TIFF"):
        import_corrections(out, ts)
    tifffile.imwrite(out / "corrected.tif", np.zeros(labels.shape, np.uint8), imagej=True)
    with pytest.raises(InputError, match="no nuclei"):
        import_corrections(out, ts)
    img = tifffile.imread(out / "image.tif")
    tifffile.imwrite(out / "image.tif", img + 1, imagej=True)
    tifffile.imwrite(out / "corrected.tif", labels.astype(np.uint16), imagej=True)
    with pytest.raises(InputError, match="changed since the export"):
        import_corrections(out, ts)
    assert len(TrainingSet.open(tmp_path / "ts")) == 0


def test_import_bare_tiff_needs_image(tmp_path, rng):
    mask = np.zeros((3, 20, 20), np.uint16)
    mask[:, 4:14, 4:14] = 1
    tifffile.imwrite(tmp_path / "mask.tif", mask, photometric="minisblack")
    ts = TrainingSet.create(tmp_path / "ts")
    with pytest.raises(InputError, match="--image"):
        import_corrections(tmp_path / "mask.tif", ts)
    tifffile.imwrite(tmp_path / "img.tif", rng.integers(0, 255, (3, 20, 20), dtype=np.uint8), imagej=True, resolution=(1, 1), metadata={"spacing": 2.0, "unit": "um"})
    entry = import_corrections(tmp_path / "mask.tif", ts, image_path=tmp_path / "img.tif", channel="Hoechst", tool="napari")
    assert entry["id"] == "hc-mask" and entry["voxel_size"] == [2.0, 1.0, 1.0]
    assert entry["provenance"]["corrected_from"] is None


def test_cli_roundtrip_and_errors(store, tmp_path):
    plate, _, _, labels = store
    runner = CliRunner()
    out = tmp_path / "exp"
    res = runner.invoke(cli, ["-q", "export-corrections", plate.location.url, "--field", "B10/0", "--t", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "image.tif").exists() and (out / "labels.tif").exists()
    # the user edits labels.tif in place (napari), deleting one nucleus
    edited = labels.astype(np.uint16)
    edited[edited == 3] = 0
    tifffile.imwrite(out / "labels.tif", edited, imagej=True)
    res = runner.invoke(cli, ["-q", "import-corrections", str(out), "--trainset", str(tmp_path / "ts"), "--tool", "napari"])
    assert res.exit_code == 0, res.output
    item = TrainingSet.open(tmp_path / "ts").items()[0]
    assert item["source"] == "hand-corrected" and item["stats"]["n_instances"] == 2
    res = runner.invoke(cli, ["-q", "export-corrections", plate.location.url, "--field", "B10/0", "--t", "1", "--out", str(out)])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "--overwrite" in res.output
    res = runner.invoke(cli, ["-q", "export-corrections", plate.location.url, "--field", "C3/0", "--t", "0", "--out", str(tmp_path / "e2")])
    assert res.exit_code == 1 and "no field C3/0" in res.output
    tifffile.imwrite(out / "corrected.tif", labels[:2].astype(np.uint16), photometric="minisblack")
    res = runner.invoke(cli, ["-q", "import-corrections", str(out), "--trainset", str(tmp_path / "ts3")])
    assert res.exit_code == 1 and res.output.startswith("error: ") and "does not match" in res.output
    assert not (tmp_path / "ts3").exists()
    res = runner.invoke(cli, ["-q", "import-corrections", str(tmp_path / "nope"), "--trainset", str(tmp_path / "ts2")])
    assert res.exit_code == 1 and "no such file" in res.output and not (tmp_path / "ts2").exists()

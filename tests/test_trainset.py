"""TrainingSet: the folder format shared by ground-truth preparation and training."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import tifffile

from pipeline.errors import InputError
from pipeline.io import atomic as atomic_mod
from pipeline.groundtruth.trainset import TrainingSet, class_balance


def _triplet(rng, shape=(4, 16, 20), image_dtype=np.uint16):
    instances = np.zeros(shape, np.uint32)
    instances[1:3, 2:8, 3:9] = 5
    instances[1:4, 9:14, 10:18] = 7
    semantic = np.where(instances > 0, 2, 0).astype(np.uint8)
    semantic[1:3, 2, 3:9] = 1  # an edge row inside instance 5
    if np.issubdtype(image_dtype, np.integer):
        image = rng.integers(0, 4000, size=shape).astype(image_dtype)
    else:
        image = rng.random(shape).astype(image_dtype)
    return image, instances, semantic


def _add(ts, rng, item_id, split="train", **kw):
    image, inst, sem = _triplet(rng, **kw)
    entry = ts.add(image, inst, sem, id=item_id, voxel_size=(5.0, 1.24, 1.24), channel="Hoechst", source="synthetic", split=split, provenance={"seed": np.int64(3), "origin": "test"})
    return entry, (image, inst, sem)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_roundtrip(tmp_path, rng, dtype):
    ts = TrainingSet.create(tmp_path / "ts")
    entry, (image, inst, sem) = _add(ts, rng, "a", image_dtype=dtype)
    _add(ts, rng, "b", split="val")
    again = TrainingSet.open(tmp_path / "ts")
    assert again.ids() == ["a", "b"]
    assert [it["id"] for it in again.items("val")] == ["b"]
    item = again.items("train")[0]
    assert item["image"] == "images/a.tif" and item["instances"] == "instances/a.tif" and item["semantic"] == "semantic/a.tif"
    assert item["voxel_size"] == [5.0, 1.24, 1.24] and item["channel"] == "Hoechst" and item["source"] == "synthetic"
    assert item["provenance"] == {"seed": 3, "origin": "test"}
    assert item["stats"]["n_instances"] == 2
    got_image, got_inst, got_sem = again.load(item)
    assert got_image.dtype == np.dtype(dtype) and got_inst.dtype == np.uint32 and got_sem.dtype == np.uint8
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(got_inst, inst)
    np.testing.assert_array_equal(got_sem, sem)
    manifest = json.loads((tmp_path / "ts" / "manifest.json").read_text())
    assert manifest["version"] == 1 and len(manifest["items"]) == 2
    # files are calibrated: Fiji/napari see the voxel size
    with tifffile.TiffFile(tmp_path / "ts" / "semantic" / "a.tif") as tif:
        assert tif.imagej_metadata["spacing"] == 5.0
    summary = again.summary()
    assert summary["splits"] == {"train": 1, "val": 1}
    assert sum(summary["class_balance"].values()) == pytest.approx(1.0)


def test_class_balance_sums_to_one(rng):
    sem = rng.integers(0, 3, size=(3, 10, 10)).astype(np.uint8)
    bal = class_balance(sem)
    assert sum(bal.values()) == pytest.approx(1.0)
    assert bal["edge"] == pytest.approx(np.mean(sem == 1))


def test_duplicate_id_and_replace(tmp_path, rng):
    ts = TrainingSet.create(tmp_path / "ts")
    _add(ts, rng, "a")
    with pytest.raises(InputError, match="already exists"):
        _add(ts, rng, "a")
    image, inst, sem = _triplet(rng)
    ts.add(image, inst, sem, id="a", voxel_size=(1, 1, 1), channel="Cy3", source="real:x", split="test", replace=True)
    assert len(ts) == 1 and ts.get("a")["channel"] == "Cy3"
    np.testing.assert_array_equal(ts.load("a")[0], image)


def test_create_refuses_existing(tmp_path):
    TrainingSet.create(tmp_path / "ts")
    with pytest.raises(InputError, match="already exists"):
        TrainingSet.create(tmp_path / "ts")
    assert TrainingSet.create(tmp_path / "ts", exist_ok=True).ids() == []
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(InputError, match="not an empty folder"):
        TrainingSet.create(tmp_path / "other")
    with pytest.raises(InputError, match="not a training set"):
        TrainingSet.open(tmp_path / "other")
    (tmp_path / "other" / "manifest.json").write_text("{bad json")
    with pytest.raises(InputError, match="unreadable manifest"):
        TrainingSet.open(tmp_path / "other")


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda i, n, s: (i, n.astype(np.float32), s), "integer labels"),
        (lambda i, n, s: (i, n.astype(np.int32) - 1, s), "negative"),
        (lambda i, n, s: (i, n[:, :-1], s), "shapes differ"),
        (lambda i, n, s: (i, n, s + 1), "only 0"),
        (lambda i, n, s: (i, np.zeros_like(n), s), "outside every instance"),
        (lambda i, n, s: (i, n, np.zeros_like(s)), "marked background"),
        (lambda i, n, s: (i.astype(np.int64), n, s), "dtype int64"),
        (lambda i, n, s: (i[0], n[0], s[0]), "ZYX"),
    ],
)
def test_add_rejects_bad_arrays(tmp_path, rng, change, match):
    ts = TrainingSet.create(tmp_path / "ts")
    image, inst, sem = change(*_triplet(rng))
    with pytest.raises(InputError, match=match) as info:
        ts.add(image, inst, sem, id="a", voxel_size=(5, 1, 1), channel="Hoechst", source="synthetic")
    assert "\n" not in str(info.value)
    assert len(TrainingSet.open(tmp_path / "ts")) == 0
    assert not list((tmp_path / "ts" / "images").iterdir())


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"id": "../x"}, "item id"),
        ({"split": "training"}, "split"),
        ({"source": "napari"}, "source"),
        ({"voxel_size": (5, 1)}, "voxel_size"),
        ({"voxel_size": (5, 0, 1)}, "voxel_size"),
        ({"provenance": {"x": object()}}, "JSON"),
    ],
)
def test_add_rejects_bad_metadata(tmp_path, rng, kw, match):
    ts = TrainingSet.create(tmp_path / "ts")
    args = {"id": "a", "voxel_size": (5, 1, 1), "channel": "Hoechst", "source": "synthetic", "split": "train"}
    args.update(kw)
    with pytest.raises(InputError, match=match):
        ts.add(*_triplet(rng), **args)
    assert len(TrainingSet.open(tmp_path / "ts")) == 0


def test_interrupted_add_leaves_manifest_and_no_partial_files(tmp_path, rng, monkeypatch):
    ts = TrainingSet.create(tmp_path / "ts")
    _add(ts, rng, "a")
    before = (tmp_path / "ts" / "manifest.json").read_bytes()
    real_imwrite = tifffile.imwrite

    def failing_imwrite(path, data, **kw):
        if "semantic" in str(path):
            real_imwrite(path, data[:1], **kw)  # a partial temp file, then the crash
            raise OSError("disk full")
        return real_imwrite(path, data, **kw)

    monkeypatch.setattr(tifffile, "imwrite", failing_imwrite)
    with pytest.raises(OSError, match="disk full"):
        _add(ts, rng, "b")
    monkeypatch.undo()
    assert (tmp_path / "ts" / "manifest.json").read_bytes() == before
    assert TrainingSet.open(tmp_path / "ts").ids() == ["a"]
    assert not (tmp_path / "ts" / "semantic" / "b.tif").exists()
    assert not [p for p in (tmp_path / "ts").rglob(".*tmp*")]


def test_manifest_written_atomically(tmp_path, rng, monkeypatch):
    ts = TrainingSet.create(tmp_path / "ts")
    _add(ts, rng, "a")
    before = (tmp_path / "ts" / "manifest.json").read_bytes()

    def failing_fsync(*args, **kwargs):
        raise OSError("killed while writing")

    # the manifest is written by pipeline.groundtruth.manifest through pipeline.io.atomic: fail
    # after its temporary file has been written, before the rename
    monkeypatch.setattr(atomic_mod.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        _add(ts, rng, "b")
    monkeypatch.undo()
    assert (tmp_path / "ts" / "manifest.json").read_bytes() == before
    assert not list((tmp_path / "ts").glob(".manifest*"))


def test_concurrent_adds_keep_every_item(tmp_path):
    TrainingSet.create(tmp_path / "ts")
    errors = []

    def worker(k):
        try:
            ts = TrainingSet.open(tmp_path / "ts")  # each writer holds its own stale copy
            rng = np.random.default_rng(k)
            for j in range(3):
                _add(ts, rng, f"w{k}-{j}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(TrainingSet.open(tmp_path / "ts").ids()) == sorted(f"w{k}-{j}" for k in range(3) for j in range(3))


def test_load_reports_missing_and_corrupt_files(tmp_path, rng):
    ts = TrainingSet.create(tmp_path / "ts")
    _add(ts, rng, "a")
    (tmp_path / "ts" / "semantic" / "a.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match=r"semantic/a\.tif: not a readable TIFF"):
        ts.load("a")
    (tmp_path / "ts" / "images" / "a.tif").unlink()
    with pytest.raises(InputError, match="no such file"):
        ts.load("a")
    with pytest.raises(InputError, match="no item"):
        ts.load("zzz")

"""``spheroid evaluate`` resumes, refuses other settings, writes one consistent set, and
pairs label TIFFs with stores; volumes stay on the workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tifffile
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config.evaluate import EvaluateConfig
from pipeline.evaluate.matching import match_thresholds

THREADS = "cluster:\n  n_workers: 2\n  processes: false\n"


def imwrite(path, data, **kw):
    tifffile.imwrite(path, data, photometric="minisblack", **kw)


def blobs(shape, n, rng, fill=0.75):
    seeds = rng.random((n, len(shape))) * np.array(shape)
    grid = np.indices(shape).reshape(len(shape), -1).T
    lab = np.argmin(((grid[:, None, :] - seeds[None]) ** 2).sum(-1), 1) + 1
    lab[rng.random(len(lab)) > fill] = 0
    return lab.reshape(shape).astype(np.uint16)


def run(*args):
    return CliRunner().invoke(cli, ["-q", "evaluate", *map(str, args)], catch_exceptions=False)


def without_provenance(path):
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "provenance"}


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(42)
    for side in ("t", "p"):
        (tmp_path / side).mkdir()
    for i in range(4):
        truth = blobs((4, 20, 20), 10, rng)
        imwrite(tmp_path / "t" / f"v{i}.tif", truth)
        imwrite(tmp_path / "p" / f"v{i}.tif", np.roll(truth, i, axis=2))
    (tmp_path / "c.yaml").write_text(THREADS)
    return tmp_path


@pytest.mark.slow
def test_rerun_skips_finished_volumes_and_redoes_changed_ones(folders):
    out = folders / "out"
    args = ("--truth", folders / "t", "--pred", folders / "p", "--out", out, "-c", folders / "c.yaml")
    assert run(*args).exit_code == 0
    first = without_provenance(out / "summary.json")
    records = sorted((out / "volumes").glob("*.npz"))
    assert len(records) == 4
    stamps = {p.name: p.stat().st_mtime_ns for p in records}
    records[1].unlink()  # as if stopped before this volume was done
    assert run(*args).exit_code == 0
    assert without_provenance(out / "summary.json") == first
    assert {p.name: p.stat().st_mtime_ns for p in records if p != records[1]} == {k: v for k, v in stamps.items() if k != records[1].name}
    assert records[1].is_file()
    # a prediction file rewritten since: that volume, and only it, is evaluated again
    time.sleep(0.01)
    imwrite(folders / "p" / "v0.tif", np.zeros((4, 20, 20), np.uint16))
    before = {p.name: p.stat().st_mtime_ns for p in records}
    assert run(*args).exit_code == 0
    after = {p.name: p.stat().st_mtime_ns for p in records}
    changed = [name for name in after if after[name] != before[name]]
    assert len(changed) == 1 and changed[0].startswith("v0.tif")
    images = pd.read_csv(out / "per_image.csv")
    assert images.loc[images.image == "v0.tif", "tp"].item() == 0


def test_other_settings_and_unresumable_outputs_are_refused(folders):
    out = folders / "out"
    assert run("--truth", folders / "t", "--pred", folders / "p", "--out", out, "-c", folders / "c.yaml").exit_code == 0
    other = run("--truth", folders / "t", "--pred", folders / "t", "--out", out, "-c", folders / "c.yaml")
    assert other.exit_code == 1 and "other settings (--pred differs)" in other.output
    (folders / "c2.yaml").write_text(THREADS + "sub_weight: 1.0\n")
    other = run("--truth", folders / "t", "--pred", folders / "p", "--out", out, "-c", folders / "c2.yaml")
    assert other.exit_code == 1 and "sub_weight differs" in other.output
    # the look of the figures and the cluster are not settings of the results
    (folders / "c3.yaml").write_text("cluster:\n  n_workers: 1\n  processes: false\nplots:\n  dpi: 60\n")
    assert run("--truth", folders / "t", "--pred", folders / "p", "--out", out, "-c", folders / "c3.yaml").exit_code == 0
    legacy = folders / "legacy"
    legacy.mkdir()
    (legacy / "summary.json").write_text("{}")
    refused = run("--truth", folders / "t", "--pred", folders / "p", "--out", legacy)
    assert refused.exit_code == 1 and "cannot be resumed; pass --overwrite" in refused.output


@pytest.mark.slow
def test_a_stop_while_writing_leaves_no_summary(folders, monkeypatch):
    """summary.json is removed first and renamed into place last: never a mixed set that looks finished."""
    out = folders / "out"
    args = ("--truth", folders / "t", "--pred", folders / "p", "--out", out, "-c", folders / "c.yaml")
    assert run(*args).exit_code == 0
    real = os.replace

    def stop_midway(src, dst):
        if os.fspath(dst) == os.fspath(out / "per_image.csv"):  # two tables already replaced
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", stop_midway)
    result = CliRunner().invoke(cli, ["-q", "evaluate", *map(str, args), "--threshold", "0.7", "--overwrite"])
    assert result.exit_code == 130
    assert not (out / "summary.json").exists()
    # --overwrite removed the old set first; two new tables were in place when it stopped
    assert (out / "nuclei.csv").exists() and not (out / "per_image.csv").exists() and not (out / "metrics_vs_threshold.png").exists()
    assert not list(out.glob(".evaluate-*"))
    monkeypatch.setattr(os, "replace", real)
    assert run(*args, "--threshold", "0.7").exit_code == 0
    assert json.loads((out / "summary.json").read_text())["report_threshold"] == 0.7


@pytest.mark.slow
def test_sigterm_mid_run_then_resume_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(3)
    for side in ("t", "p"):
        (tmp_path / side).mkdir()
    for i in range(24):
        truth = blobs((6, 40, 40), 30, rng)
        imwrite(tmp_path / "t" / f"v{i:02d}.tif", truth)
        imwrite(tmp_path / "p" / f"v{i:02d}.tif", np.roll(truth, i % 3, axis=1))
    (tmp_path / "c.yaml").write_text("cluster:\n  n_workers: 1\n  processes: false\nplots:\n  enabled: false\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.cli.main", "-q", "evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), "--out", str(out), "-c", str(tmp_path / "c.yaml")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list((out / "volumes").glob("*.npz")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    kept = len(list((out / "volumes").glob("*.npz")))
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 143, err
    assert "run the same command again to resume" in err
    assert not (out / "summary.json").exists() and 1 <= kept < 24
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    fresh = tmp_path / "fresh"
    assert subprocess.run([*cmd[:-4], "--out", str(fresh), "-c", str(tmp_path / "c.yaml")], capture_output=True, timeout=300).returncode == 0
    assert without_provenance(out / "summary.json") == without_provenance(fresh / "summary.json")
    for name in ("nuclei.csv", "predicted.csv", "per_image.csv", "matching.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / name), pd.read_csv(fresh / name))


# -- label TIFFs against stores ----------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    """A memory store with two fields: raw image (Hoechst, GFP) and labels made from Hoechst."""
    from pipeline.io.ngff import ImageMeta
    from pipeline.io.plate import Plate
    from pipeline.io.volumes import write_volume

    rng = np.random.default_rng(11)
    url = f"memory://evaluate-resume-{tmp_path.name}"
    plate = Plate.create(url)
    labels = {}
    for well in ("B2", "C3"):
        field = plate.add_field(well, 0)
        field.create_image("raw", (2, 2, 4, 24, 24), np.uint16, ImageMeta(channels=("Hoechst", "GFP")), chunk_yx=(24, 24))
        field.create_labels("nuclei", (2, 1, 4, 24, 24), ImageMeta(channels=("nuclei",)), chunk_yx=(24, 24), attrs={"channel": "GFP"})
        for t in range(2):
            y = blobs((4, 24, 24), 12, rng).astype(np.uint32)
            labels[(well, t)] = y
            write_volume(plate.location, field.label_path("nuclei") + "/0", t, 0, y)
            write_volume(plate.location, field.array_path(), t, 0, (y > 0).astype(np.uint16) * 100 + 10)  # Hoechst: bright nuclei
            write_volume(plate.location, field.array_path(), t, 1, (y == 0).astype(np.uint16) * 1000 + 10)  # GFP: dark nuclei
    return url, labels


@pytest.mark.slow
def test_tiff_against_a_store_field(store, tmp_path):
    url, labels = store
    truth = np.roll(labels[("C3", 1)], 1, axis=2).astype(np.uint16)
    imwrite(tmp_path / "truth.tif", truth)
    out = tmp_path / "out"
    result = run("--truth", tmp_path / "truth.tif", "--pred", url, "--field", "C3/0", "--t", "1", "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    expected = match_thresholds(truth, labels[("C3", 1)])
    assert summary["n_images"] == 1
    assert all(summary["matching"][str(t)] == m.summary() for t, m in expected.items())
    images = pd.read_csv(out / "per_image.csv")
    assert images[["image", "t"]].values.tolist() == [["C3/0", 1]]
    # the overlay's raw image: the store's, in the channel the labels were made from (GFP)
    with np.load(next((out / "volumes").glob("*.npz"))) as record:
        image, zs, pred = record["overlay.image"], record["overlay.z"], record["overlay.pred"]
    assert image.shape == (len(zs), 24, 24) and image.max() == 255 and image.min() == 0
    assert image[pred > 0].max() == 0 and image[pred == 0].min() == 255  # GFP, not Hoechst
    # a store's labels as ground truth against a TIFF prediction
    out2 = tmp_path / "out2"
    assert run("--truth", url, "--pred", tmp_path / "truth.tif", "--field", "C3/0", "--t", "1", "--out", out2).exit_code == 0
    assert json.loads((out2 / "summary.json").read_text())["matching"]["0.5"]["tp"] == summary["matching"]["0.5"]["tp"]


def test_tiff_against_a_store_needs_a_field(store, tmp_path):
    url, labels = store
    imwrite(tmp_path / "truth.tif", labels[("B2", 0)].astype(np.uint16))
    result = run("--truth", tmp_path / "truth.tif", "--pred", url, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "2 fields hold these labels (B2/0, C3/0); name the one" in result.output and "--field" in result.output
    result = run("--truth", tmp_path / "truth.tif", "--pred", url, "--field", "B2/0", "--t", "0", "--t", "1", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "give one --t" in result.output
    assert run("--truth", tmp_path / "truth.tif", "--pred", url, "--field", "B2/0", "--out", tmp_path / "out").exit_code == 0  # t = 0


def test_raw_image_from_a_tiff(tmp_path):
    from pipeline.evaluate.raw import attach_raw
    from pipeline.evaluate.sources import pair_sources

    rng = np.random.default_rng(5)
    truth = blobs((3, 16, 16), 6, rng)
    imwrite(tmp_path / "t.tif", truth)
    imwrite(tmp_path / "raw.tif", np.stack([truth * 3, truth * 7]).astype(np.uint16), metadata={"axes": "CZYX"})
    items = pair_sources(str(tmp_path / "t.tif"), str(tmp_path / "t.tif"))
    shown = attach_raw(items, [0], str(tmp_path / "raw.tif"), channel=1)
    np.testing.assert_array_equal(shown[0].raw.load(), truth * 7)
    from pipeline.errors import InputError

    with pytest.raises(InputError, match="no channel 2"):
        attach_raw(items, [0], str(tmp_path / "raw.tif"), channel=2)
    imwrite(tmp_path / "small.tif", np.zeros((3, 16, 15), np.uint16))
    with pytest.raises(InputError, match=r"small.tif has shape \(3, 16, 15\)"):
        attach_raw(items, [0], str(tmp_path / "small.tif"))


def test_no_volume_is_read_by_the_client(folders, dask_client, monkeypatch):
    """On the cluster every volume (labels and the overlay's raw image) is read by a worker process."""
    from pipeline.evaluate import sources
    from pipeline.evaluate.raw import attach_raw
    from pipeline.evaluate.run import run_evaluation

    imwrite(folders / "raw.tif", np.ones((4, 20, 20), np.uint16))
    items = sources.pair_sources(str(folders / "t"), str(folders / "p"))
    items = attach_raw(items, [0], str(folders / "raw.tif"))

    def refuse(self):
        raise AssertionError(f"the client read {self.label}")

    monkeypatch.setattr(sources.VolumeRef, "load", refuse)
    evaluation = run_evaluation(items, EvaluateConfig(), client=dask_client, progress=False)
    assert evaluation.summary["n_images"] == 4 and evaluation.overlay is not None
    assert evaluation.overlay["overlay"]["truth"].shape[1:] == (20, 20)

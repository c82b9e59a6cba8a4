"""``spheroid evaluate``: the files it writes, their exact keys, and one-line errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.evaluate.matching import SUMMARY_KEYS, match_thresholds
from pipeline.evaluate.run import OUTPUTS

#: A local cluster of worker threads: starts fast (process workers are covered in test_evaluate.py).
THREADS = "cluster:\n  n_workers: 2\n  processes: false\n"
THRESHOLD_KEYS = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]


def imwrite(path, data, **kw):
    tifffile.imwrite(path, data, photometric="minisblack", **kw)


def blobs(shape, n, rng, fill=0.75):
    seeds = rng.random((n, len(shape))) * np.array(shape)
    grid = np.indices(shape).reshape(len(shape), -1).T
    lab = np.argmin(((grid[:, None, :] - seeds[None]) ** 2).sum(-1), 1) + 1
    lab[rng.random(len(lab)) > fill] = 0
    return lab.reshape(shape).astype(np.uint16)


def run(*args):
    result = CliRunner().invoke(cli, ["-q", "evaluate", *map(str, args)], catch_exceptions=False)
    return result


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(42)
    truth = blobs((5, 24, 24), 14, rng)
    pred = np.roll(truth, 1, axis=2)
    pred[pred == 3] = 0  # one missed nucleus
    imwrite(tmp_path / "truth.tif", truth)
    imwrite(tmp_path / "pred.tif", pred)
    return tmp_path / "truth.tif", tmp_path / "pred.tif", truth, pred


def test_writes_files_with_exact_keys(pair, tmp_path):
    truth_file, pred_file, truth, pred = pair
    out = tmp_path / "out"
    result = run("--truth", truth_file, "--pred", pred_file, "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, "volumes"])  # no scratch folder left
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["matching"]) == THRESHOLD_KEYS
    expected = match_thresholds(truth, pred)
    for key, record in summary["matching"].items():
        assert list(record) == list(SUMMARY_KEYS)
        assert record == expected[float(key)].summary()
    assert 0 < summary["evaluation_score"] < 1 and isinstance(summary["evaluation_score"], float)
    assert summary["n_true"] == len(np.unique(truth)) - 1 and "pixel_metrics" not in summary
    assert summary["provenance"]["stage"] == "evaluate"
    nuclei = pd.read_csv(out / "nuclei.csv")
    assert {"true_id", "volume", "matched_id", "iou", "full_dice", "sub_dice", "evaluation_score"} <= set(nuclei.columns)
    assert len(nuclei) == summary["n_true"]
    assert nuclei.loc[nuclei.true_id == 3, "matched_id"].item() == 0  # the dropped nucleus
    assert nuclei.evaluation_score.mean() == pytest.approx(summary["evaluation_score"])
    for name in ("metrics_vs_threshold.png", "score_histogram.png", "errors.png", "overlay.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    predicted = pd.read_csv(out / "predicted.csv")
    assert len(predicted) == summary["n_pred"] and set(predicted.status) <= {"tp", "fp"}
    assert (predicted.status == "tp").sum() == summary["matching"]["0.5"]["tp"] == (nuclei.status == "tp").sum()
    again = run("--truth", truth_file, "--pred", pred_file, "--out", out)  # the same settings: resumes
    assert again.exit_code == 0, again.output
    assert {k: v for k, v in json.loads((out / "summary.json").read_text()).items() if k != "provenance"} == {k: v for k, v in summary.items() if k != "provenance"}
    other = run("--truth", truth_file, "--pred", pred_file, "--out", out, "--threshold", "0.7")
    assert other.exit_code == 1 and "other settings (report_threshold differs)" in other.output and "pass --overwrite" in other.output
    assert run("--truth", truth_file, "--pred", pred_file, "--out", out, "--threshold", "0.7", "--overwrite").exit_code == 0


def test_semantic_masks_give_per_class_metrics(pair, tmp_path):
    truth_file, pred_file, truth, pred = pair
    sem_t, sem_p = np.clip(truth, 0, 2).astype(np.uint8), np.clip(pred, 0, 2).astype(np.uint8)
    imwrite(tmp_path / "st.tif", sem_t)
    imwrite(tmp_path / "sp.tif", sem_p)
    out = tmp_path / "out"
    result = run("--truth", truth_file, "--pred", pred_file, "--out", out, "--semantic-truth", tmp_path / "st.tif", "--semantic-pred", tmp_path / "sp.tif")
    assert result.exit_code == 0, result.output
    pixel = json.loads((out / "summary.json").read_text())["pixel_metrics"]
    assert list(pixel) == ["background", "edge", "nucleus"]
    for values in pixel.values():
        assert {"accuracy", "precision", "recall", "f1", "iou"} <= set(values)
    tp = int(((sem_t == 2) & (sem_p == 2)).sum())
    assert pixel["nucleus"]["precision"] == pytest.approx(tp / (sem_p == 2).sum())


def test_channels_averaged_as_table_7(tmp_path):
    """A TCZYX pair: one Evaluation Score per named channel, and their mean."""
    rng = np.random.default_rng(42)
    truth = np.stack([np.stack([blobs((3, 16, 16), 8, rng) for _ in range(3)])])  # T=1, C=3
    pred = truth.copy()
    pred[0, 1] = np.roll(pred[0, 1], 2, axis=-1)
    imwrite(tmp_path / "t.tif", truth, metadata={"axes": "TCZYX"})
    imwrite(tmp_path / "p.tif", pred, metadata={"axes": "TCZYX"})
    (tmp_path / "c.yaml").write_text("channel_names: [Cy3, GFP, Hoechst]\nplots:\n  enabled: false\n" + THREADS)
    out = tmp_path / "out"
    result = run("--truth", tmp_path / "t.tif", "--pred", tmp_path / "p.tif", "--out", out, "-c", tmp_path / "c.yaml", "-w", "2")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    per = summary["evaluation_score_per_channel"]
    assert list(per) == ["Cy3", "GFP", "Hoechst"]
    assert per["Cy3"] == pytest.approx(1.0) and per["Hoechst"] == pytest.approx(1.0) and per["GFP"] < 0.95
    assert summary["evaluation_score"] == pytest.approx(np.mean(list(per.values())))
    assert len(pd.read_csv(out / "per_image.csv")) == 3
    assert not (out / "overlay.png").exists()


def test_store_labels_all_fields_and_time_points(tmp_path):
    from pipeline.io.ngff import ImageMeta
    from pipeline.io.plate import Plate
    from pipeline.io.volumes import write_volume

    rng = np.random.default_rng(42)
    url = f"memory://evaluate-cli-{tmp_path.name}"
    plate = Plate.create(url)
    truths = []
    for well in ("B2", "C3"):
        field = plate.add_field(well, 0)
        for name in ("gt", "nuclei"):
            field.create_labels(name, (2, 1, 3, 16, 16), ImageMeta(channels=("nuclei",)), chunk_yx=(16, 16))
        for t in range(2):
            y = blobs((3, 16, 16), 6, rng).astype(np.uint32)
            write_volume(plate.location, field.label_path("gt") + "/0", t, 0, y)
            write_volume(plate.location, field.label_path("nuclei") + "/0", t, 0, np.roll(y, t, axis=1))
            truths.append(y)
    out = tmp_path / "out"
    result = run("--truth", url, "--pred", url, "--truth-labels", "gt", "--pred-labels", "nuclei", "--out", out)
    assert result.exit_code == 0, result.output
    images = pd.read_csv(out / "per_image.csv")
    assert images[["image", "t"]].values.tolist() == [["B2/0", 0], ["B2/0", 1], ["C3/0", 0], ["C3/0", 1]]
    assert images.loc[images.t == 0, "accuracy"].tolist() == [1.0, 1.0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 4 and summary["n_true"] == sum(len(np.unique(y)) - 1 for y in truths)
    assert summary["matching"]["0.5"]["tp"] == images.tp.sum()


@pytest.mark.parametrize("case", ["shape", "float", "negative", "empty", "missing", "threshold"])
def test_bad_input_one_line_error(pair, tmp_path, case):
    truth_file, pred_file, truth, _ = pair
    bad = tmp_path / "bad.tif"
    extra = []
    message = {
        "shape": r"has shape \(5, 24, 24\) but .*bad.tif has shape \(5, 24, 23\)",
        "float": "bad.tif: labels must be integers, got dtype float32",
        "negative": "bad.tif: labels must be non-negative, found -1",
        "empty": "bad.tif: not a readable TIFF file",
        "missing": "bad.tif: no such file, folder or store",
        "threshold": "report_threshold 0.55 must be one of thresholds",
    }[case]
    if case == "shape":
        imwrite(bad, truth[..., :-1])
    elif case == "float":
        imwrite(bad, truth.astype(np.float32))
    elif case == "negative":
        imwrite(bad, truth.astype(np.int16) - 1)
    elif case == "empty":
        bad.write_bytes(b"")
    elif case == "threshold":
        bad = pred_file
        extra = ["--threshold", "0.55"]
    out = tmp_path / "out"
    result = run("--truth", truth_file, "--pred", bad, "--out", out, *extra)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert pytest.importorskip("re").search(message, lines[0]), lines[0]
    assert not (out / "summary.json").exists() and not (out / "nuclei.csv").exists()


def test_bad_volume_inside_a_series_fails_on_the_cluster(tmp_path):
    """A negative label in one time point of a TZYX series: the worker's error reaches the user."""
    rng = np.random.default_rng(42)
    truth = np.stack([blobs((3, 12, 12), 5, rng).astype(np.int16) for _ in range(3)])
    pred = truth.copy()
    pred[2, 0, 0, 0] = -4
    imwrite(tmp_path / "t.tif", truth, metadata={"axes": "TZYX"})
    imwrite(tmp_path / "p.tif", pred, metadata={"axes": "TZYX"})
    (tmp_path / "c.yaml").write_text(THREADS)
    result = run("--truth", tmp_path / "t.tif", "--pred", tmp_path / "p.tif", "--out", tmp_path / "out", "-c", tmp_path / "c.yaml")
    assert result.exit_code == 1
    assert "error: " in result.output and "labels must be non-negative, found -4" in result.output and "t=2" in result.output
    assert not (tmp_path / "out" / "summary.json").exists()

"""The figures ``spheroid evaluate`` writes equal StarDist's, on perturbed real labels, at all nine thresholds.

The command itself runs (single files: the in-process path; folders: one Dask task per
volume, pooled), and every number of ``summary.json``, ``per_image.csv`` and
``matching.csv`` is compared with ``stardist.matching.matching`` (per volume, and a single
volume's pooled figures) and ``stardist.matching.matching_dataset`` (pooled over volumes).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from click.testing import CliRunner
from scipy import ndimage as ndi

from pipeline.cli.main import cli

sd = pytest.importorskip("stardist.matching", reason="stardist (the [test] extra) is the reference implementation")

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
KEYS = ("tp", "fp", "fn", "n_true", "n_pred", "precision", "recall", "accuracy", "f1", "mean_true_score", "mean_matched_score", "panoptic_quality")
TOL = 1e-9


def eroded(y, rng):
    return ndi.grey_erosion(y, size=3)  # the case of the issue: a grey erosion of size 3


def dilated(y, rng):
    return np.where(y > 0, y, ndi.grey_dilation(y, size=3))


def shifted(y, rng):
    return np.roll(y, (1, 3, -2), axis=(0, 1, 2))


def merged(y, rng):
    lut = np.arange(int(y.max()) + 1)
    lut[1:] = (lut[1:] + 1) // 2
    return lut[y]


def split(y, rng):
    xx = np.indices(y.shape)[-1]
    n = np.bincount(y.ravel(), minlength=int(y.max()) + 1)
    cx = np.bincount(y.ravel(), weights=xx.ravel(), minlength=len(n)) / np.maximum(n, 1)
    return np.where(y > 0, y.astype(np.int64) * 2 - (xx < cx[y]), 0)


def dropped(y, rng):
    ids = np.unique(y[y > 0])
    return np.where(np.isin(y, rng.choice(ids, size=len(ids) // 3, replace=False)), 0, y)


PERTURBATIONS = {"eroded": eroded, "dilated": dilated, "shifted": shifted, "merged": merged, "split": split, "dropped": dropped}


@pytest.fixture(scope="module")
def real_labels(shared_data):
    files = sorted((shared_data / "ovule-nuclei-3d").glob("*_label.tif")) + [shared_data / "embryo-nuclei-3d" / "8_cell_stage_label.tif"]
    files = [f for f in files if f.is_file()]
    if not files:
        pytest.skip(f"no real label volumes under {shared_data}")
    return {f.name.replace("_label.tif", ""): tifffile.imread(f).astype(np.int32) for f in files}


def run(*args):
    return CliRunner().invoke(cli, ["-q", "evaluate", *map(str, args)], catch_exceptions=False)


def assert_record(ours, ref, where: str) -> None:
    """Every StarDist figure the record holds (summary.json's leave out n_true and n_pred)."""
    keys = [k for k in KEYS if k in ours]
    assert len(keys) >= len(KEYS) - 2, where
    for key in keys:
        a, b = float(ours[key]), float(getattr(ref, key))
        assert abs(a - b) <= TOL, f"{where}: {key} ours {a!r} StarDist {b!r}"


@pytest.mark.slow
def test_single_files_equal_stardist_matching(real_labels, tmp_path):
    """One pair per perturbation of the ovule crop 1135 (the issue's case is the erosion)."""
    rng = np.random.default_rng(42)
    name = sorted(real_labels)[0]
    truth = real_labels[name]
    tifffile.imwrite(tmp_path / "truth.tif", truth.astype(np.uint16), photometric="minisblack")
    (tmp_path / "c.yaml").write_text("plots:\n  enabled: false\n")
    for kind, perturb in PERTURBATIONS.items():
        pred = perturb(truth, rng).astype(np.uint16)
        tifffile.imwrite(tmp_path / f"{kind}.tif", pred, photometric="minisblack")
        out = tmp_path / f"out-{kind}"
        result = run("--truth", tmp_path / "truth.tif", "--pred", tmp_path / f"{kind}.tif", "--out", out, "-c", tmp_path / "c.yaml")
        assert result.exit_code == 0, result.output
        refs = dict(zip(THRESHOLDS, sd.matching(truth, pred, thresh=THRESHOLDS)))
        summary = json.loads((out / "summary.json").read_text())
        for t in THRESHOLDS:
            assert_record(summary["matching"][str(t)], refs[t], f"{name} {kind} summary.json at {t}")
        rows = pd.read_csv(out / "matching.csv")
        assert len(rows) == 2 * len(THRESHOLDS)  # the volume's rows and the pooled ones
        for _, row in rows.iterrows():
            assert_record(row, refs[round(row.thresh, 6)], f"{name} {kind} matching.csv {row.image} at {row.thresh}")
        assert_record(pd.read_csv(out / "per_image.csv").iloc[0], refs[0.5], f"{name} {kind} per_image.csv")


@pytest.mark.slow
def test_folders_equal_stardist_per_volume_and_pooled(real_labels, tmp_path):
    """Every real volume with every perturbation: 24 volumes on the cluster, pooled as ``matching_dataset``."""
    rng = np.random.default_rng(7)
    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    pairs = {}
    for name, truth in real_labels.items():
        for kind, perturb in PERTURBATIONS.items():
            pred = perturb(truth, rng).astype(np.uint16)
            file = f"{name}-{kind}.tif"
            tifffile.imwrite(tmp_path / "t" / file, truth.astype(np.uint16), photometric="minisblack")
            tifffile.imwrite(tmp_path / "p" / file, pred, photometric="minisblack")
            pairs[file] = (truth, pred)
    (tmp_path / "c.yaml").write_text("cluster:\n  n_workers: 2\n  processes: false\nplots:\n  enabled: false\n")
    out = tmp_path / "out"
    result = run("--truth", tmp_path / "t", "--pred", tmp_path / "p", "--out", out, "-c", tmp_path / "c.yaml")
    assert result.exit_code == 0, result.output
    per_volume = {file: dict(zip(THRESHOLDS, sd.matching(t, p, thresh=THRESHOLDS))) for file, (t, p) in pairs.items()}
    files = sorted(pairs)  # the order the folder is read and pooled in
    pooled = dict(zip(THRESHOLDS, sd.matching_dataset([pairs[f][0] for f in files], [pairs[f][1] for f in files], thresh=THRESHOLDS, show_progress=False)))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == len(pairs)
    for t in THRESHOLDS:
        assert_record(summary["matching"][str(t)], pooled[t], f"summary.json at {t}")
    rows = pd.read_csv(out / "matching.csv")
    assert len(rows) == (len(pairs) + 1) * len(THRESHOLDS)
    for _, row in rows.iterrows():
        ref = pooled if row.image == "all" else per_volume[row.image]
        assert_record(row, ref[round(row.thresh, 6)], f"matching.csv {row.image} at {row.thresh}")
    images = pd.read_csv(out / "per_image.csv")
    assert images.image.tolist() == files
    for _, row in images.iterrows():
        assert_record(row, per_volume[row.image][0.5], f"per_image.csv {row.image}")

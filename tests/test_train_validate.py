"""Validation metrics: per-class pixel scores and instance matching of whole-volume predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from pipeline.config.train import LabelingConfig
from pipeline.train.data import Volume
from pipeline.train.validate import class_metrics, metric_names, tune_labeling, validate


class Oracle(torch.nn.Module):
    """Reads the class off the input (image = semantic map): a perfect 'network'."""

    def forward(self, x):
        classes = torch.arange(3, dtype=x.dtype).view(1, 3, 1, 1, 1)
        return -50.0 * (x - classes) ** 2


def volume_with_nuclei(shift: int = 0) -> Volume:
    inst = np.zeros((6, 40, 40), np.uint32)
    inst[1:5, 5:15, 5:15] = 1
    inst[1:5, 22:32, 20:30] = 2
    sem = np.where(inst > 0, 2, 0).astype(np.uint8)
    sem[ndi.binary_dilation(inst > 0) & (inst == 0)] = 1
    image = np.roll(sem, shift, axis=2).astype(np.float32)[None]
    return Volume("v", image, sem, inst, sem.shape, (5.0, 1.24, 1.24), "synthetic", "val", "Hoechst")


def test_class_metrics_by_hand():
    # truth rows, predicted columns: 6 background right, 2 edge predicted as background, ...
    conf = np.array([[6, 1, 0], [2, 2, 0], [0, 1, 4]])
    m = class_metrics(conf)
    assert m["precision_edge"] == pytest.approx(2 / 4) and m["recall_edge"] == pytest.approx(2 / 4)
    assert m["f1_nucleus"] == pytest.approx(8 / 9) and m["iou_nucleus"] == pytest.approx(4 / 5)
    assert m["mean_f1"] == pytest.approx((0.5 + 8 / 9) / 2)
    assert set(m) | {"loss"} | {k for k in metric_names() if k.startswith("match_")} == set(metric_names())


def test_validate_perfect_and_shifted():
    labeling = LabelingConfig(min_size=5, erode_xy=0, include_edge=False)
    perfect = validate(Oracle(), [volume_with_nuclei()], tile=(4, 16, 16), labeling=labeling)
    assert perfect["f1_edge"] == pytest.approx(1.0) and perfect["f1_nucleus"] == pytest.approx(1.0)
    assert perfect["match_f1"] == 1.0 and perfect["n_true"] == perfect["n_pred"] == 2
    shifted = validate(Oracle(), [volume_with_nuclei(shift=3)], tile=(4, 16, 16), labeling=labeling)
    assert shifted["f1_nucleus"] == pytest.approx(2 * 70 / (2 * 70 + 30 + 30), rel=0.05)  # 7 of 10 columns overlap
    assert shifted["match_f1"] == 1.0  # IoU 7/13 > 0.5: still matched
    far = validate(Oracle(), [volume_with_nuclei(shift=6)], tile=(4, 16, 16), labeling=labeling)
    assert far["match_f1"] == 0.0


def test_tune_labeling_keeps_a_perfect_setting_and_reports_all():
    labeling = LabelingConfig(min_size=5, erode_xy=0, include_edge=False)
    best, rows = tune_labeling(Oracle(), [volume_with_nuclei()], tile=(4, 16, 16), labeling=labeling, seed_thresholds=(0.5, 0.9), foreground_thresholds=(0.5,), z_trims=(0.0,), min_peaks=(0.0,))
    assert best == labeling  # the given setting is perfect already and comes first
    assert [(r["seeds"], r["seed_threshold"], r["foreground_threshold"]) for r in rows] == [
        ("interior", 0.5, 0.5), ("interior", 0.9, 0.5), ("maxima", 0.5, 0.5), ("maxima", 0.9, 0.5)]
    assert rows[0]["match_f1"] == 1.0 and rows[0]["n_pred"] == 2
    only, rows = tune_labeling(Oracle(), [volume_with_nuclei()], tile=(4, 16, 16), labeling=labeling, seed_thresholds=(0.5,),
                               foreground_thresholds=(0.5,), seed_modes=("interior",))
    assert [(r["seeds"], r["z_trim"], r["min_peak"]) for r in rows] == [
        ("interior", 0.0, 0.0), ("interior", 0.3, 0.0), ("interior", 0.5, 0.0), ("interior", 0.0, 0.4), ("interior", 0.0, 0.5), ("interior", 0.0, 0.6)]


def test_the_search_drops_unconfident_instances_where_that_pays():
    """A faint false blob (p(nucleus) 0.4, above the seed threshold) beside two true nuclei: the
    search's second stage keeps only instances that reach p(nucleus) 0.5."""
    from pipeline.train.validate import choose_labeling

    vol = volume_with_nuclei()
    probs = np.stack([(vol.semantic == c).astype(np.float32) for c in range(3)])
    probs[:, 1:3, 34:38, 3:7] = np.array([0.3, 0.3, 0.4], np.float32)[:, None, None, None]  # the faint blob
    truth = vol.instances[: vol.shape[0], : vol.shape[1], : vol.shape[2]]
    assert not truth[1:3, 34:38, 3:7].any()
    labeling = LabelingConfig(min_size=5, erode_xy=0, include_edge=False, seeds="maxima", seed_threshold=0.2, foreground_threshold=0.4)
    best, rows = choose_labeling([(probs, truth)], labeling, seed_thresholds=(0.2,), foreground_thresholds=(0.4,), seed_modes=("maxima",), z_trims=(0.0,))
    assert best.min_peak == 0.5 and rows[0]["match_f1"] < 1.0 and max(r["match_f1"] for r in rows) == 1.0

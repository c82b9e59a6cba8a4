"""The thesis' Evaluation Score, CTC SEG, pixel metrics, label sources and pooling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from pipeline.config.evaluate import EvaluateConfig
from pipeline.errors import InputError
from pipeline.evaluate.matching import matching
from pipeline.evaluate.overlap import label_overlap
from pipeline.evaluate.pixel import confusion_matrix, metrics_from_confusion, pixel_metrics
from pipeline.evaluate.run import pool_results, run_evaluation
from pipeline.evaluate.score import (
    ScoreWeights,
    box_sums,
    bounding_boxes,
    channel_scores,
    ctc_jaccard,
    ctc_seg,
    evaluation_score,
    nucleus_scores,
)
from pipeline.evaluate.sources import pair_sources
from pipeline.evaluate.task import evaluate_item, evaluate_pair


def imwrite(path, data):
    """Write a label TIFF as grey pages (never as RGB planes)."""
    tifffile.imwrite(path, data, photometric="minisblack")


def blobs(shape, n, rng, fill=0.75):
    """Random touching objects (a Voronoi tessellation) with some background."""
    seeds = rng.random((n, len(shape))) * np.array(shape)
    grid = np.indices(shape).reshape(len(shape), -1).T
    lab = np.argmin(((grid[:, None, :] - seeds[None]) ** 2).sum(-1), 1) + 1
    lab[rng.random(len(lab)) > fill] = 0
    return lab.reshape(shape).astype(np.int32)


def cube(shape, lo, hi, value=1, out=None):
    out = np.zeros(shape, np.int32) if out is None else out
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = value
    return out


# -- Evaluation Score (thesis Eq. 9) ----------------------------------------------------------
def test_perfect_prediction_scores_one():
    y = blobs((6, 20, 20), 12, np.random.default_rng(42))
    rows = nucleus_scores(y, y * 3)
    assert np.all(rows.full_dice == 1.0) and np.all(rows.sub_dice == 1.0)
    assert np.allclose(rows.evaluation_score, 1.0)
    assert np.all(rows.best_pred_id == rows.true_id * 3)


def test_split_nucleus_hand_computed():
    """A 4x4x4 nucleus predicted as two halves: full Dice 2*32/(64+32), sub-region Dice 1."""
    t = cube((6, 6, 6), (1, 1, 1), (5, 5, 5), 9)
    p = cube((6, 6, 6), (1, 1, 1), (5, 5, 3), 4)
    p = cube((6, 6, 6), (1, 1, 3), (5, 5, 5), 2, out=p)
    row = nucleus_scores(t, p).iloc[0]
    assert row.true_id == 9 and row.volume == 64
    assert row.best_pred_id == 2  # equal overlap and Dice: the smaller id
    assert row.full_dice == pytest.approx(2 / 3)
    assert row.sub_dice == 1.0
    assert row.evaluation_score == pytest.approx((0.95 * 1.0 + 1.05 * 2 / 3) / 2)


def test_merged_nuclei_hand_computed():
    """Two touching 2x2x2 nuclei predicted as one: full Dice 2*8/(8+16) each, sub-region Dice 1."""
    t = cube((4, 4, 6), (1, 1, 1), (3, 3, 3), 1)
    t = cube((4, 4, 6), (1, 1, 3), (3, 3, 5), 2, out=t)
    p = (t > 0).astype(np.uint8) * 5
    rows = nucleus_scores(t, p)
    assert rows.full_dice.tolist() == pytest.approx([2 / 3, 2 / 3])
    assert rows.sub_dice.tolist() == [1.0, 1.0]
    assert rows.best_pred_id.tolist() == [5, 5]


def test_sub_region_counts_prediction_inside_the_box():
    """An L-shaped nucleus (3 of 4 pixels of its box) against a prediction filling the box:
    sub-region Dice 2*3/(3+4); a prediction outside the box does not count."""
    t = np.zeros((1, 5, 6), np.int32)
    t[0, 1, 1] = t[0, 2, 1] = t[0, 2, 2] = 3
    p = np.zeros_like(t)
    p[0, 1:3, 1:3] = 1
    p[0, 4, 4:6] = 2  # far away: outside the box
    row = nucleus_scores(t, p).iloc[0]
    assert row.sub_dice == pytest.approx(6 / 7)
    assert row.full_dice == pytest.approx(6 / 7)
    assert row.evaluation_score == pytest.approx((0.95 + 1.05) * (6 / 7) / 2)


def test_sub_region_truth_foreground_or_nucleus():
    """Touching nuclei 1 (L-shape) and 2, perfectly predicted. Nucleus 1's 2x2 box holds 3 of
    its pixels and 1 of nucleus 2: foreground reading 2*4/(4+4) = 1, nucleus reading 2*3/(3+4)."""
    t = np.zeros((1, 3, 3), np.int32)
    t[0, 0, 0] = t[0, 1, 0] = t[0, 1, 1] = 1
    t[0, 0, 1] = t[0, 0, 2] = 2
    fg = nucleus_scores(t, t).set_index("true_id")
    assert fg.sub_dice.tolist() == [1.0, 1.0]
    nucleus = nucleus_scores(t, t, weights=ScoreWeights(sub_region="nucleus")).set_index("true_id")
    assert nucleus.loc[1, "sub_dice"] == pytest.approx(6 / 7)
    assert nucleus.loc[2, "sub_dice"] == 1.0  # its 1x2 box holds only itself
    assert nucleus.full_dice.tolist() == [1.0, 1.0]


def test_missed_nucleus_scores_zero_and_weights_apply():
    t = cube((3, 8, 8), (0, 1, 1), (2, 4, 4), 1)
    t = cube((3, 8, 8), (0, 5, 5), (2, 8, 8), 2, out=t)
    p = np.where(t == 1, 7, 0)
    rows = nucleus_scores(t, p, weights=ScoreWeights(sub=1.0, full=0.0))
    assert rows.full_dice.tolist() == [1.0, 0.0] and rows.best_pred_id.tolist() == [7, 0]
    assert rows.evaluation_score.tolist() == [0.5, 0.0]
    assert evaluation_score(0.8, 0.6) == pytest.approx((0.95 * 0.8 + 1.05 * 0.6) / 2)


@pytest.mark.parametrize("sub_region", ["foreground", "nucleus"])
def test_scores_equal_brute_force_loop(sub_region):
    """The vectorised full and sub-region Dice equal a plain per-nucleus loop."""
    rng = np.random.default_rng(42)
    t = blobs((6, 18, 18), 14, rng)
    p = np.roll(blobs((6, 18, 18), 10, rng), 2, axis=2)
    rows = nucleus_scores(t, p, weights=ScoreWeights(sub_region=sub_region)).set_index("true_id")
    for tid in np.unique(t[t > 0]):
        mask = t == tid
        ids, counts = np.unique(p[mask & (p > 0)], return_counts=True)
        full = 0.0
        if len(ids):
            dice = 2 * counts / (mask.sum() + np.array([(p == i).sum() for i in ids]))
            best = max(range(len(ids)), key=lambda k: (counts[k], dice[k], -ids[k]))
            full = dice[best]
        zz, yy, xx = np.nonzero(mask)
        box = (slice(zz.min(), zz.max() + 1), slice(yy.min(), yy.max() + 1), slice(xx.min(), xx.max() + 1))
        truth = mask[box] if sub_region == "nucleus" else t[box] > 0
        sub = 2 * (truth & (p[box] > 0)).sum() / (truth.sum() + (p[box] > 0).sum())
        assert rows.loc[tid, "full_dice"] == pytest.approx(full)
        assert rows.loc[tid, "sub_dice"] == pytest.approx(sub)


@pytest.mark.parametrize("shape", [(9, 13), (5, 7, 8)])
def test_box_sums_equal_slicing(shape):
    rng = np.random.default_rng(42)
    mask = rng.random(shape) > 0.6
    lo = np.stack([rng.integers(0, s, 20) for s in shape], 1)
    hi = np.stack([rng.integers(l + 1, s + 1) for l, s in zip(lo.T, shape)], 1)
    boxes = np.stack([lo, hi], 1)
    expected = [mask[tuple(slice(a, b) for a, b in zip(l, h))].sum() for l, h in zip(lo, hi)]
    assert box_sums(mask, boxes).tolist() == expected


def test_bounding_boxes_of_missing_labels_are_empty():
    lab = np.zeros((4, 4), np.int32)
    lab[1:3, 2:4] = 2
    boxes = bounding_boxes(lab, 3)
    assert boxes[1].tolist() == [[1, 2], [3, 4]]
    assert boxes[0].tolist() == boxes[2].tolist() == [[0, 0], [0, 0]]


def test_matched_columns_follow_the_report_threshold():
    t = cube((1, 10, 30), (0, 0, 0), (1, 10, 10), 1)
    t = cube((1, 10, 30), (0, 0, 15), (1, 10, 25), 2, out=t)
    p = np.roll(t, 4, axis=2) * 10  # IoU 6/14 each
    m = matching(t, p, 0.4, report_matches=True)
    rows = nucleus_scores(t, p, match=m)
    assert rows.matched_id.tolist() == [10, 20] and rows.iou.tolist() == pytest.approx([6 / 14, 6 / 14])
    rows = nucleus_scores(t, p, match=matching(t, p, 0.5, report_matches=True))
    assert rows.matched_id.tolist() == [0, 0] and rows.iou.tolist() == [0.0, 0.0]


def test_channel_average_as_thesis_table_7():
    """Channel means first, then their mean: StarDistResnet's 0.608 / 0.896 / 0.826 give 0.7767."""
    nuclei = pd.DataFrame(
        {
            "channel": ["Cy3"] * 2 + ["GFP"] * 3 + ["Hoechst"],
            "evaluation_score": [0.5, 0.716, 0.896, 0.8, 0.992, 0.826],
        }
    )
    mean, per = channel_scores(nuclei)
    assert per == pytest.approx({"Cy3": 0.608, "GFP": 0.896, "Hoechst": 0.826})
    assert mean == pytest.approx((0.608 + 0.896 + 0.826) / 3)
    assert mean != pytest.approx(nuclei.evaluation_score.mean())
    assert channel_scores(nuclei.iloc[:0]) == (0.0, {})


# -- CTC SEG -------------------------------------------------------------------------------------
def test_ctc_seg_hand_computed():
    t = np.zeros((1, 2, 20), np.int32)
    t[0, :, 0:5] = 1  # 10 px
    t[0, :, 10:15] = 2  # 10 px
    p = np.zeros_like(t)
    p[0, :, 2:6] = 4  # covers 6 of object 1 (> half), area 8: Jaccard 6 / 12
    p[0, :, 10:12] = 5
    p[0, 0, 12] = 5  # covers exactly 5 of object 2: not more than half
    assert ctc_jaccard(label_overlap(t, p)).tolist() == [0.5, 0.0]
    assert ctc_seg(t, p) == 0.25
    assert ctc_seg(t, t) == 1.0 and ctc_seg(np.zeros_like(t), p) == 0.0


def test_ctc_seg_equal_brute_force():
    rng = np.random.default_rng(42)
    t, p = blobs((5, 16, 16), 12, rng), blobs((5, 16, 16), 9, rng)
    expected = []
    for tid in np.unique(t[t > 0]):
        mask = t == tid
        ids, counts = np.unique(p[mask], return_counts=True)
        hit = [(i, c) for i, c in zip(ids, counts) if i > 0 and c > mask.sum() / 2]
        expected.append(hit[0][1] / (mask | (p == hit[0][0])).sum() if hit else 0.0)
    assert ctc_seg(t, p) == pytest.approx(np.mean(expected))


# -- pixel metrics ---------------------------------------------------------------------------
def test_pixel_metrics_hand_computed_confusion():
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    cm = confusion_matrix(truth, pred)
    assert cm.tolist() == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
    m = pixel_metrics(truth, pred)
    assert m["edge"] == {"accuracy": 0.8, "precision": 0.5, "recall": 0.5, "f1": 0.5, "iou": 1 / 3, "support_true": 2, "support_pred": 2}
    assert m["background"]["precision"] == 0.75 and m["background"]["recall"] == 0.75
    assert m["nucleus"]["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1)) and m["nucleus"]["accuracy"] == 0.8
    assert set(m) == {"background", "edge", "nucleus"}  # per class only, no overall accuracy


def test_pixel_metrics_absent_class_is_zero_without_warning():
    m = pixel_metrics(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
    assert m["edge"]["f1"] == 0.0 and m["edge"]["support_true"] == m["edge"]["support_pred"] == 0
    assert m["background"]["f1"] == 1.0
    pooled = metrics_from_confusion(confusion_matrix([0, 1], [0, 1]) + confusion_matrix([2, 2], [2, 0]))
    assert pooled["nucleus"]["recall"] == 0.5


@pytest.mark.parametrize(
    ("truth", "pred", "message"),
    [
        (np.zeros(4, np.int32), np.zeros(5, np.int32), "shape"),
        (np.zeros(4, np.float32), np.zeros(4, np.int32), "integers"),
        (np.array([0, 1, 3]), np.array([0, 1, 2]), r"0\.\.2, found 0\.\.3"),
        (np.array([0, 1, 2]), np.array([0, -1, 2]), r"found -1\.\.2"),
    ],
)
def test_pixel_metrics_bad_input(truth, pred, message):
    with pytest.raises(InputError, match=message):
        pixel_metrics(truth, pred)


# -- merges, splits, overlay categories -----------------------------------------------------------
def test_merges_and_splits_hand_computed():
    """Nuclei 1, 2 merged into prediction 7; nucleus 3 cut into 8 and 9; nucleus 4 missed; 6 a false positive."""
    t = np.zeros((1, 4, 40), np.int32)
    t[0, :, 0:4], t[0, :, 5:9], t[0, :, 12:20], t[0, :, 24:28] = 1, 2, 3, 4
    p = np.zeros_like(t)
    p[0, :, 0:9] = 7
    p[0, :, 12:16], p[0, :, 16:20] = 8, 9
    p[0, :, 32:36] = 6
    out = evaluate_pair(t, p, EvaluateConfig())
    nuclei = out["nuclei"].set_index("true_id")
    assert nuclei.status.tolist() == ["fn", "fn", "tp", "fn"]  # 7 holds 1 and 2 at IoU 4/9 each; half 8 of 3 has IoU 1/2
    assert nuclei.merged.tolist() == [True, True, False, False] and nuclei.split.tolist() == [False, False, True, False]
    pred = out["predicted"].set_index("pred_id")
    assert pred.loc[7, "merge"] and not pred.loc[7, "fragment"]
    assert pred.loc[[8, 9], "fragment"].all() and not pred.loc[[8, 9], "merge"].any()
    assert not pred.loc[6, "merge"] and not pred.loc[6, "fragment"] and pred.loc[6, "status"] == "fp"
    assert nuclei.z.tolist() == [0.0] * 4


def test_split_half_still_matches_at_lower_threshold():
    t = np.zeros((2, 4, 20), np.int32)
    t[:, :, 2:14] = 5
    p = np.zeros_like(t)
    p[:, :, 2:9], p[:, :, 9:14] = 1, 2  # 7/12 of the nucleus: IoU 0.583
    out = evaluate_pair(t, p, EvaluateConfig(report_threshold=0.5))
    row = out["nuclei"].iloc[0]
    assert row.status == "tp" and row.matched_id == 1 and row.split and not row.merged
    pred = out["predicted"].set_index("pred_id")
    assert pred.status.tolist() == ["tp", "fp"] and pred.fragment.all()
    assert pred.loc[1, "iou"] == pytest.approx(7 / 12) and pred.loc[1, "matched_id"] == 5


def test_centroid_depth_and_f1_bins():
    from pipeline.evaluate.failures import centroid_z, f1_by_bin

    y = np.zeros((6, 3, 3), np.int64)
    y[1:4, 0, 0] = 7  # z 1, 2, 3: centroid 2
    y[5, 1, 1] = 2**40  # a huge id: no table that large
    ids, areas = np.array([7, 2**40]), np.array([3, 1])
    assert centroid_z(y, ids, areas).tolist() == [2.0, 5.0]
    binned = f1_by_bin(np.array([0.5, 1.5]), np.array([1.2]), np.array([0.1, 9.0]), np.array([0.0, 1.0, 2.0]))
    assert binned["tp"].tolist() == [1, 1] and binned["fn"].tolist() == [0, 1] and binned["fp"].tolist() == [1, 1]
    assert binned["f1"].tolist() == pytest.approx([2 / 3, 2 / 4])


def test_overlay_object_categories_and_render():
    from pipeline.evaluate.overlay import CATEGORIES, object_categories, render_slice

    cat = object_categories(np.array([1, 2, 3, 4]), np.array(["tp", "fp", "tp", "fp"]), np.array([0, 0, 1, 0]), np.array([0, 1, 0, 0]), truth=False)
    assert cat.tolist() == [1, 4, 3, 2]
    assert object_categories(np.array([1, 2]), np.array(["tp", "fn"]), None, None, truth=True).tolist() == [5, 6]
    truth = np.zeros((60, 60), np.int32)
    truth[10:30, 10:30] = 1
    truth[40:50, 40:50] = 2  # missed
    pred = np.zeros_like(truth)
    pred[12:30, 10:30] = 9
    rgb = render_slice(None, truth, pred, (np.array([1, 2]), np.array([5, 6], np.uint8)), (np.array([9]), np.array([1], np.uint8)))
    k = rgb.shape[0] // 60
    assert k >= 2 and rgb.shape == (60 * k, 60 * k, 3)
    assert np.allclose(rgb[12 * k, 20 * k], CATEGORIES[1][1])  # the prediction's top edge, green
    assert np.allclose(rgb[10 * k, 20 * k], CATEGORIES[5][1])  # the truth's edge above it, white
    assert np.allclose(rgb[45 * k, 45 * k], 0.35 * np.array(CATEGORIES[6][1]))  # the missed nucleus, tinted on black


# -- sources ---------------------------------------------------------------------------------
def test_tiff_axes_by_dimension(tmp_path):
    rng = np.random.default_rng(42)
    series = np.stack([blobs((4, 12, 12), 5, rng) for _ in range(3)])  # T Z Y X
    imwrite(tmp_path / "t.tif", series)
    imwrite(tmp_path / "p.tif", np.roll(series, 1, axis=-1))
    items = pair_sources(str(tmp_path / "t.tif"), str(tmp_path / "p.tif"))
    assert [it.key for it in items] == [("t.tif", "c0", t) for t in range(3)]
    np.testing.assert_array_equal(items[2].truth.load(), series[2])
    np.testing.assert_array_equal(items[2].pred.load(), np.roll(series[2], 1, axis=-1))


def test_folder_pairing_and_errors(tmp_path):
    rng = np.random.default_rng(42)
    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    for name in ("a.tif", "b.tif"):
        imwrite(tmp_path / "t" / name, blobs((3, 10, 10), 4, rng))
    imwrite(tmp_path / "p" / "a.tif", blobs((3, 10, 10), 4, rng))
    with pytest.raises(InputError, match=r"no prediction for 1 ground-truth volume\(s\), first: b.tif"):
        pair_sources(str(tmp_path / "t"), str(tmp_path / "p"))
    imwrite(tmp_path / "p" / "b.tif", blobs((3, 10, 11), 4, rng))
    with pytest.raises(InputError, match=r"b.tif has shape \(3, 10, 10\) but .*b.tif has shape \(3, 10, 11\)"):
        pair_sources(str(tmp_path / "t"), str(tmp_path / "p"))
    with pytest.raises(InputError, match="no such file, folder or store"):
        pair_sources(str(tmp_path / "missing"), str(tmp_path / "p"))


def test_bad_label_files(tmp_path):
    good = tmp_path / "good.tif"
    imwrite(good, np.zeros((2, 8, 8), np.uint16))
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    imwrite(tmp_path / "float.tif", np.zeros((2, 8, 8), np.float32))
    for name, message in (("empty.tif", "not a readable TIFF"), ("junk.tif", "not a readable TIFF"), ("float.tif", "labels must be integers, got dtype float32")):
        with pytest.raises(InputError, match=message) as info:
            pair_sources(str(good), str(tmp_path / name))
        assert name in str(info.value) and "\n" not in str(info.value)


def test_store_sources_use_done_volumes():
    from pipeline.io.ngff import ImageMeta
    from pipeline.io.plate import Plate
    from pipeline.io.volumes import write_volume

    rng = np.random.default_rng(42)
    plate = Plate.create("memory://evaluate-sources", name="x")
    field = plate.add_field("B2", 0)
    meta = ImageMeta(channels=("nuclei",))
    for name in ("gt", "nuclei"):
        field.create_labels(name, (3, 1, 2, 12, 12), meta, chunk_yx=(12, 12))
    data = np.stack([blobs((2, 12, 12), 4, rng) for _ in range(3)])
    for t in range(3):
        write_volume(plate.location, field.label_path("nuclei") + "/0", t, 0, data[t].astype(np.uint32))
        if t != 1:  # t = 1 not annotated: left out
            write_volume(plate.location, field.label_path("gt") + "/0", t, 0, data[t].astype(np.uint32))
    items = pair_sources("memory://evaluate-sources", "memory://evaluate-sources", truth_labels="gt", pred_labels="nuclei")
    assert [it.key for it in items] == [("B2/0", "c0", 0), ("B2/0", "c0", 2)]
    np.testing.assert_array_equal(items[1].truth.load(), data[2])
    with pytest.raises(InputError, match="no field holds labels/absent"):
        pair_sources("memory://evaluate-sources", "memory://evaluate-sources", truth_labels="absent")


# -- pooling over volumes --------------------------------------------------------------------
def _folder_pair(tmp_path, n=3, seed=42):
    rng = np.random.default_rng(seed)
    for side in ("t", "p"):
        (tmp_path / side).mkdir()
    truths, preds = [], []
    for i in range(n):
        t = blobs((4, 16, 16), 8, rng)
        p = np.roll(t, i, axis=2) if i else np.zeros_like(t)
        imwrite(tmp_path / "t" / f"v{i}.tif", t)
        imwrite(tmp_path / "p" / f"v{i}.tif", p)
        truths.append(t)
        preds.append(p)
    return truths, preds


def test_pooled_is_micro_average_and_dask_equals_in_process(tmp_path, dask_client):
    from pipeline.evaluate.matching import matching_dataset

    truths, preds = _folder_pair(tmp_path)
    config = EvaluateConfig()
    items = pair_sources(str(tmp_path / "t"), str(tmp_path / "p"))
    local = pool_results([evaluate_item(item, config.model_dump(mode="json")) for item in items], config)
    remote = run_evaluation(items, config, client=dask_client, progress=False)
    assert local.summary == remote.summary
    pd.testing.assert_frame_equal(local.nuclei, remote.nuclei)
    expected = matching_dataset(truths, preds, config.thresholds)
    for t in config.thresholds:
        assert local.pooled[t] == expected[t]
        assert local.pooled[t].tp == sum(m[t].tp for m in local.per_image)
    assert len(local.images) == 3 and local.images.tp.iloc[0] == 0  # the empty prediction
    assert len(local.nuclei) == sum(len(np.unique(t)) - 1 for t in truths)


def test_pool_results_pixel_metrics_and_channels():
    rng = np.random.default_rng(42)
    config = EvaluateConfig()
    results = []
    for i, channel in enumerate(("Cy3", "GFP")):
        t = blobs((3, 12, 12), 6, rng)
        out = evaluate_pair(t, np.roll(t, i, axis=1), config)
        sem = np.clip(t, 0, 2)
        results.append(
            {
                "image": "x", "channel": channel, "t": 0,
                "matching": {k: m.as_dict() for k, m in out["matching"].items()},
                "nuclei": out["nuclei"].to_dict("list"),
                "predicted": out["predicted"].to_dict("list"),
                "confusion": confusion_matrix(sem, np.roll(sem, i, axis=2)).tolist(),
            }
        )  # fmt: skip
    ev = pool_results(results, config)
    assert ev.summary["evaluation_score_per_channel"]["Cy3"] == pytest.approx(1.0)
    assert ev.summary["evaluation_score"] == pytest.approx(np.mean(list(ev.summary["evaluation_score_per_channel"].values())))
    cm = np.asarray(results[0]["confusion"]) + np.asarray(results[1]["confusion"])
    assert ev.summary["pixel_metrics"] == metrics_from_confusion(cm)
    assert set(ev.images.columns) >= {"nucleus_f1", "edge_iou", "evaluation_score", "ctc_seg"}

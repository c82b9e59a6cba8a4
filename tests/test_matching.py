"""Instance matching: equal to StarDist's ``matching`` on real and perturbed labels, and its invariants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from pipeline.errors import InputError
from pipeline.evaluate.matching import DEFAULT_THRESHOLDS, match_thresholds, matching, matching_dataset, pool
from pipeline.evaluate.overlap import label_overlap

sd = pytest.importorskip("stardist.matching", reason="stardist (the [test] extra) is the reference implementation")

FIELDS = (
    "criterion", "thresh", "fp", "tp", "fn", "precision", "recall", "accuracy", "f1",
    "n_true", "n_pred", "mean_true_score", "mean_matched_score", "panoptic_quality",
)  # fmt: skip
THRESHOLDS = (0.0, *DEFAULT_THRESHOLDS)


def assert_same(ours, ref, tol=1e-9):
    """Every StarDist field equal (counts exactly, ratios to ``tol``)."""
    ref = ref._asdict()
    for key in FIELDS:
        a, b = getattr(ours, key), ref[key]
        if isinstance(b, str):
            assert a == b, key
        else:
            assert abs(float(a) - float(b)) <= tol, f"{key}: ours {a!r} stardist {b!r} (thresh {ref['thresh']})"


def compare_all(y_true, y_pred, criterion="iou"):
    ours = match_thresholds(y_true, y_pred, THRESHOLDS, criterion)
    refs = sd.matching(y_true, y_pred, thresh=THRESHOLDS, criterion=criterion)
    for thr, ref in zip(THRESHOLDS, refs):
        assert_same(ours[thr], ref)
    return ours


# -- perturbations of a label image ---------------------------------------------------------------
def eroded(y):
    keep = (ndi.minimum_filter(y, size=3) == y) & (ndi.maximum_filter(y, size=3) == y)
    return np.where(keep, y, 0).astype(y.dtype)


def dilated(y):
    grown = ndi.grey_dilation(y, size=3)
    return np.where(y > 0, y, grown).astype(y.dtype)


def shifted(y):
    return np.roll(y, (1, 3, -2)[: y.ndim], axis=tuple(range(y.ndim)))


def merged(y):
    """Pairs of neighbouring ids become one object."""
    lut = np.arange(int(y.max()) + 1)
    lut[1:] = (lut[1:] + 1) // 2
    return lut[y].astype(y.dtype)


def split(y):
    """Every object cut in two along x at its centroid."""
    xx = np.indices(y.shape)[-1]
    n = np.bincount(y.ravel(), minlength=int(y.max()) + 1)
    cx = np.bincount(y.ravel(), weights=xx.ravel(), minlength=len(n)) / np.maximum(n, 1)
    out = y.astype(np.int64) * 2 - (xx < cx[y])
    return np.where(y > 0, out, 0).astype(np.int32)


def dropped(y, rng):
    ids = np.unique(y[y > 0])
    gone = rng.choice(ids, size=len(ids) // 3, replace=False)
    return np.where(np.isin(y, gone), 0, y).astype(y.dtype)


def permuted(y, rng):
    ids = np.unique(y[y > 0])
    lut = np.zeros(int(y.max()) + 1, np.int64)
    lut[ids] = rng.permutation(np.arange(1000, 1000 + 7 * len(ids), 7))[: len(ids)]
    return lut[y].astype(np.int32)


def voronoi(shape, n, rng, fill=0.7):
    """Random touching objects: a Voronoi tessellation with some background."""
    seeds = rng.random((n, len(shape))) * np.array(shape)
    grid = np.indices(shape).reshape(len(shape), -1).T
    dist = ((grid[:, None, :] - seeds[None]) ** 2).sum(-1)
    lab = np.argmin(dist, 1) + 1
    lab[rng.random(len(lab)) > fill] = 0
    return lab.reshape(shape).astype(np.int32)


def real_labels(shared_data):
    files = sorted((shared_data / "ovule-nuclei-3d").glob("*_label.tif")) + [shared_data / "embryo-nuclei-3d" / "8_cell_stage_label.tif"]
    return [f for f in files if f.is_file()]


@pytest.fixture(scope="module")
def stardist_mask3d():
    import stardist

    path = Path(stardist.__file__).parent / "data" / "images" / "mask3d.tif"
    if not path.is_file():
        pytest.skip(f"stardist's sample {path} is not installed")
    import tifffile

    return tifffile.imread(path)


# -- against StarDist -----------------------------------------------------------------------------
@pytest.mark.parametrize("perturb", ["same", "eroded", "dilated", "shifted", "merged", "split", "dropped", "permuted"])
def test_equal_to_stardist_on_real_labels(shared_data, perturb):
    import tifffile

    rng = np.random.default_rng(42)
    files = real_labels(shared_data)
    assert files, f"no *_label.tif under {shared_data}"
    for path in files:
        y = tifffile.imread(path)
        pred = {
            "same": lambda a: a.copy(),
            "eroded": eroded,
            "dilated": dilated,
            "shifted": shifted,
            "merged": merged,
            "split": split,
            "dropped": lambda a: dropped(a, rng),
            "permuted": lambda a: permuted(a, rng),
        }[perturb](y)
        compare_all(y, pred)
        compare_all(pred, y)


def test_equal_to_stardist_on_its_sample(stardist_mask3d):
    y = stardist_mask3d
    for pred in (shifted(y), merged(split(y)), dilated(eroded(y))):
        compare_all(y, pred)
        compare_all(y, pred, criterion="iot")
        compare_all(y, pred, criterion="iop")


@pytest.mark.parametrize("ndim", [2, 3])
def test_equal_to_stardist_with_many_conflicts(ndim):
    """Two unrelated tessellations: low thresholds give many competing candidate pairs."""
    rng = np.random.default_rng(42)
    shape = (40, 40) if ndim == 2 else (8, 24, 24)
    for _ in range(4):
        a, b = voronoi(shape, 30, rng), voronoi(shape, 22, rng)
        ours = compare_all(a, b)
        assert ours[0.1].tp > 0
        compare_all(a, b, criterion="iot")


def test_matching_dataset_equal_to_stardist():
    rng = np.random.default_rng(42)
    trues = [voronoi((30, 30), 12, rng) for _ in range(4)]
    preds = [shifted(t) if i % 2 else dilated(t) for i, t in enumerate(trues)]
    preds[2] = np.zeros_like(preds[2])
    for by_image in (False, True):
        ours = matching_dataset(trues, preds, DEFAULT_THRESHOLDS, by_image=by_image)
        refs = sd.matching_dataset(trues, preds, thresh=DEFAULT_THRESHOLDS, by_image=by_image, show_progress=False)
        for thr, ref in zip(DEFAULT_THRESHOLDS, refs):
            assert_same(ours[thr], ref)
    single = matching_dataset(trues, preds, 0.5)
    assert single.thresh == 0.5 and single.n_true == sum(int(t.max() > 0) and len(np.unique(t)) - 1 for t in trues)


# -- invariants -----------------------------------------------------------------------------------
def test_identical_inputs_score_one():
    y = voronoi((20, 30, 30), 25, np.random.default_rng(42))
    for m in match_thresholds(y, y).values():
        assert (m.tp, m.fp, m.fn) == (m.n_true, 0, 0)
        for key in ("precision", "recall", "accuracy", "f1", "mean_true_score", "mean_matched_score", "panoptic_quality"):
            assert getattr(m, key) == 1.0


@pytest.mark.parametrize("which", ["pred", "true", "both"])
def test_empty_scores_zero_without_warnings(which):
    y = voronoi((6, 20, 20), 10, np.random.default_rng(42))
    empty = np.zeros_like(y)
    y_true, y_pred = (y, empty) if which == "pred" else (empty, y) if which == "true" else (empty, empty)
    for m in match_thresholds(y_true, y_pred).values():  # filterwarnings=error: no division warnings
        assert m.tp == 0 and m.fp == int(y_pred.max() > 0) * m.n_pred and m.fn == m.n_true
        assert m.precision == m.recall == m.accuracy == m.f1 == m.panoptic_quality == m.mean_true_score == 0.0
    assert_same(matching(y_true, y_pred), sd.matching(y_true, y_pred))


def test_permuted_ids_change_nothing():
    rng = np.random.default_rng(42)
    y = voronoi((10, 30, 30), 40, rng)
    pred = shifted(dilated(y))
    base = match_thresholds(y, pred, report_matches=True)
    perm_t, perm_p = permuted(y, rng), permuted(pred, rng)
    again = match_thresholds(perm_t, perm_p, report_matches=True)
    for thr, m in base.items():
        other = again[thr]
        assert (other.tp, other.fp, other.fn, other.n_true, other.n_pred) == (m.tp, m.fp, m.fn, m.n_true, m.n_pred)
        # the same pairs, renamed, with bit-identical scores; only the float32 sum order may differ
        rename_t = {int(a): int(b) for a, b in zip(y.ravel(), perm_t.ravel())}
        rename_p = {int(a): int(b) for a, b in zip(pred.ravel(), perm_p.ravel())}
        assert sorted(zip(((rename_t[a], rename_p[b]) for a, b in m.matched_pairs), m.matched_scores)) == sorted(
            zip(other.matched_pairs, other.matched_scores)
        )
        for key in ("mean_true_score", "mean_matched_score", "panoptic_quality"):
            assert getattr(other, key) == pytest.approx(getattr(m, key), abs=1e-6)


@pytest.mark.parametrize("thresh", [0.5, 0.6, 0.7])
def test_shift_changes_match_exactly_at_threshold(thresh):
    """A 12-voxel cube shifted by s along x has IoU (12 - s) / (12 + s): it matches iff that is >= thresh."""
    y_true = np.zeros((14, 14, 40), np.uint16)
    y_true[1:13, 1:13, 2:14] = 7
    for s in range(13):
        y_pred = np.roll(y_true, s, axis=2)
        iou = (12 - s) / (12 + s)
        m = matching(y_true, y_pred, thresh=thresh, report_matches=True)
        assert m.tp == int(np.float32(iou) >= np.float32(thresh)), (s, iou)
        if m.tp:
            assert m.matched_pairs == ((7, 7),) and m.matched_scores[0] == pytest.approx(iou, abs=1e-7)
        assert_same(m, sd.matching(y_true, y_pred, thresh=thresh))
    # s = 4 gives IoU exactly 0.5: matched at 0.5, not just above
    y_pred = np.roll(y_true, 4, axis=2)
    assert matching(y_true, y_pred, thresh=0.5).tp == 1
    assert matching(y_true, y_pred, thresh=0.5001).tp == 0


def test_overlap_table_counts():
    rng = np.random.default_rng(42)
    a, b = voronoi((12, 16), 6, rng), voronoi((12, 16), 5, rng) * 3
    ov = label_overlap(a, b)
    dense = np.zeros((a.max() + 1, b.max() + 1), np.int64)
    np.add.at(dense, (a.ravel(), b.ravel()), 1)
    expected = dense[np.ix_(ov.true_labels, ov.pred_labels)]
    np.testing.assert_array_equal(ov.dense(), expected)
    np.testing.assert_array_equal(ov.true_area, dense[ov.true_labels].sum(1))
    np.testing.assert_array_equal(ov.pred_area, dense[:, ov.pred_labels].sum(0))
    assert np.all(ov.inter > 0)


def test_large_ids_and_dtypes_agree():
    """Huge ids (no lookup table) and every integer dtype give the same table."""
    rng = np.random.default_rng(42)
    a, b = voronoi((6, 20, 20), 15, rng), shifted(voronoi((6, 20, 20), 15, rng))
    base = matching(a, b, 0.3)
    for dtype in (np.uint16, np.int16, np.uint32, np.int64, np.uint64):
        assert matching(a.astype(dtype), b.astype(dtype), 0.3) == base
    big_a = np.where(a > 0, a.astype(np.uint64) + np.uint64(2**40), 0).astype(np.uint64)
    big_b = np.where(b > 0, b.astype(np.int64) * 10**9, 0)
    big = matching(big_a, big_b, 0.3)
    assert (big.tp, big.sum_matched_score) == (base.tp, base.sum_matched_score)


def test_pool_micro_average_sums_counts():
    rng = np.random.default_rng(42)
    pairs = [(voronoi((20, 20), 8, rng), None) for _ in range(3)]
    results = [matching(t, shifted(t), 0.5) for t, _ in pairs]
    pooled = pool(results)
    assert pooled.tp == sum(r.tp for r in results) and pooled.fn == sum(r.fn for r in results)
    assert pooled.precision == pytest.approx(pooled.tp / (pooled.tp + pooled.fp))
    with pytest.raises(ValueError, match="nothing to pool"):
        pool([])


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        (np.zeros((4, 5), np.int32), np.zeros((4, 6), np.int32), r"shape \(4, 5\).*shape \(4, 6\)"),
        (np.zeros((4, 5), np.float32), np.zeros((4, 5), np.int32), "y_true: labels must be integers, got dtype float32"),
        (np.zeros((4, 5), np.int32), np.zeros((4, 5), bool), "y_pred: labels must be integers, got dtype bool"),
        (np.full((4, 5), -2, np.int32), np.zeros((4, 5), np.int32), "y_true: labels must be non-negative, found -2"),
    ],
)
def test_bad_input_is_one_clear_line(y_true, y_pred, message):
    with pytest.raises(InputError, match=message) as info:
        matching(y_true, y_pred)
    assert "\n" not in str(info.value)


def test_unknown_criterion():
    with pytest.raises(ValueError, match="criterion 'dice' not supported"):
        matching(np.ones((3, 3), np.int32), np.ones((3, 3), np.int32), criterion="dice")

"""Instance matching between a ground-truth and a predicted label image.

The definitions are those of StarDist's ``stardist.matching.matching`` (the
reference of the field): objects are scored by IoU (or intersection over true /
over predicted), a one-to-one assignment maximises first the number of pairs whose
score reaches the threshold, then the total score; a pair matches when its score is
``>= thresh``. The numbers agree with StarDist's to the last bit, including its
single-precision (float32) scores and their summation order, so results can be
compared with published ones.

What differs is the cost: the overlap table is counted once, sparsely (see
:mod:`pipeline.evaluate.overlap`), and reused for every threshold; where the
candidate pairs (score ``>= thresh``) already form a one-to-one matching (always
for IoU thresholds above 0.5) no assignment is solved at all, and elsewhere the
Hungarian algorithm runs only on the connected groups of overlapping objects that
hold a conflict (:mod:`pipeline.evaluate.assignment`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable, Sequence

import numpy as np

from pipeline.evaluate.assignment import assign_pairs, dense_assign
from pipeline.evaluate.overlap import Overlap, label_overlap

LOG = logging.getLogger(__name__)

#: The thresholds of the DSB / StarDist evaluation: 0.1 to 0.9 in steps of 0.1.
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Keys of one threshold's record in ``summary.json``.
SUMMARY_KEYS: tuple[str, ...] = (
    "tp",
    "fp",
    "fn",
    "precision",
    "recall",
    "accuracy",
    "f1",
    "mean_matched_score",
    "mean_true_score",
    "panoptic_quality",
)


def _score_iou(ov: Overlap) -> np.ndarray:
    return ov.inter / (ov.true_area[ov.rows] + ov.pred_area[ov.cols] - ov.inter)


def _score_iot(ov: Overlap) -> np.ndarray:
    return ov.inter / ov.true_area[ov.rows]


def _score_iop(ov: Overlap) -> np.ndarray:
    return ov.inter / ov.pred_area[ov.cols]


#: Matching criteria by name: a function of the overlap table giving one score per pair.
CRITERIA: dict[str, Callable[[Overlap], np.ndarray]] = {"iou": _score_iou, "iot": _score_iot, "iop": _score_iop}


def pair_scores(overlap: Overlap, criterion: str = "iou") -> np.ndarray:
    """Score of every overlapping pair, float32 as in StarDist (``float32(inter / denominator)``).

    Raises
    ------
    ValueError
        For an unknown criterion.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"matching criterion {criterion!r} not supported (choose from {', '.join(CRITERIA)})")
    return CRITERIA[criterion](overlap).astype(np.float32)


@dataclass(frozen=True)
class Matching:
    """Detection and instance-segmentation metrics at one threshold.

    Attributes
    ----------
    criterion : str
        ``"iou"``, ``"iot"`` or ``"iop"``.
    thresh : float
        A pair matches when its score is ``>= thresh``.
    fp, tp, fn : int
        Unmatched predictions, matches, unmatched ground-truth objects.
    precision, recall : float
        ``tp / (tp + fp)``, ``tp / (tp + fn)``.
    accuracy : float
        ``tp / (tp + fp + fn)``: the "average precision" of the DSB 2018 and StarDist papers.
    f1 : float
        ``2 tp / (2 tp + fp + fn)``.
    n_true, n_pred : int
        Objects in the ground truth and in the prediction.
    mean_true_score : float
        Sum of matched scores over ``n_true``.
    mean_matched_score : float
        Sum of matched scores over ``tp``.
    panoptic_quality : float
        Sum of matched scores over ``tp + fp / 2 + fn / 2`` (Kirillov et al., CVPR 2019).
    sum_matched_score : float
        Sum of the scores of the matched pairs (what pooling over images adds up).
    matched_pairs : tuple of (int, int)
        ``(true id, predicted id)`` of every match (original ids), by true id.
    matched_scores : tuple of float
        The score of each matched pair.
    """

    criterion: str
    thresh: float
    fp: int
    tp: int
    fn: int
    precision: float
    recall: float
    accuracy: float
    f1: float
    n_true: int
    n_pred: int
    mean_true_score: float
    mean_matched_score: float
    panoptic_quality: float
    sum_matched_score: float = 0.0
    matched_pairs: tuple[tuple[int, int], ...] = ()
    matched_scores: tuple[float, ...] = ()

    def summary(self) -> dict[str, float | int]:
        """The record written to ``summary.json`` for this threshold (keys :data:`SUMMARY_KEYS`)."""
        values = asdict(self)
        return {key: values[key] for key in SUMMARY_KEYS}

    def as_dict(self) -> dict:
        """All fields except the matched pairs, as plain Python values."""
        values = asdict(self)
        values.pop("matched_pairs")
        values.pop("matched_scores")
        return values


def _ratio(num: float, den: float) -> float:
    return num / den if num > 0 else 0.0


def _safe_divide(x, y, eps: float = 1e-10):
    return x / y if abs(y) > eps else 0.0


def _from_counts(criterion: str, thresh: float, tp: int, n_true: int, n_pred: int, sum32: np.float32, **extra) -> Matching:
    """Build the record exactly as StarDist does from the counts and the float32 score sum."""
    fp, fn = n_pred - tp, n_true - tp
    return Matching(
        criterion=criterion,
        thresh=float(thresh),
        fp=int(fp),
        tp=int(tp),
        fn=int(fn),
        precision=float(_ratio(tp, tp + fp)),
        recall=float(_ratio(tp, tp + fn)),
        accuracy=float(_ratio(tp, tp + fp + fn)),
        f1=float(_ratio(2 * tp, 2 * tp + fp + fn)),
        n_true=int(n_true),
        n_pred=int(n_pred),
        mean_true_score=float(_safe_divide(sum32, n_true)),
        mean_matched_score=float(_safe_divide(sum32, tp)),
        panoptic_quality=float(_safe_divide(sum32, tp + fp / 2 + fn / 2)),
        sum_matched_score=float(sum32),
        **extra,
    )


def match_overlap(overlap: Overlap, thresh: float = 0.5, criterion: str = "iou", *, report_matches: bool = False, scores: np.ndarray | None = None) -> Matching:
    """Matching metrics at one threshold from a precomputed overlap table.

    Parameters
    ----------
    overlap : Overlap
        From :func:`~pipeline.evaluate.overlap.label_overlap`.
    thresh : float
        A pair matches when its score is ``>= thresh``.
    criterion : str
        ``"iou"``, ``"iot"`` or ``"iop"``.
    report_matches : bool
        Fill ``matched_pairs`` and ``matched_scores``.
    scores : numpy.ndarray, optional
        :func:`pair_scores` of ``overlap`` when already computed.

    Returns
    -------
    Matching
    """
    thresh = 0.0 if thresh is None else float(thresh)
    scores = pair_scores(overlap, criterion) if scores is None else scores
    n_true, n_pred = overlap.n_true, overlap.n_pred
    thr32 = np.float32(thresh)
    if min(n_true, n_pred) == 0:
        rows = cols = np.zeros(0, np.int64)
        matched = np.zeros(0, np.float32)
    elif thr32 <= 0:
        rows, cols, matched = dense_assign(overlap, scores, thr32)
    else:
        idx = assign_pairs(overlap, scores, thr32)
        rows, cols, matched = overlap.rows[idx], overlap.cols[idx], scores[idx]
    sum32 = np.sum(matched, dtype=np.float32)
    extra = {}
    if report_matches:
        extra = {
            "matched_pairs": tuple((int(overlap.true_labels[r]), int(overlap.pred_labels[c])) for r, c in zip(rows, cols)),
            "matched_scores": tuple(float(s) for s in matched),
        }
    return _from_counts(criterion, thresh, len(rows), n_true, n_pred, sum32, **extra)


def matching(y_true: np.ndarray, y_pred: np.ndarray, thresh: float = 0.5, criterion: str = "iou", *, report_matches: bool = False) -> Matching:
    """Detection and instance-segmentation metrics of ``y_pred`` against ``y_true``.

    Parameters
    ----------
    y_true, y_pred : numpy.ndarray
        Label images of the same shape (non-negative integers, 0 = background), 2D or 3D.
    thresh : float
        A pair matches when its score is ``>= thresh``.
    criterion : str
        ``"iou"`` (default), ``"iot"`` (intersection over true) or ``"iop"`` (over predicted).
    report_matches : bool
        Also return the matched pairs and their scores.

    Returns
    -------
    Matching
        Equal to ``stardist.matching.matching(y_true, y_pred, thresh, criterion)``.

    Raises
    ------
    InputError
        On non-integer or negative labels or differing shapes.

    Examples
    --------
    >>> import numpy as np
    >>> y_true = np.zeros((100, 100), np.uint16)
    >>> y_true[10:20, 10:20] = 1
    >>> m = matching(y_true, np.roll(y_true, 5, axis=0))
    >>> m.tp, m.fp, m.fn, round(m.mean_true_score, 4)
    (0, 1, 1, 0.0)
    >>> matching(y_true, y_true).accuracy
    1.0
    """
    return match_overlap(label_overlap(y_true, y_pred), thresh, criterion, report_matches=report_matches)


def match_thresholds(
    y_true: np.ndarray | Overlap,
    y_pred: np.ndarray | None = None,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    criterion: str = "iou",
    *,
    report_matches: bool = False,
) -> dict[float, Matching]:
    """Matching at several thresholds from one overlap table.

    Parameters
    ----------
    y_true : numpy.ndarray or Overlap
        Ground-truth labels, or an already computed overlap table (then ``y_pred`` is None).
    y_pred : numpy.ndarray, optional
        Predicted labels.
    thresholds : iterable of float
        Default 0.1, 0.2, ..., 0.9.
    criterion : str
        ``"iou"``, ``"iot"`` or ``"iop"``.
    report_matches : bool
        Fill the matched pairs of each record.

    Returns
    -------
    dict
        ``{thresh: Matching}`` in the order given.
    """
    overlap = y_true if isinstance(y_true, Overlap) else label_overlap(y_true, y_pred)
    scores = pair_scores(overlap, criterion)
    return {float(t): match_overlap(overlap, t, criterion, report_matches=report_matches, scores=scores) for t in thresholds}


def pool(results: Sequence[Matching], *, by_image: bool = False) -> Matching:
    """Combine per-image records of one threshold as StarDist's ``matching_dataset`` does.

    Parameters
    ----------
    results : sequence of Matching
        One record per image, all at the same threshold and criterion.
    by_image : bool
        False (default): micro average, counts and score sums are added over images
        before the ratios are taken. True: the mean of the per-image ratios.

    Returns
    -------
    Matching
        Without matched pairs. One image pooled is that image's record, equal to
        StarDist's ``matching`` (StarDist's ``matching_dataset`` of one image differs
        from its own ``matching`` in the last bit of the float32 score sum, because it
        adds ``mean_true_score * n_true`` back up); several images are pooled exactly as
        ``matching_dataset`` pools them, in float32, in the order given.

    Raises
    ------
    ValueError
        If ``results`` is empty or mixes thresholds or criteria.
    """
    if not results:
        raise ValueError("nothing to pool: no per-image results")
    first = results[0]
    if any(r.thresh != first.thresh or r.criterion != first.criterion for r in results):
        raise ValueError("cannot pool results of different thresholds or criteria")
    if len(results) == 1 and not by_image:
        return replace(first, matched_pairs=(), matched_scores=())
    tp = sum(r.tp for r in results)
    n_true = sum(r.n_true for r in results)
    n_pred = sum(r.n_pred for r in results)
    if not by_image:
        total = np.float32(0)
        for r in results:  # StarDist adds mean_true_score * n_true, in float32, image by image
            total = total + np.float32(r.mean_true_score) * r.n_true
        return _from_counts(first.criterion, first.thresh, tp, n_true, n_pred, np.float32(total))
    n = len(results)
    mean = {k: sum(getattr(r, k) for r in results) / n for k in ("precision", "recall", "accuracy", "f1")}
    scores = {}
    for key in ("mean_true_score", "mean_matched_score", "panoptic_quality"):
        acc = np.float32(0)
        for r in results:
            acc = acc + np.float32(getattr(r, key))
        scores[key] = float(acc / n)
    return Matching(
        criterion=first.criterion,
        thresh=first.thresh,
        fp=int(sum(r.fp for r in results)),
        tp=int(tp),
        fn=int(sum(r.fn for r in results)),
        n_true=int(n_true),
        n_pred=int(n_pred),
        sum_matched_score=float(sum(r.sum_matched_score for r in results)),
        **{k: float(v) for k, v in mean.items()},
        **scores,
    )


def matching_dataset(
    y_true: Sequence[np.ndarray],
    y_pred: Sequence[np.ndarray],
    thresh: float | Iterable[float] = 0.5,
    criterion: str = "iou",
    *,
    by_image: bool = False,
) -> Matching | dict[float, Matching]:
    """Matching pooled over a list of image pairs (StarDist's ``matching_dataset``).

    Parameters
    ----------
    y_true, y_pred : sequence of numpy.ndarray
        Paired label images.
    thresh : float or iterable of float
        One threshold (returns one record) or several (returns ``{thresh: Matching}``).
    criterion : str
        ``"iou"``, ``"iot"`` or ``"iop"``.
    by_image : bool
        Macro instead of micro average (see :func:`pool`).

    Returns
    -------
    Matching or dict
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} images but y_pred has {len(y_pred)}")
    single = np.isscalar(thresh)
    thresholds = [float(thresh)] if single else [float(t) for t in thresh]
    per_image = [match_thresholds(t, p, thresholds, criterion) for t, p in zip(y_true, y_pred)]
    pooled = {t: pool([m[t] for m in per_image], by_image=by_image) for t in thresholds}
    return pooled[thresholds[0]] if single else pooled

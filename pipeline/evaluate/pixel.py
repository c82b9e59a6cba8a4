"""Per-class pixel metrics of a semantic output (0 background / 1 edge / 2 nucleus).

Each class is scored one-vs-rest from one confusion matrix (``np.bincount``):
accuracy ``(TP + TN) / N``, precision, recall, F1 (= Dice) and IoU, as the thesis
(section 2.8.1) reports them per class. One accuracy over all pixels is never
given: with a dominant background it hides how the edge class fares.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from pipeline.errors import InputError

LOG = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("background", "edge", "nucleus")
METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "iou")


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, n_classes: int = 3, *, names: tuple[str, str] = ("truth", "pred")) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts: row = true class, column = predicted class.

    Raises
    ------
    InputError
        On differing shapes, non-integer classes or classes outside ``0..n_classes-1``.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise InputError(f"{names[0]} has shape {truth.shape} but {names[1]} has shape {pred.shape}")
    for arr, name in ((truth, names[0]), (pred, names[1])):
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"{name}: semantic classes must be integers, got dtype {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= n_classes):
            raise InputError(f"{name}: classes must lie in 0..{n_classes - 1}, found {int(arr.min())}..{int(arr.max())}")
    key = truth.reshape(-1).astype(np.int64) * n_classes + pred.reshape(-1)
    return np.bincount(key, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(np.shape(num), float)
    np.divide(num, den, out=out, where=den > 0)
    return out


def metrics_from_confusion(confusion: np.ndarray, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, dict[str, float]]:
    """Per-class metrics from a confusion matrix (so several images are pooled by adding matrices).

    A ratio whose denominator is 0 (a class absent from both truth and prediction) is 0;
    ``support_true`` and ``support_pred`` tell such cases apart.

    Returns
    -------
    dict
        ``{class_name: {"accuracy", "precision", "recall", "f1", "iou", "support_true", "support_pred"}}``.
    """
    cm = np.asarray(confusion, np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not fit {len(class_names)} class names")
    total = cm.sum()
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    tn = total - tp - fp - fn
    values = {
        "accuracy": _div(tp + tn, np.full_like(tp, total)),
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "iou": _div(tp, tp + fp + fn),
    }
    out = {}
    for i, name in enumerate(class_names):
        row = {metric: float(values[metric][i]) for metric in METRICS}
        row["support_true"] = int(tp[i] + fn[i])
        row["support_pred"] = int(tp[i] + fp[i])
        out[str(name)] = row
    return out


def pixel_metrics(
    truth: np.ndarray,
    pred: np.ndarray,
    n_classes: int = 3,
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict[str, dict[str, float]]:
    """Per-class accuracy, precision, recall, F1 (Dice) and IoU of a semantic prediction.

    Parameters
    ----------
    truth, pred : numpy.ndarray
        Class maps of the same shape (integers ``0..n_classes-1``).
    n_classes : int
        Number of classes.
    class_names : sequence of str
        One name per class (default background, edge, nucleus).

    Returns
    -------
    dict
        See :func:`metrics_from_confusion`.

    Examples
    --------
    >>> import numpy as np
    >>> m = pixel_metrics(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]))
    >>> m["edge"]["precision"], m["edge"]["recall"], m["nucleus"]["f1"]
    (0.5, 1.0, 0.6666666666666666)
    """
    if len(class_names) != n_classes:
        raise ValueError(f"{len(class_names)} class names for {n_classes} classes")
    return metrics_from_confusion(confusion_matrix(truth, pred, n_classes), class_names)

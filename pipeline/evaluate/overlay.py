"""The overlay: outlines of ground truth and prediction on the raw image, a few slices of one volume.

Every object is coloured by what happened to it at the report threshold (see
:mod:`pipeline.evaluate.failures`), in the Okabe-Ito colours that colour-blind readers
tell apart. Predicted outlines are drawn over the ground truth's, so where both agree
only the prediction's colour shows; missed nuclei and false positives are also tinted.
Small slices are enlarged (nearest neighbour) so that one-pixel outlines stay visible.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.evaluate.plots import Sheet, save

LOG = logging.getLogger(__name__)

#: Category -> (legend text, RGB). Predicted objects: 1-4; ground-truth nuclei: 5-6.
CATEGORIES = {
    1: ("true positive: prediction matched one to one", (0.0, 0.62, 0.45)),
    2: ("false positive: prediction without a match, tinted", (0.94, 0.89, 0.26)),
    3: ("merge: one prediction holds most of two or more nuclei", (0.84, 0.37, 0.0)),
    4: ("split: fragments, two or more lie inside one nucleus", (0.34, 0.71, 0.91)),
    5: ("ground-truth outline (white where it differs from the prediction's)", (1.0, 1.0, 1.0)),
    6: ("false negative: missed nucleus, tinted", (0.8, 0.47, 0.65)),
}
TINT = 0.35
#: Slices are enlarged until the longer side has at least this many pixels (at most 8x).
MIN_SIDE = 420


def object_categories(ids: np.ndarray, status: np.ndarray, first: np.ndarray, second: np.ndarray, *, truth: bool) -> np.ndarray:
    """Category (keys of :data:`CATEGORIES`) of each object.

    For predictions ``first``/``second`` are the merge and fragment flags; for ground-truth
    nuclei they are unused (nuclei are outlined white, or tinted when missed).
    """
    status = np.asarray(status).astype(str)
    if truth:
        return np.where(status == "tp", 5, 6).astype(np.uint8)
    out = np.where(status == "tp", 1, 2).astype(np.uint8)
    out[np.asarray(second, bool)] = 4
    out[np.asarray(first, bool)] = 3
    return out


def _lookup(plane: np.ndarray, ids: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Category of every pixel of a label slice (0 on background and unknown ids)."""
    out = np.zeros(plane.shape, np.uint8)
    fg = plane != 0
    if not len(ids) or not fg.any():
        return out
    values = plane[fg].astype(np.int64)
    idx = np.clip(np.searchsorted(ids, values), 0, len(ids) - 1)
    known = ids[idx] == values
    cat = np.zeros(len(values), np.uint8)
    cat[known] = categories[idx[known]]
    out[fg] = cat
    return out


def render_slice(image: np.ndarray | None, truth: np.ndarray, pred: np.ndarray, truth_cat: tuple[np.ndarray, np.ndarray], pred_cat: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """RGB float image of one slice: grey raw, tints, ground-truth then predicted outlines.

    Parameters
    ----------
    image : numpy.ndarray or None
        uint8 grey slice (black when None).
    truth, pred : numpy.ndarray
        Label slices.
    truth_cat, pred_cat : tuple of numpy.ndarray
        ``(sorted ids, category of each)`` of the volume's ground-truth and predicted objects.
    """
    from skimage.segmentation import find_boundaries

    h, w = truth.shape
    k = int(min(8, max(1, np.ceil(MIN_SIDE / max(h, w, 1)))))
    big = lambda a: np.repeat(np.repeat(a, k, axis=0), k, axis=1)  # noqa: E731
    grey = np.zeros((h, w), np.float32) if image is None else image.astype(np.float32) / 255.0
    rgb = np.repeat(big(grey)[..., None], 3, axis=2)
    t_big, p_big = big(truth), big(pred)
    t_cat, p_cat = big(_lookup(truth, *truth_cat)), big(_lookup(pred, *pred_cat))
    for cat, where in ((6, t_cat == 6), (2, p_cat == 2)):  # tint misses and false positives
        rgb[where] = (1 - TINT) * rgb[where] + TINT * np.array(CATEGORIES[cat][1])
    thick = 2 if k >= 3 else 1
    t_edge = find_boundaries(t_big, mode="inner") & (t_big != 0)
    p_edge = find_boundaries(p_big, mode="inner") & (p_big != 0)
    if thick > 1:
        from scipy.ndimage import binary_dilation

        t_edge = binary_dilation(t_edge, iterations=thick - 1) & (t_big != 0)
        p_edge = binary_dilation(p_edge, iterations=thick - 1) & (p_big != 0)
    for cat in (5, 6):
        rgb[t_edge & (t_cat == cat)] = CATEGORIES[cat][1]
    for cat in (1, 2, 4, 3):
        rgb[p_edge & (p_cat == cat)] = CATEGORIES[cat][1]
    return np.clip(rgb, 0, 1)


def plot_overlay(
    overlay: dict[str, np.ndarray],
    nuclei: dict[str, np.ndarray],
    predicted: dict[str, np.ndarray],
    path: str | Path,
    *,
    title: str = "",
    report_threshold: float = 0.5,
    criterion: str = "iou",
    dpi: int = 120,
) -> Path:
    """The overlay figure: one panel per slice, a legend with the volume's counts, a caption.

    Parameters
    ----------
    overlay : dict
        ``z`` (slice indices), ``truth`` and ``pred`` (label slices), ``image`` (uint8 grey
        slices or None), as :func:`pipeline.evaluate.task.evaluate_item` returns them.
    nuclei, predicted : dict
        The volume's per-nucleus and per-predicted-object columns (``true_id``/``pred_id``,
        ``status``, ``merged``/``merge``, ``split``/``fragment``).
    """
    from matplotlib.patches import Patch

    t_ids = np.asarray(nuclei["true_id"], np.int64)
    t_cat = object_categories(t_ids, nuclei["status"], None, None, truth=True)
    p_ids = np.asarray(predicted["pred_id"], np.int64)
    p_cat = object_categories(p_ids, predicted["status"], predicted["merge"], predicted["fragment"], truth=False)
    zs = [int(z) for z in np.asarray(overlay["z"])]
    n = len(zs)
    h, w = np.asarray(overlay["truth"]).shape[1:]
    panel = 4.6 if n > 1 else 6.5
    height = panel * h / max(w, 1)
    image = overlay.get("image")
    background = "the raw image (grey; 0.5-99.8 percentiles of the volume)" if image is not None else "black (no raw image was given: --image)"
    text = (
        f"Outlines of ground truth and prediction on {background}, at {criterion.upper()} >= {report_threshold:g}. "
        "Counts in the legend are over the whole volume. A merge or a fragment is outlined as such even when it is also "
        "matched (one half of a split nucleus often still matches)."
    )
    legend_rows = 3 if n > 1 else 6
    legend = legend_rows * 0.19 + 0.1
    sheet = Sheet(panel * n + 0.2, height + 0.3 + legend + (0.3 if title else 0.0), text, wrap=int(15.5 * panel * n))
    names = ["top", "middle", "bottom"] if n == 3 else [""] * n
    for i, z in enumerate(zs):
        ax = sheet.axes(0.1 + i * panel, legend, panel - 0.05, height)
        rgb = render_slice(None if image is None else np.asarray(image)[i], np.asarray(overlay["truth"])[i], np.asarray(overlay["pred"])[i], (t_ids, t_cat), (p_ids, p_cat))
        ax.imshow(rgb, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"z = {z}" + (f" ({names[i]})" if names[i] else ""), fontsize=9)
    p_status = np.asarray(predicted["status"]).astype(str)
    counts = {
        1: int((p_status == "tp").sum()),
        2: int((p_status == "fp").sum()),
        3: int(np.asarray(predicted["merge"], bool).sum()),
        4: int(np.asarray(predicted["fragment"], bool).sum()),
        6: int((t_cat == 6).sum()),
    }
    handles = [Patch(facecolor=CATEGORIES[c][1], edgecolor="0.4", label=f"{CATEGORIES[c][0]} ({counts[c]})") for c in (1, 2, 6, 3, 4)]
    handles.append(Patch(facecolor=CATEGORIES[5][1], edgecolor="0.4", label=CATEGORIES[5][0]))
    left, bottom, width, _ = sheet.box(0.1, 0.0, panel * n, legend)
    sheet.fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(left + width / 2, bottom + legend / sheet.height), ncol=2 if n > 1 else 1, fontsize=8, frameon=False)
    if title:
        sheet.title(title)
    return save(sheet.fig, path, dpi)

"""A small picture per well: the middle z slice of the nuclear channel with every nucleus'
outline coloured by its phase (colours of :data:`pipeline.report.figures.PHASE_COLORS`)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from pipeline.report.figures import PHASE_COLORS


def _rgb(color: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.asarray(to_rgb(color), dtype=np.float32)


def outline_image(image: np.ndarray, labels: np.ndarray, phases: dict[int, str], width: int) -> np.ndarray:
    """An ``(H, W, 3)`` float RGB image: ``image`` in grey (1-99.8 percentile), outlines in colour.

    Parameters
    ----------
    image, labels : numpy.ndarray
        One ``(y, x)`` slice and its instance labels.
    phases : dict
        Label -> phase name (or ``"dead"``); labels not in it are outlined in white.
    width : int
        Width of the result in pixels (the image and labels are resized first, so
        outlines stay one pixel wide).
    """
    from skimage.segmentation import find_boundaries
    from skimage.transform import resize

    height = max(1, round(image.shape[0] * width / image.shape[1]))
    grey = resize(image.astype(np.float32), (height, width), order=1, anti_aliasing=width < image.shape[1], preserve_range=True)
    lab = resize(labels, (height, width), order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)
    lo, hi = np.percentile(grey, [1.0, 99.8]) if grey.size else (0.0, 1.0)
    grey = np.clip((grey - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=2) * 0.85
    edges = find_boundaries(lab, mode="inner") & (lab > 0)
    if edges.any():
        ids = lab[edges]
        table = {int(k): _rgb(PHASE_COLORS.get(v, "#ffffff")) for k, v in phases.items()}
        white = np.ones(3, dtype=np.float32)
        rgb[edges] = np.stack([table.get(int(i), white) for i in ids])
    return rgb


def thumbnail_png(image: np.ndarray, labels: np.ndarray, nuclei: pd.DataFrame, width: int) -> bytes:
    """PNG bytes of :func:`outline_image` for one slice; ``nuclei`` has ``label``, ``phase``, ``dead``."""
    from matplotlib.image import imsave

    dead = nuclei["dead"].astype(bool) if "dead" in nuclei else pd.Series(False, index=nuclei.index)
    phases = dict(zip(nuclei["label"].astype(int), np.where(dead, "dead", nuclei["phase"].astype(str))))
    rgb = outline_image(image, labels, phases, width)
    buffer = io.BytesIO()
    imsave(buffer, rgb, format="png")
    return buffer.getvalue()

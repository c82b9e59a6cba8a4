"""The ``stardist`` backend: StarDist 3D (star-convex polyhedra, anisotropic rays, a grid).

A StarDist model folder is StarDist's own (``config.json``, ``thresholds.json``,
``weights_best.h5``) plus our ``model.json`` card, written by ``spheroid train`` with
``backend: stardist``. TensorFlow is imported only when the backend is built; without
the ``[stardist]`` extra it fails with the install hint. No pretrained StarDist model can
be downloaded here, so a model folder is required.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pipeline.config.segment import SegmentConfig
from pipeline.errors import InputError, require
from pipeline.segment.backends.base import ModelSegmenter, required_model
from pipeline.segment.card import CardBase, validate_card

LOG = logging.getLogger(__name__)

WEIGHTS = "weights_best.h5"
FILES = ("config.json", "thresholds.json", WEIGHTS)
#: Largest tile StarDist predicts at once (z, y, x voxels); bigger images are tiled (n_tiles).
MAX_TILE = (32, 256, 256)


class StarDistCard(CardBase):
    """Model card of a StarDist 3D model folder."""

    format: Literal["spheroid-stardist"] = "spheroid-stardist"
    """Marks the file as a spheroid StarDist card."""
    format_version: Literal[1] = 1
    """Version of this card layout."""
    n_rays: int = Field(ge=8)
    """Rays per star-convex polyhedron."""
    grid: list[int] = Field(min_length=3, max_length=3)
    """Subsampling of the prediction grid (z, y, x)."""
    anisotropy: list[float] = Field(min_length=3, max_length=3)
    """Object anisotropy (z, y, x) the rays were laid out for (nucleus extent in voxels, relative)."""
    patch_size: list[int] = Field(min_length=3, max_length=3)
    """Training patch size (z, y, x)."""
    prob_thresh: float = Field(gt=0, lt=1)
    """Object probability threshold (optimised on the validation split)."""
    nms_thresh: float = Field(ge=0, lt=1)
    """Non-maximum suppression IoU threshold (optimised on the validation split)."""


def import_stardist():
    """``stardist.models`` with TensorFlow's start-up chatter silenced; install hint when missing."""
    _quiet_tensorflow()
    return require("stardist.models", "stardist")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read when TensorFlow is first imported


def quiet():
    """Send what StarDist and csbdeep print to the debug log instead of stdout."""
    return contextlib.redirect_stdout(_LogWriter())


class _LogWriter(io.StringIO):
    def write(self, text: str) -> int:
        if text.strip():
            LOG.debug("stardist: %s", text.strip())
        return len(text)


def limit_tf_threads(n: int | None) -> None:
    """Give TensorFlow ``n`` threads (before it runs anything; later calls are ignored)."""
    if not n:
        return
    _quiet_tensorflow()
    tf = require("tensorflow", "stardist")

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(n))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process
        pass


def load_stardist(folder: str | Path):
    """The card and the StarDist3D model of a folder (weights ``weights_best.h5``)."""
    folder = Path(folder)
    card = validate_card(StarDistCard, folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise InputError(f"{folder}: StarDist model folder lacks {', '.join(missing)}")
    models = import_stardist()
    with quiet():
        try:
            model = models.StarDist3D(None, name=folder.name, basedir=str(folder.parent))
            model.load_weights(WEIGHTS)
        except Exception as exc:  # noqa: BLE001 - h5py/keras errors on a bad file
            raise InputError(f"{folder / WEIGHTS}: cannot load StarDist weights ({type(exc).__name__}: {exc})") from None
    model.thresholds = {"prob": card.prob_thresh, "nms": card.nms_thresh}
    return model, card


def n_tiles(shape, max_tile=MAX_TILE) -> tuple[int, int, int]:
    """Tiles per axis so that no tile is larger than ``max_tile``."""
    return tuple(max(1, math.ceil(s / m)) for s, m in zip(shape, max_tile))


class StarDistSegmenter(ModelSegmenter):
    """StarDist 3D from a model folder trained with ``spheroid train`` (``backend: stardist``)."""

    name = "stardist"

    def __init__(self, config: SegmentConfig):
        folder = required_model(config, "stardist", "StarDist")
        import torch

        limit_tf_threads(torch.get_num_threads())  # the worker's thread budget (set by the runner)
        self.model, card = load_stardist(str(folder))
        super().__init__(config, str(folder), card, ["model.json", *FILES])

    def settings(self) -> dict[str, Any]:
        return {"prob_thresh": self.card.prob_thresh, "nms_thresh": self.card.nms_thresh, "max_tile": list(MAX_TILE)}

    def segment(self, image: np.ndarray) -> np.ndarray:
        with quiet():
            labels, _ = self.model.predict_instances(
                image.astype(np.float32, copy=False), n_tiles=n_tiles(image.shape), show_tile_progress=False,
                prob_thresh=self.card.prob_thresh, nms_thresh=self.card.nms_thresh,
            )
        return labels.astype(np.uint32, copy=False)

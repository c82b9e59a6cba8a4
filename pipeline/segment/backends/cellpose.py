"""The ``cellpose`` backend: Cellpose 3D (``do_3D``: flows from the y-x, z-x and z-y views).

A Cellpose model folder holds the network's state dict (``weights.pt``, read with
``weights_only=True`` by Cellpose) and our ``model.json`` card, written by
``spheroid train`` with ``backend: cellpose``. Cellpose is imported only when the
backend is built; without the ``[cellpose]`` extra it fails with the install hint.
No pretrained weights can be had here, and Cellpose falls back to downloading its
``cyto3`` model when a weights path does not exist, so the path is checked first.

Cellpose 3.1 is the version pinned (its 6.6 M-parameter CPnet runs on a CPU); 4.x
(CPSAM, 305 M parameters) is used through the same calls where installed, but a model
trained with one major version does not load in the other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pipeline.config.segment import SegmentConfig
from pipeline.errors import InputError, require
from pipeline.segment.backends.base import ModelSegmenter, package_version, required_model
from pipeline.segment.card import CardBase, validate_card

LOG = logging.getLogger(__name__)

WEIGHTS = "weights.pt"


class CellposeCard(CardBase):
    """Model card of a Cellpose model folder."""

    format: Literal["spheroid-cellpose"] = "spheroid-cellpose"
    """Marks the file as a spheroid Cellpose card."""
    format_version: Literal[1] = 1
    """Version of this card layout."""
    cellpose_major: int = Field(ge=3)
    """Major version of Cellpose that trained the network (3 or 4; their weights differ)."""
    diam_px: float = Field(gt=0)
    """Mean nucleus diameter in y/x pixels at ``voxel_size`` (Cellpose's ``diam_mean``)."""
    anisotropy: float = Field(gt=0)
    """z voxel size over y/x voxel size at ``voxel_size`` (Cellpose's ``anisotropy``)."""
    nchan: int = Field(2, ge=1)
    """Input channels of the network (Cellpose 3: the image and an empty second channel)."""
    bsize: int = Field(224, ge=16)
    """Tile size of the 2D network."""
    cellprob_threshold: float = 0.0
    """Pixels above this cell probability (logit) take part in the masks (tuned on validation)."""
    flow_threshold: float = Field(0.4, ge=0)
    """Flow error threshold (2D only; kept for completeness)."""
    min_size: int = Field(15, ge=0)
    """Masks smaller than this many voxels are removed."""
    weights: str = WEIGHTS
    """File name of the network's state dict beside the card."""


def import_cellpose(module: str = "cellpose.models"):
    """A Cellpose module (install hint when missing); its import-time deprecation warnings of torch are silenced."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return require(module, "cellpose")


def cellpose_major() -> int:
    """Major version of the installed Cellpose (0 when it is missing)."""
    v = package_version("cellpose")
    return int(v.split(".")[0]) if v[0].isdigit() else 0


def build_cellpose(card: CellposeCard | None, weights: str | Path | None, *, device: str = "cpu", diam_px: float = 17.0):
    """A ``CellposeModel`` on the CPU or GPU: from ``weights`` when given, else a fresh network.

    ``net_ortho`` is set to ``None`` (Cellpose 3.1 reads it in ``eval`` but sets it only
    when loading builtin models).
    """
    models = import_cellpose("cellpose.models")
    import torch

    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    major = cellpose_major()
    if weights is not None and not Path(weights).is_file():
        raise InputError(f"{weights}: Cellpose weights not found")  # never let Cellpose download a default
    kwargs: dict[str, Any] = {"gpu": dev.type == "cuda", "device": dev, "pretrained_model": str(weights) if weights else False}
    if major < 4:
        kwargs.update(diam_mean=float(card.diam_px if card else diam_px), nchan=int(card.nchan if card else 2))
    try:
        model = models.CellposeModel(**kwargs)
    except AssertionError as exc:  # Cellpose asserts on weights of the other major version
        raise InputError(f"{weights}: not weights this Cellpose ({package_version('cellpose')}) can load ({exc})") from None
    if not hasattr(model, "net_ortho"):
        model.net_ortho = None
    return model


class CellposeSegmenter(ModelSegmenter):
    """Cellpose 3D from a model folder trained with ``spheroid train`` (``backend: cellpose``)."""

    name = "cellpose"

    def __init__(self, config: SegmentConfig):
        folder = required_model(config, "cellpose", "Cellpose")
        card = validate_card(CellposeCard, folder)
        installed = cellpose_major()
        if installed and installed != card.cellpose_major:
            raise InputError(f"{folder}: trained with Cellpose {card.cellpose_major}.x, Cellpose {package_version('cellpose')} is installed")
        self.model = build_cellpose(card, folder / card.weights, device=config.device)
        super().__init__(config, folder, card, ["model.json", card.weights])

    def settings(self) -> dict[str, Any]:
        c = self.card
        return {"diam_px": c.diam_px, "anisotropy": c.anisotropy, "cellprob_threshold": c.cellprob_threshold, "min_size": c.min_size, "bsize": c.bsize}

    def segment(self, image: np.ndarray) -> np.ndarray:
        return cellpose_eval(self.model, self.card, image)


def cellpose_eval(model, card: CellposeCard, image: np.ndarray, *, cellprob_threshold: float | None = None, masks: bool = True):
    """Cellpose 3D masks of a normalised ``(z, y, x)`` image at the card's scale.

    With ``masks=False``: the flows ``dP`` and the cell probability instead (for
    :func:`masks_from_flows`, to try several thresholds on one network run).
    """
    kwargs: dict[str, Any] = dict(
        z_axis=0, do_3D=True, anisotropy=card.anisotropy, diameter=card.diam_px, normalize=False,
        cellprob_threshold=card.cellprob_threshold if cellprob_threshold is None else cellprob_threshold,
        min_size=card.min_size, bsize=card.bsize, batch_size=8, progress=None,
    )
    if cellpose_major() < 4:
        kwargs["channels"] = [0, 0]
    with _sparse_checks_off():
        out = model.eval(np.asarray(image, np.float32), compute_masks=masks, **kwargs)
    if not masks:
        return np.asarray(out[1][1]), np.asarray(out[1][2])
    masks = np.asarray(out[0])
    if masks.shape != image.shape:
        raise ValueError(f"Cellpose returned masks of shape {masks.shape} for an image of shape {image.shape}")
    return masks.astype(np.uint32, copy=False)


def _sparse_checks_off():
    """Cellpose's mask step builds sparse tensors; say so explicitly (torch warns once per process,
    and where warnings are errors, as in the tests, that warning would stop the run)."""
    import torch

    return torch.sparse.check_sparse_tensor_invariants(enable=False)


def masks_from_flows(dp: np.ndarray, cellprob: np.ndarray, card: CellposeCard, cellprob_threshold: float) -> np.ndarray:
    """Cellpose's 3D masks from the flows of :func:`cellpose_eval` (``masks=False``) at another threshold."""
    import torch

    dynamics = import_cellpose("cellpose.dynamics")
    with _sparse_checks_off():
        masks = dynamics.resize_and_compute_masks(
            dp, cellprob, niter=200, cellprob_threshold=cellprob_threshold, do_3D=True, min_size=card.min_size, device=torch.device("cpu"),
        )
    masks = masks[0] if isinstance(masks, tuple) else masks
    return np.asarray(masks).astype(np.uint32, copy=False)

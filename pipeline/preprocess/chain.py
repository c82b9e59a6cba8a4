"""The step registry and the chain: which function each step name runs, its halo, its provenance.

Like ome-zarr-py's downsampling methods, each step name maps to a record of the function,
its parameter model, the halo it needs and the library call it relies on (with that
library's installed version), so the store carries its own provenance.

>>> import numpy as np
>>> from pipeline.config.preprocess import GammaStep, MedianStep
>>> vol = np.zeros((2, 16, 16), np.uint16)
>>> apply_chain(vol, [GammaStep(gamma=0.5), MedianStep(size=3)]).dtype
dtype('uint16')
>>> chain_halo([MedianStep(size=5)])
(0, 2, 2)
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from enum import Enum
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from pipeline.config import preprocess as cfg
from pipeline.preprocess import steps

LOG = logging.getLogger(__name__)

Halo = tuple[int | None, int | None, int | None]
"""Voxels of context a step needs on each side along ``z, y, x``; ``None``: the whole axis."""


class StepName(str, Enum):
    """The names a chain's ``step:`` key may take."""

    THRESHOLD = "threshold"
    GAMMA = "gamma"
    CLAHE = "clahe"
    MEDIAN = "median"
    TOPHAT = "tophat"
    TO_UINT8 = "to_uint8"
    NORMALIZE = "normalize"


@dataclass(frozen=True)
class StepSpec:
    """What the registry knows about one step.

    Attributes
    ----------
    func : callable
        ``func(volume, **params) -> ndarray``, pure.
    params : type
        The step's pydantic model in :mod:`pipeline.config.preprocess`.
    halo : callable
        ``halo(params) -> (z, y, x)`` context needed per side (``None`` = whole axis).
    stats : callable
        ``stats(params) -> bool``: whether the step needs the whole-volume histogram
        (then it takes ``hist=``, and is point-wise given it).
    library : callable
        ``library(params) -> (distribution, call)`` it relies on.
    out_dtype : callable
        ``out_dtype(in_dtype) -> dtype``.
    """

    func: Callable[..., np.ndarray]
    params: type
    halo: Callable[[Any], Halo]
    stats: Callable[[Any], bool]
    library: Callable[[Any], tuple[str, str]]
    out_dtype: Callable[[np.dtype], np.dtype]


def _same(dtype: np.dtype) -> np.dtype:
    return np.dtype(dtype)


def _never(_p) -> bool:
    return False


def _always(_p) -> bool:
    return True


def _pointwise(_p) -> Halo:
    return (0, 0, 0)


REGISTRY: dict[StepName, StepSpec] = {
    StepName.THRESHOLD: StepSpec(
        func=steps.background_threshold,
        params=cfg.ThresholdStep,
        halo=_pointwise,
        stats=lambda p: p.mode in ("range_fraction", "percentile"),
        library=lambda p: ("numpy", "numpy.bincount + comparison"),
        out_dtype=_same,
    ),
    StepName.GAMMA: StepSpec(
        func=steps.gamma_correction,
        params=cfg.GammaStep,
        halo=_pointwise,
        stats=_never,
        library=lambda p: ("numpy", "numpy.power lookup table"),
        out_dtype=_same,
    ),
    StepName.CLAHE: StepSpec(
        func=steps.clahe,
        params=cfg.ClaheStep,
        halo=lambda p: (0, None, None) if p.mode == "2d" else (None, None, None),
        stats=_never,
        library=lambda p: ("opencv-python-headless", "cv2.createCLAHE(...).apply per z-slice")
        if p.mode == "2d"
        else ("scikit-image", "skimage.exposure.equalize_adapthist"),
        out_dtype=_same,
    ),
    StepName.MEDIAN: StepSpec(
        func=steps.median,
        params=cfg.MedianStep,
        halo=lambda p: (0, p.size // 2, p.size // 2) if p.mode == "2d" else (p.size_z // 2, p.size // 2, p.size // 2),
        stats=_never,
        library=lambda p: ("opencv-python-headless", "cv2.medianBlur per z-slice (scipy.ndimage.median_filter for uint16 sizes > 5)")
        if p.mode == "2d"
        else ("scipy", "scipy.ndimage.median_filter"),
        out_dtype=_same,
    ),
    StepName.TOPHAT: StepSpec(
        func=steps.tophat_subtract,
        params=cfg.TophatStep,
        # an opening is an erosion then a dilation: twice the footprint's reach
        halo=lambda p: (0, 2 * p.radius, 2 * p.radius) if p.mode == "2d" else (2 * p.radius_z, 2 * p.radius, 2 * p.radius),
        stats=_never,
        library=lambda p: ("opencv-python-headless", "cv2.morphologyEx(MORPH_OPEN) per z-slice")
        if p.mode == "2d"
        else ("scipy", "scipy.ndimage.grey_opening"),
        out_dtype=_same,
    ),
    StepName.TO_UINT8: StepSpec(
        func=steps.to_uint8,
        params=cfg.ToUint8Step,
        halo=_pointwise,
        stats=_always,
        library=lambda p: ("numpy", "percentile window to uint8"),
        out_dtype=lambda d: np.dtype(np.uint8),
    ),
    StepName.NORMALIZE: StepSpec(
        func=steps.normalize,
        params=cfg.NormalizeStep,
        halo=_pointwise,
        stats=_always,
        library=lambda p: ("numpy", "pipeline.preprocess.normalize.normalize_range"),
        out_dtype=lambda d: np.dtype(np.float32),
    ),
}


def spec(step) -> StepSpec:
    """Registry record of a step config."""
    return REGISTRY[StepName(step.step)]


def params_of(step) -> dict[str, Any]:
    """The keyword arguments a step config passes to its function."""
    return step.model_dump(exclude={"step", "enabled"})


def enabled(chain: Sequence) -> list:
    """The steps of ``chain`` that are switched on, in order."""
    return [s for s in chain if s.enabled]


def run_step(volume: np.ndarray, step, hist: np.ndarray | None = None) -> np.ndarray:
    """Apply one step; ``hist`` (whole-volume histogram) is passed to steps that use it."""
    extra = {"hist": hist} if hist is not None and spec(step).stats(step) else {}
    return spec(step).func(volume, **params_of(step), **extra)


def iter_chain(volume: np.ndarray, chain: Sequence) -> Iterator[tuple[Any, np.ndarray]]:
    """Yield ``(step, result)`` after each enabled step (for previews)."""
    for step in enabled(chain):
        volume = run_step(volume, step)
        yield step, volume


def apply_chain(volume: np.ndarray, chain: Sequence) -> np.ndarray:
    """Run the enabled steps of ``chain`` on one ``z, y, x`` volume, in one process.

    Parameters
    ----------
    volume : numpy.ndarray
        uint8/uint16 volume.
    chain : sequence of step configs
        From :class:`pipeline.config.preprocess.PreprocessConfig`.

    Returns
    -------
    numpy.ndarray
        The result (float32 if the chain ends with ``normalize``, else an unsigned dtype).
    """
    for step in enabled(chain):
        volume = run_step(volume, step)
    return volume


def split_normalize(chain: Sequence, in_dtype: np.dtype) -> tuple[list, Any] | None:
    """``(steps before, normalize step)`` when ``chain`` ends with ``normalize`` applied to integers.

    Then the chain's float32 result is a linear map of the integer volume the other steps
    produce, and can be stored as those integers plus the map (see :mod:`pipeline.io.affine`).
    ``None`` otherwise.
    """
    steps_on = enabled(chain)
    if not steps_on or StepName(steps_on[-1].step) is not StepName.NORMALIZE:
        return None
    before = steps_on[:-1]
    if not np.issubdtype(chain_dtype(before, in_dtype), np.unsignedinteger):
        return None
    return before, steps_on[-1]


def chain_dtype(chain: Sequence, in_dtype: np.dtype) -> np.dtype:
    """The dtype ``apply_chain`` returns for ``in_dtype`` input."""
    dtype = np.dtype(in_dtype)
    for step in enabled(chain):
        dtype = spec(step).out_dtype(dtype)
    return dtype


def add_halo(a: Halo, b: Halo) -> Halo:
    """Halo of two steps applied in sequence (reaches add; ``None`` absorbs)."""
    return tuple(None if x is None or y is None else x + y for x, y in zip(a, b))  # type: ignore[return-value]


def chain_halo(chain: Sequence) -> Halo:
    """Context per side along ``z, y, x`` a block needs for the enabled steps of ``chain``."""
    halo: Halo = (0, 0, 0)
    for step in enabled(chain):
        halo = add_halo(halo, spec(step).halo(step))
    return halo


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def describe_chain(chain: Sequence) -> list[dict[str, Any]]:
    """Provenance of a chain: per enabled step its name, parameters, library call and version."""
    out = []
    for step in enabled(chain):
        dist, call = spec(step).library(step)
        out.append({"step": step.step, "params": params_of(step), "library": dist, "version": _version(dist), "call": call})
    return out


def chain_signature(chains: dict[str, Sequence]) -> str:
    """Short hash of the per-channel chains' steps and parameters (not library versions):
    a resumed run must use the same chains as the volumes already written."""
    data = {ch: [{"step": s.step, **params_of(s)} for s in enabled(chain)] for ch, chain in sorted(chains.items())}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

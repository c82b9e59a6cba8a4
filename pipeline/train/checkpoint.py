"""Resumable training state: model, optimiser, schedule, scaler, step, RNG states, bookkeeping.

The checkpoint holds only tensors and plain Python values, so it is read back with
``torch.load(weights_only=True)``; it is written to a temporary file and renamed,
so an interruption while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import InputError

LOG = logging.getLogger(__name__)

FORMAT = "spheroid-train-checkpoint"
VERSION = 1


def capture_rng(rng: np.random.Generator) -> dict[str, Any]:
    """States of python's ``random``, torch (CPU and CUDA) and the numpy generator ``rng``."""
    state = {
        "python": random.getstate(),
        "numpy": rng.bit_generator.state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], rng: np.random.Generator) -> None:
    """Inverse of :func:`capture_rng` (sets ``rng``'s state in place)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_deterministic(device: torch.device, enabled: bool = True) -> None:
    """Ask torch for reproducible kernels on CUDA, so a resumed run follows an uninterrupted one.

    On CPU the training loop is already deterministic (resume is bit-identical). On CUDA this
    turns off cuDNN's benchmark autotuner (which may pick other kernels in another process),
    selects deterministic cuDNN convolutions, sets ``CUBLAS_WORKSPACE_CONFIG`` for
    deterministic cuBLAS, and calls ``torch.use_deterministic_algorithms(True, warn_only=True)``.
    Operations without a deterministic CUDA kernel (the backward pass of trilinear
    up-sampling, some scatter/index operations) then warn once instead of failing, so a
    resumed run matches within floating-point tolerance rather than bit for bit; mixed
    precision adds rounding but no randomness (the gradient scaler's state is checkpointed).

    Parameters
    ----------
    device : torch.device
        Where the network trains.
    enabled : bool
        ``False`` lets cuDNN autotune for speed (not reproducible between processes).
    """
    if device.type != "cuda":
        return
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    LOG.info("CUDA kernels: %s", "deterministic (cuDNN benchmark off)" if enabled else "autotuned (not reproducible)")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain values) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    LOG.debug("checkpoint at step %s -> %s", state.get("step"), path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises
    ------
    InputError
        When the file is unreadable or not a training checkpoint.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        raise InputError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise InputError(f"{path}: not a version-{VERSION} spheroid training checkpoint")
    return state

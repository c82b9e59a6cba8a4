"""What produced an output: package and library versions, the resolved config, when."""

from __future__ import annotations

import datetime as _dt
import platform
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel

import pipeline

KEY_LIBRARIES = (
    "numpy",
    "scipy",
    "dask",
    "distributed",
    "zarr",
    "numcodecs",
    "scikit-image",
    "opencv-python-headless",
    "torch",
    "tifffile",
    "ome-zarr",
    "connected-components-3d",
    "pandas",
    "laptrack",
    "matplotlib",
)


_CONTEXT: ContextVar[dict[str, Any]] = ContextVar("spheroid_provenance_context", default={})


@contextmanager
def provenance_context(**facts: Any):
    """Add ``facts`` to every :func:`provenance` record made inside the block.

    ``spheroid run`` uses it so that every output of the run records the experiment file
    and the segmentation model, whichever stage wrote it.
    """
    token = _CONTEXT.set({**_CONTEXT.get(), **facts})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def library_versions(names: tuple[str, ...] = KEY_LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (``"not installed"`` for missing ones)."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(stage: str, config: BaseModel | dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A record stored with every output.

    Parameters
    ----------
    stage : str
        The stage that wrote the output (``"convert"``, ``"preprocess"``...).
    config : pydantic model or dict, optional
        The resolved configuration the stage ran with.
    **extra
        Further JSON-compatible facts (input files, counts...).

    Returns
    -------
    dict
        ``{"stage", "spheroid_version", "created", "python", "libraries", "config", ...}``.
    """
    if isinstance(config, BaseModel):
        config = config.model_dump(mode="json")
    record = {
        "stage": stage,
        "spheroid_version": pipeline.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "config": config,
    }
    record.update(_CONTEXT.get())
    record.update(extra)
    return record


def settings_signature(settings: dict[str, Any]) -> str:
    """A short hash of the settings that determine a stage's output (canonical JSON, SHA-256).

    Stored with an output (``attrs["spheroid"]["signature"]``) beside the settings
    themselves, so that a rerun can tell whether it would write the same data: a run
    with other settings is refused unless it recomputes everything (``--overwrite``).
    """
    import hashlib
    import json

    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

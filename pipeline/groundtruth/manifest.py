"""The manifest of a training set (``manifest.json``): read, validated, written atomically.

See :mod:`pipeline.groundtruth.trainset` for the folder it describes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.io.atomic import write_atomic

VERSION = 1
MANIFEST = "manifest.json"


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path``; an :class:`~pipeline.errors.InputError` naming it if it is missing or not ours."""
    if not path.is_file():
        raise InputError(f"{path.parent}: not a training set (no {MANIFEST}){_next_step(path.parent)}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION or not isinstance(manifest.get("items"), list):
        raise InputError(f"{path}: not a version-{VERSION} training-set manifest")
    return manifest


def _next_step(folder: Path) -> str:
    """A hint when ``folder`` holds what another command writes (a ``spheroid groundtruth`` output)."""
    if (folder / "groundtruth.json").is_file():
        return (
            f"; it holds the output of 'spheroid groundtruth'. Make a training set of image + labels with "
            f"'spheroid trainset add TRAINSET --image IMAGE.tif --labels {folder / 'instances.tif'} --source SOURCE' "
            "(or 'spheroid groundtruth ... --add-to TRAINSET --image IMAGE.tif') and train on TRAINSET"
        )
    if folder.is_dir() and any(folder.glob("*.tif")):
        return "; make one from image and label TIFFs with 'spheroid trainset add TRAINSET --image IMAGE.tif --labels LABELS.tif --source SOURCE'"
    return ""


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON atomically (:func:`pipeline.io.atomic.write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=1))


def jsonable(value: Any) -> Any:
    """Round-trip through JSON so numpy scalars and tuples become plain values (or fail early)."""
    try:
        return json.loads(json.dumps(value, default=_default))
    except (TypeError, ValueError) as exc:
        raise InputError(f"provenance is not JSON-serialisable ({exc})") from exc


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")

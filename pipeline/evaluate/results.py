"""Per-volume results kept in ``DIR/volumes/``, so that an interrupted evaluation resumes.

``DIR/volumes/settings.json`` records what decides a volume's figures: the evaluation
settings (thresholds, criterion, score weights, label names...; not the cluster or the
figures' look) and the ground-truth, prediction and semantic sources. Each evaluated
volume is one ``.npz`` file (no pickles), written to a temporary name and renamed, as
soon as its task returns. A rerun with the same settings loads the volumes already there
and evaluates only the others; with other settings it is refused unless ``--overwrite``
(which starts afresh). A volume whose input changed since (a label file's size or
modification time, a store image's provenance record) is evaluated again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.base import config_to_dict
from pipeline.config.evaluate import EvaluateConfig
from pipeline.errors import InputError
from pipeline.evaluate.sources import EvalItem
from pipeline.io.atomic import write_atomic

LOG = logging.getLogger(__name__)

FOLDER = "volumes"
SETTINGS = "settings.json"
#: Version of the record layout; records of another version are recomputed.
FORMAT = 1
#: Config sections that do not change any volume's figures.
NOT_SETTINGS = ("cluster", "plots")


def _source(spec: str | None) -> str | None:
    """A source as given, local paths made absolute (the same folder named two ways is one)."""
    if spec is None or "://" in spec:
        return spec
    return os.path.abspath(spec)


def settings_of(config: EvaluateConfig, sources: dict[str, str | None]) -> dict[str, Any]:
    """What the per-volume results depend on (compared on every rerun)."""
    plain = {k: v for k, v in config_to_dict(config).items() if k not in NOT_SETTINGS}
    return {"format": FORMAT, "config": plain, "sources": {k: _source(v) for k, v in sources.items()}}


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def _readable(key: str) -> str:
    """``config.report_threshold`` -> ``report_threshold``; ``sources.pred`` -> ``--pred``."""
    if key.startswith("config."):
        return key[len("config.") :]
    if key.startswith("sources."):
        return "--" + key[len("sources.") :].replace("_", "-")
    return "record format" if key == "format" else key


class VolumeResults:
    """The ``volumes/`` folder of an evaluation's output folder.

    Parameters
    ----------
    out : Path
        The evaluation's output folder (``--out``).
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.folder = self.out / FOLDER

    def open(self, settings: dict[str, Any], *, overwrite: bool = False, legacy: list[str] = ()) -> int:
        """Check or start the folder for ``settings``; returns how many records it holds.

        Parameters
        ----------
        settings : dict
            From :func:`settings_of`.
        overwrite : bool
            Start afresh whatever is there.
        legacy : list of str
            Output files found in ``out``; without a ``volumes/`` folder beside them they
            come from an evaluation that cannot be resumed. ``overwrite`` removes them first
            (``summary.json`` first of all), so that a run stopped early never leaves the
            previous evaluation's set looking like this one's.

        Raises
        ------
        InputError
            If the folder holds results of other settings (or unresumable outputs) and
            ``overwrite`` is false.
        """
        path = self.folder / SETTINGS
        if overwrite:
            for name in sorted(legacy, key=lambda n: n != "summary.json"):
                (self.out / name).unlink(missing_ok=True)
            shutil.rmtree(self.folder, ignore_errors=True)
        elif path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError):
                old = {}
            changed = [_readable(key) for key in _differences(old, settings)]
            if changed:
                raise InputError(
                    f"{self.out}: holds an evaluation made with other settings ({', '.join(changed[:3])}{'...' if len(changed) > 3 else ''} "
                    f"{'differs' if len(changed) == 1 else 'differ'}); pass --overwrite to replace it, or choose another --out"
                )
        elif legacy:
            raise InputError(f"{self.out}: holds a previous evaluation ({legacy[0]}) that cannot be resumed; pass --overwrite to replace it")
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".*.tmp-*"):  # left by a run killed while writing
            stale.unlink(missing_ok=True)
        write_atomic(path, json.dumps(settings, indent=1, sort_keys=True).encode())
        return sum(1 for _ in self.folder.glob("*.npz"))

    def path(self, item: EvalItem) -> Path:
        """Record file of one volume: a readable name plus a digest of its key."""
        key = f"{item.image}\0{item.channel}\0{item.t}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{item.image}-{item.channel}-t{item.t}")[:80]
        return self.folder / f"{slug}-{digest}.npz"

    def load(self, item: EvalItem, stamp: str, overlay_key: str | None) -> dict[str, Any] | None:
        """The kept result of ``item``, or None when there is none, or it is stale.

        ``overlay_key`` (for the volume the overlay shows) must equal the record's.
        """
        path = self.path(item)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != FORMAT or meta.get("stamp") != stamp:
                    LOG.info("%s t=%d: inputs changed since it was evaluated; evaluating it again", item.image, item.t)
                    return None
                if overlay_key is not None and meta.get("overlay_key") != overlay_key:
                    return None
                groups: dict[str, dict[str, np.ndarray]] = {"nuclei": {}, "predicted": {}, "overlay": {}}
                for name in data.files:
                    group, _, column = name.partition(".")
                    if group in groups:
                        groups[group][column] = data[name]
        except (OSError, ValueError, KeyError) as exc:
            LOG.warning("%s: unreadable (%s); evaluating the volume again", path, exc)
            return None
        overlay = None
        if groups["overlay"]:
            overlay = {"z": groups["overlay"]["z"], "truth": groups["overlay"]["truth"], "pred": groups["overlay"]["pred"], "image": groups["overlay"].get("image")}
        return {
            "image": meta["image"],
            "channel": meta["channel"],
            "t": meta["t"],
            "matching": {float(t): m for t, m in meta["matching"].items()},
            "nuclei": groups["nuclei"],
            "predicted": groups["predicted"],
            "confusion": meta["confusion"],
            "overlay": overlay,
            "timings": meta.get("timings", {}),
        }

    def save(self, item: EvalItem, result: dict[str, Any], stamp: str, overlay_key: str | None) -> Path:
        """Keep one volume's result (atomically)."""
        meta = {
            "format": FORMAT,
            "image": result["image"],
            "channel": result["channel"],
            "t": int(result["t"]),
            "stamp": stamp,
            "overlay_key": overlay_key if result.get("overlay") is not None else None,
            "matching": {repr(float(t)): m for t, m in result["matching"].items()},
            "confusion": result["confusion"],
            "timings": result.get("timings", {}),
        }
        arrays: dict[str, np.ndarray] = {"meta": np.asarray(json.dumps(meta))}
        for group in ("nuclei", "predicted"):
            for column, values in result[group].items():
                values = np.asarray(values)
                arrays[f"{group}.{column}"] = values.astype(str) if values.dtype == object else values
        if result.get("overlay") is not None:
            for name, values in result["overlay"].items():
                if values is not None:
                    arrays[f"overlay.{name}"] = np.asarray(values)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        path = self.path(item)
        write_atomic(path, buffer.getvalue())
        return path


def item_stamp(item: EvalItem) -> str:
    """The stamps of every input of ``item`` (not the raw image: that only changes the overlay)."""
    refs = (item.truth, item.pred, item.semantic_truth, item.semantic_pred)
    return "|".join(ref.stamp if ref is not None else "-" for ref in refs)


def overlay_key(item: EvalItem, slices: list[int] | None) -> str:
    """What decides the overlay data of ``item``: the slices asked and the raw image."""
    raw = item.raw
    return json.dumps({"slices": slices, "raw": None if raw is None else [raw.label, raw.stamp]})

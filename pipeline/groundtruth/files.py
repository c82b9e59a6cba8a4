"""File-level ground truth: a mask TIFF in, ``semantic.tif`` + ``instances.tif`` + a report out.

What ``spheroid groundtruth`` and ``spheroid trainset add`` run; the compute is
:func:`pipeline.groundtruth.prepare.prepare_target`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from pipeline.progress import progress_bar

from pipeline.config.groundtruth import GroundTruthConfig
from pipeline.errors import InputError
from pipeline.groundtruth.prepare import as_instances, prepare_target, summarize
from pipeline.groundtruth.tiffio import file_sha256, read_tiff, write_tiff
from pipeline.groundtruth.trainset import TrainingSet, class_balance, format_balance
from pipeline.provenance import provenance

LOG = logging.getLogger(__name__)

OUTPUTS = ("semantic.tif", "instances.tif", "groundtruth.json")


def read_masks(path: str | Path, *, timeseries: bool | None = None) -> tuple[np.ndarray, tuple | None]:
    """Read a ZYX mask or a TZYX series of masks as ``(T, Z, Y, X)`` plus the voxel size.

    Parameters
    ----------
    path : str or Path
        Mask TIFF.
    timeseries : bool, optional
        Whether a 4D file is TZYX; a 3D file is always one ZYX volume, a 2D one a single slice.

    Raises
    ------
    InputError
        On unreadable files or more than four axes.
    """
    data, voxel = read_tiff(path)
    if data.ndim == 2:
        data = data[None, None]
    elif data.ndim == 3:
        data = data[None]
    elif data.ndim != 4 or timeseries is False:
        raise InputError(f"{path}: expected ZYX masks or a TZYX series, got shape {data.shape}")
    return data, voxel


def prepare_volumes(masks: np.ndarray, config: GroundTruthConfig, *, name: str, progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Prepare each ``t`` of a ``(T, Z, Y, X)`` mask series; returns semantic, instances, per-t summaries."""
    semantic = np.zeros(masks.shape, np.uint8)
    instances = np.zeros(masks.shape, np.uint32)
    stats = []
    for t in progress_bar(range(masks.shape[0]), desc="ground truth", unit="volume", disable=not progress or masks.shape[0] == 1, leave=False):
        inst, relabelled = as_instances(masks[t], kind=config.masks.kind, connectivity=config.masks.connectivity, name=name)
        semantic[t], instances[t] = prepare_target(inst, **config.target.model_dump())
        stats.append({"t": t, "relabelled_binary": relabelled, **summarize(inst, instances[t], semantic[t])})
    return semantic, instances, stats


def groundtruth_files(
    labels_path: str | Path,
    out_dir: str | Path,
    config: GroundTruthConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``semantic.tif``, ``instances.tif`` and ``groundtruth.json`` for a mask TIFF.

    Outputs keep the input's shape (ZYX or TZYX). Instances are uint16 when the ids fit
    (so Fiji opens them), else uint32. Every array is computed before any file is written,
    and each file is written atomically, ``groundtruth.json`` last: it marks the set
    finished. A rerun on a finished set with the same mask file (by content) and parameters
    keeps it; with others it is refused unless ``overwrite``. Files of an interrupted run
    (no ``groundtruth.json``) are recomputed.

    Returns
    -------
    dict
        The report also written to ``groundtruth.json`` (class balance, per-t counts,
        parameters, provenance).
    """
    labels_path, out = Path(labels_path), Path(out_dir)
    previous = finished_report(out)
    if previous is not None and not overwrite:
        if same_inputs(previous, labels_path, config):
            LOG.info("%s: ground truth for %s is already there (same input and parameters): kept", out, labels_path)
            return previous
        raise InputError(f"{out}: holds ground truth made from another input or with other parameters; pass --overwrite to replace it")
    leftovers = [name for name in OUTPUTS if (out / name).exists()]
    if previous is None and leftovers:  # groundtruth.json is written last: these are from a stopped run
        LOG.info("%s: %s left by an interrupted run: recomputed", out, ", ".join(leftovers))
    masks, voxel = read_masks(labels_path)
    semantic, instances, stats = prepare_volumes(masks, config, name=str(labels_path), progress=progress)
    squeeze = masks.shape[0] == 1
    sem_out = semantic[0] if squeeze else semantic
    inst_out = instances[0] if squeeze else instances
    if inst_out.size and inst_out.max() <= np.iinfo(np.uint16).max:
        inst_out = inst_out.astype(np.uint16)
    balance = class_balance(semantic)
    report = provenance(
        "groundtruth",
        config.target,
        masks=config.masks.model_dump(mode="json"),
        input={"labels": str(labels_path.resolve()), "sha256": file_sha256(labels_path), "shape": list(masks.shape[1:] if squeeze else masks.shape)},
        voxel_size=list(voxel) if voxel else None,
        class_balance=balance,
        volumes=stats,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_tiff(out / "semantic.tif", sem_out, voxel)
    write_tiff(out / "instances.tif", inst_out, voxel)
    tmp = out / ".groundtruth.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out / "groundtruth.json")
    LOG.info(
        "%s -> %s: %d -> %d nuclei; class balance %s",
        labels_path, out, sum(s["instances_in"] for s in stats), sum(s["instances_out"] for s in stats), format_balance(balance),
    )
    return report


def finished_report(out: Path) -> dict[str, Any] | None:
    """The ``groundtruth.json`` of a finished run in ``out`` (written last, atomically), or ``None``."""
    try:
        report = json.loads((Path(out) / "groundtruth.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((Path(out) / name).is_file() for name in OUTPUTS) or not isinstance(report, dict):
        return None
    return report


def same_inputs(report: dict[str, Any], labels_path: Path, config: GroundTruthConfig) -> bool:
    """Whether ``report`` was made from the same mask file (by content) with the same parameters."""
    return (
        report.get("input", {}).get("sha256") == file_sha256(labels_path)
        and report.get("config") == config.target.model_dump(mode="json")
        and report.get("masks") == config.masks.model_dump(mode="json")
    )


def add_files_to_trainset(
    trainset: TrainingSet | str | Path,
    image_path: str | Path,
    labels_path: str | Path,
    config: GroundTruthConfig,
    *,
    item_id: str | None = None,
    source: str,
    split: str,
    channel: str,
    voxel_size=None,
    replace: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Prepare a mask TIFF and add it with its image to a training set (one item per ``t``).

    A TZYX series gives items ``<id>-t<t>``. Without ``item_id`` the id comes from the file
    names (:func:`default_item_id`) and is made unique in the set (another image already
    holding it moves it to ``<folder>-<id>``, then ``<id>-2``...). The voxel size comes from
    ``voxel_size``, else the image's, else the masks' TIFF metadata. A ``trainset`` given as a
    path is opened (or created) only once the inputs have been checked.
    """
    image_path, labels_path = Path(image_path), Path(labels_path)
    masks, mask_voxel = read_masks(labels_path)
    image, image_voxel = read_tiff(image_path, min_ndim=4 if masks.shape[0] > 1 else 3)
    image = image.reshape((1,) + image.shape) if image.ndim == 3 else image
    if image.shape != masks.shape:
        raise InputError(f"{labels_path}: shape {masks.shape[1:] if masks.shape[0] == 1 else masks.shape} does not match the image {image_path} {image.shape[1:] if image.shape[0] == 1 else image.shape}")
    voxel = voxel_size or image_voxel or mask_voxel
    if voxel is None:
        raise InputError(f"{image_path}: no voxel size in the TIFF metadata; pass --voxel-size Z Y X")
    semantic, instances, stats = prepare_volumes(masks, config, name=str(labels_path), progress=progress)
    trainset = TrainingSet.resolve(trainset)
    origin = {"image": str(image_path.resolve()), "labels": str(labels_path.resolve()), "image_sha256": file_sha256(image_path), "labels_sha256": file_sha256(labels_path)}
    if item_id is None:
        item_id = unique_item_id(trainset, image_path, labels_path, origin, n_times=masks.shape[0])
    ids = [item_id] if masks.shape[0] == 1 else [f"{item_id}-t{t}" for t in range(masks.shape[0])]
    taken = [i for i in ids if i in trainset]
    if taken and not replace:
        wanted = {"split": split, "source": source, "channel": channel, "voxel_size": [float(v) for v in voxel]}
        if len(taken) == len(ids) and all(_same_item(trainset.get(i), origin, t, config, wanted) for t, i in enumerate(ids)):
            LOG.info("%s: %s already in the training set (same files, settings and split): kept", trainset.root, ", ".join(ids))
            return [trainset.get(i) for i in ids]  # a rerun of the same command: nothing to do
        raise InputError(f"{trainset.root}: item(s) {', '.join(taken)} already exist; pass --replace to overwrite")
    entries = []
    for t in range(masks.shape[0]):
        this_id = ids[t]
        record = provenance("trainset-add", config.target, origin={**origin, "t": t}, tool="spheroid", summary=stats[t])
        entries.append(
            trainset.add(image[t], instances[t], semantic[t], id=this_id, voxel_size=voxel, channel=channel, source=source, split=split, provenance=record, replace=replace)
        )
    return entries


def _same_item(item: dict[str, Any], origin: dict[str, Any], t: int, config: GroundTruthConfig, wanted: dict[str, Any]) -> bool:
    """Whether a stored item was made from the same files (by content), time point, target settings and split."""
    record = item.get("provenance") or {}
    found = record.get("origin") or {}
    return (
        found.get("image_sha256") == origin["image_sha256"] and found.get("labels_sha256") == origin["labels_sha256"]
        and found.get("t") == t and record.get("config") == config.target.model_dump(mode="json")
        and all(item.get(k) == v for k, v in wanted.items())
    )


def _clean_id(text: str) -> str:
    """``text`` with every character an item id may not hold replaced by ``_``."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return text[:100]


def default_item_id(image_path: str | Path, labels_path: str | Path) -> str:
    """A training-set item id that says which volume it is, from its two file names.

    What the image's and the labels' names share (``1135_mini_raw.tif`` and
    ``1135_mini_label.tif`` give ``1135_mini``), else the image's name; when the image's
    name alone is generic (it is the labels' too, or a few characters such as ``raw``),
    its folder's name goes in front (``well_B2/image.tif`` gives ``well_B2-image``).

    Examples
    --------
    >>> default_item_id("data/1135_mini_raw.tif", "data/1135_mini_label.tif")
    '1135_mini'
    >>> default_item_id("B2/image.tif", "B2/masks.tif")
    'B2-image'
    """
    image, labels = Path(image_path), Path(labels_path)
    shared = _clean_id(os.path.commonprefix([image.stem, labels.stem]))
    name = shared if len(shared) >= 3 else _clean_id(image.stem)
    folder = _clean_id(image.resolve().parent.name)
    if folder and (len(name) < 6 or image.stem == labels.stem):
        name = f"{folder}-{name}" if name else folder
    return name or "item"


def unique_item_id(trainset: TrainingSet, image_path: Path, labels_path: Path, origin: dict[str, Any], *, n_times: int = 1) -> str:
    """:func:`default_item_id`, made unique in ``trainset``.

    An id held by an item of the same image and labels (by content) is kept: adding the same
    volume twice is then refused (``--replace``), not stored twice under two ids.
    """
    def ids(base: str) -> list[str]:
        return [base] if n_times == 1 else [f"{base}-t{t}" for t in range(n_times)]

    def same_volume(item_id: str) -> bool:
        found = (trainset.get(item_id).get("provenance") or {}).get("origin") or {}
        return found.get("image_sha256") == origin["image_sha256"] and found.get("labels_sha256") == origin["labels_sha256"]

    base = default_item_id(image_path, labels_path)
    folder = _clean_id(Path(image_path).resolve().parent.name)
    candidates = [base] + ([f"{folder}-{base}"] if folder and not base.startswith(f"{folder}-") else [])
    candidates += [f"{candidates[-1]}-{k}" for k in range(2, 1000)]
    for candidate in candidates:
        taken = [i for i in ids(candidate) if i in trainset]
        if not taken or all(same_volume(i) for i in taken):
            if candidate != base:
                LOG.info("%s: item id %r is taken by another volume; using %r", trainset.root, base, candidate)
            return candidate
    raise InputError(f"{trainset.root}: no free item id for {image_path}; pass --id")

"""Human in the loop: export predictions for correction, import corrected masks as training data.

``export_corrections`` writes one ``(t, channel)`` volume of a field as a folder that
Fiji (Labkit) and napari open directly::

    DIR/image.tif         ZYX image (preprocessed if done, else raw), ImageJ-calibrated (um)
    DIR/labels.tif        ZYX uint16 predicted labels, same shape and calibration
    DIR/correction.json   provenance: store, field, t, channel, images used, model, hashes
    DIR/README.txt        how to correct and how to bring the result back

``import_corrections`` reads the corrected mask back (``DIR/corrected*.tif``, else an edited
``DIR/labels.tif``, or any TIFF given directly), checks it against the exported image,
labels binary masks by 6-connected components (as the thesis did with MorphoLibJ), keeps
instance masks, prepares the semantic target and adds the item to a training set with
source ``hand-corrected`` and provenance pointing back at the export, so the next
training round starts from it.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.groundtruth import CorrectionsConfig, MaskConfig, TargetConfig
from pipeline.errors import InputError, StoreError
from pipeline.groundtruth.prepare import as_instances, prepare_target, summarize
from pipeline.groundtruth.tiffio import file_sha256, read_tiff, write_tiff
from pipeline.groundtruth.trainset import TrainingSet
from pipeline.io.atomic import write_atomic
from pipeline.io.plate import Field, Plate
from pipeline.provenance import provenance

LOG = logging.getLogger(__name__)

SIDECAR = "correction.json"
KIND = "spheroid-correction"
FILES = ("image.tif", "labels.tif", SIDECAR, "README.txt")

README = """Corrections for {store} field {field}, t={t}, channel {channel}
==========================================================================

image.tif   the {image_source} image (ZYX {shape}, voxel z={vz} y={vy} x={vx} um)
labels.tif  the predicted nuclei ({n_labels} labels; {labels_source}), same shape

Fiji / Labkit: open image.tif (the calibration is in the file), start Labkit on it,
import labels.tif as the labeling, fix merged, split, missing and spurious nuclei,
and export the corrected mask as a TIFF named  corrected.tif  in this folder.
A binary mask (nuclei = one value) is fine: it is split into nuclei by 6-connected
components on import (as with MorphoLibJ, connectivity 6); an instance mask
(one value per nucleus, e.g. after MorphoLibJ labelling) is kept as it is.

napari:
    import napari, tifffile
    viewer = napari.Viewer()
    viewer.add_image(tifffile.imread("image.tif"), scale={scale})
    labels = viewer.add_labels(tifffile.imread("labels.tif"), scale={scale})
    napari.run()   # paint / erase / fill, then:
    tifffile.imwrite("corrected.tif", labels.data.astype("uint16"))

Bring the correction back into a training set (the next training round uses it):
    spheroid import-corrections {folder} --trainset TRAINSET

Do not edit image.tif or correction.json: they identify what was corrected.
"""


def _pick_channel(names: tuple[str, ...], channel: str | None, where: str) -> int:
    if channel is None:
        return names.index("Hoechst") if "Hoechst" in names else 0
    if channel not in names:
        raise InputError(f"{where}: no channel {channel!r} (have: {', '.join(names)})")
    return names.index(channel)


def export_corrections(
    plate: Plate,
    field: Field,
    t: int,
    out_dir: str | Path,
    *,
    config: CorrectionsConfig | None = None,
    labels: np.ndarray | None = None,
    labels_file: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write image + predicted labels of one volume in forms Labkit and napari open directly.

    Parameters
    ----------
    plate : Plate
        The store.
    field : Field
        The field of view.
    t : int
        Time point.
    out_dir : str or Path
        Folder to create (or an existing empty one).
    config : CorrectionsConfig, optional
        Image preference, label image name and channel.
    labels : numpy.ndarray, optional
        Predicted labels to export instead of the store's ``labels/<name>``.
    labels_file : str, optional
        Where ``labels`` came from (recorded in the sidecar).
    overwrite : bool
        Replace an earlier export in ``out_dir``.

    Returns
    -------
    dict
        The sidecar written to ``correction.json``.

    Raises
    ------
    InputError, StoreError
        On a bad time point or channel, a missing or unfinished volume, shape mismatches,
        or an existing export without ``overwrite``.
    """
    config = config or CorrectionsConfig()
    out = Path(out_dir)
    where = f"{plate.location.url} field {field}"
    if out.exists() and any((out / name).exists() for name in FILES) and not overwrite:
        raise InputError(f"{out}: holds an earlier export; pass --overwrite to replace it")
    image_name, image_array = None, None
    for name in config.images:
        if field.has_image(name):
            arr = field.image(name)
            if not 0 <= t < arr.shape[0]:
                raise InputError(f"{where}: t={t} is outside 0..{arr.shape[0] - 1}")
            c = _pick_channel(field.meta(name).channels, config.channel, f"{where}/{name}")
            if field.done(name)[t, c]:
                image_name, image_array, channel_index = name, arr, c
                break
            LOG.info("%s/%s: t=%d c=%d not done; trying the next image", where, name, t, c)
    if image_array is None:
        raise StoreError(f"{where}: none of the images {', '.join(config.images)} has a finished volume at t={t}")
    meta = field.meta(image_name)
    channel = meta.channels[channel_index]
    image = np.asarray(image_array[t, channel_index])
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        image = image.astype(np.float32)

    labels_attrs: dict[str, Any] = {}
    if labels is None:
        if not field.has_labels(config.labels):
            raise StoreError(f"{where}: no labels/{config.labels} in the store; segment first or pass --labels PRED.tif")
        if not field.done(config.labels, label=True)[t, 0]:
            raise StoreError(f"{where}: labels/{config.labels} has no finished volume at t={t}")
        labels = field.label_volume(config.labels, t)
        labels_attrs = field.attrs(config.labels, label=True)
        labels_source = f"store:labels/{config.labels}"
    else:
        labels_source = f"file:{labels_file}" if labels_file else "array"
    labels = as_instances(labels, kind="instances", name=labels_file or "labels")[0]
    if labels.shape != image.shape:
        raise InputError(f"{labels_file or 'labels'}: shape {labels.shape} does not match the image {image.shape} of {where} t={t}")
    relabelled = False
    if labels.size and labels.max() > np.iinfo(np.uint16).max:
        from skimage.segmentation import relabel_sequential

        labels = relabel_sequential(labels)[0]
        relabelled = True
        if labels.max() > np.iinfo(np.uint16).max:
            raise InputError(f"{where}: more than 65535 labels cannot be exported for Fiji")
    labels16 = labels.astype(np.uint16)

    out.mkdir(parents=True, exist_ok=True)
    voxel = meta.voxel_size
    write_tiff(out / "image.tif", image, voxel)
    write_tiff(out / "labels.tif", labels16, voxel)
    sidecar = {
        "kind": KIND,
        "version": 1,
        "store": str(Path(plate.location.url).resolve()) if plate.location.scheme == "file" else plate.location.url,
        "plate": plate.name,
        "field": str(field),
        "well": field.well,
        "t": int(t),
        "channel": channel,
        "channel_index": int(channel_index),
        "image_source": image_name,
        "labels_source": labels_source,
        "labels_relabelled": relabelled,
        "model": labels_attrs.get("model") or labels_attrs.get("backend"),
        "labels_attrs": labels_attrs,
        "voxel_size": list(voxel),
        "shape": list(image.shape),
        "image_dtype": str(image.dtype),
        "n_labels": int(np.count_nonzero(np.unique(labels16))),
        "image_sha256": file_sha256(out / "image.tif"),
        "labels_sha256": file_sha256(out / "labels.tif"),
        "exported": provenance("export-corrections", config),
    }
    write_atomic(out / SIDECAR, json.dumps(sidecar, indent=1, default=str))
    readme = README.format(
        store=plate.location.url, field=field, t=t, channel=channel, image_source=image_name, shape=tuple(image.shape),
        vz=voxel[0], vy=voxel[1], vx=voxel[2], n_labels=sidecar["n_labels"], labels_source=labels_source,
        scale=tuple(round(v, 4) for v in voxel), folder=out,
    )
    write_atomic(out / "README.txt", readme)
    LOG.info("exported %s t=%d %s (%s image, %d labels) to %s", field, t, channel, image_name, sidecar["n_labels"], out)
    return sidecar


def find_correction(path: str | Path) -> tuple[Path, Path | None]:
    """The corrected mask and the export folder's sidecar (if any) for a folder or a TIFF.

    In a folder, ``corrected*.tif`` (the newest) is preferred over an edited ``labels.tif``.
    """
    path = Path(path)
    if path.is_dir():
        candidates = sorted(list(path.glob("corrected*.tif")) + list(path.glob("corrected*.tiff")), key=lambda p: p.stat().st_mtime)
        mask = candidates[-1] if candidates else path / "labels.tif"
        if not mask.is_file():
            raise InputError(f"{path}: no corrected.tif (or labels.tif) to import")
        sidecar = path / SIDECAR
        return mask, sidecar if sidecar.is_file() else None
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    sidecar = path.parent / SIDECAR
    return path, sidecar if sidecar.is_file() else None


def read_sidecar(path: Path) -> dict[str, Any]:
    """The export's ``correction.json``, validated."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable export sidecar ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise InputError(f"{path}: not a spheroid correction sidecar (kind {KIND!r} missing)")
    return data


def import_corrections(
    path: str | Path,
    trainset: TrainingSet | str | Path,
    *,
    target: TargetConfig | None = None,
    masks: MaskConfig | None = None,
    split: str = "train",
    item_id: str | None = None,
    image_path: str | Path | None = None,
    channel: str | None = None,
    voxel_size=None,
    tool: str | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Bring a corrected mask back as a ``hand-corrected`` training item.

    Parameters
    ----------
    path : str or Path
        An export folder, or a corrected mask TIFF (its folder's ``correction.json`` is used
        when present).
    trainset : TrainingSet, str or Path
        Where the item goes; a path is opened (or created) only after the inputs are checked.
    target, masks : config, optional
        Target preparation and mask reading (binary -> 6-connected components).
    split : str
        ``train``, ``val`` or ``test``.
    item_id : str, optional
        Default: ``hc-<plate>-<well>-<field>-t<t>-<channel>`` from the export.
    image_path : str or Path, optional
        The image the mask belongs to; needed without an export folder.
    channel, voxel_size : optional
        Needed without an export folder when the image TIFF lacks them.
    tool : str, optional
        Correction tool to record (``labkit``, ``napari``...).
    replace : bool
        Replace an item with the same id (a newer correction round of the same volume).

    Returns
    -------
    dict
        The new manifest entry.
    """
    target = target or TargetConfig()
    masks = masks or MaskConfig()
    mask_path, sidecar_path = find_correction(path)
    sidecar = read_sidecar(sidecar_path) if sidecar_path else None
    if image_path is None:
        if sidecar is None:
            raise InputError(f"{mask_path}: no {SIDECAR} beside it; pass --image for the image it belongs to")
        image_path = sidecar_path.parent / "image.tif"
    image_path = Path(image_path)
    image, image_voxel = read_tiff(image_path)
    if sidecar is not None and image_path.parent == sidecar_path.parent and file_sha256(image_path) != sidecar["image_sha256"]:
        raise InputError(f"{image_path}: changed since the export (hash differs from {SIDECAR}); re-export instead of editing the image")
    mask, _ = read_tiff(mask_path)
    if mask.ndim == 4 and mask.shape[-1] in (3, 4):
        raise InputError(f"{mask_path}: an RGB image, not a mask; export the labeling as a grey-level TIFF")
    if mask.shape != image.shape:
        raise InputError(f"{mask_path}: shape {mask.shape} does not match the exported image {image_path.name} {image.shape}")
    if sidecar is not None and mask_path.name == "labels.tif" and file_sha256(mask_path) == sidecar["labels_sha256"]:
        LOG.warning("%s: unchanged since the export: importing the prediction as it is", mask_path)
    instances, relabelled = as_instances(mask, kind=masks.kind, connectivity=masks.connectivity, name=str(mask_path))
    semantic, cleaned = prepare_target(instances, **target.model_dump())
    stats = summarize(instances, cleaned, semantic)
    if stats["instances_out"] == 0:
        raise InputError(f"{mask_path}: no nuclei left after preparation (empty mask?)")

    voxel = voxel_size or (sidecar["voxel_size"] if sidecar else None) or image_voxel
    if voxel is None:
        raise InputError(f"{image_path}: no voxel size in the TIFF; pass --voxel-size Z Y X")
    channel = channel or (sidecar["channel"] if sidecar else None)
    if channel is None:
        raise InputError(f"{mask_path}: no {SIDECAR} to say which channel this is; pass --channel")
    if item_id is None:
        if sidecar is None:
            item_id = "hc-" + re.sub(r"[^A-Za-z0-9._-]", "-", mask_path.stem)
        else:
            item_id = re.sub(r"[^A-Za-z0-9._-]", "-", f"hc-{sidecar['plate']}-{sidecar['field']}-t{sidecar['t']}-{channel}")
    corrected_from = None
    if sidecar is not None:
        corrected_from = {k: sidecar.get(k) for k in ("store", "plate", "field", "t", "channel", "image_source", "labels_source", "model", "image_sha256", "labels_sha256")}
        corrected_from["exported"] = sidecar.get("exported", {}).get("created")
    record = provenance(
        "import-corrections",
        target,
        corrected_from=corrected_from,
        correction_file=str(mask_path.resolve()),
        correction_sha256=file_sha256(mask_path),
        image_file=str(image_path.resolve()),
        imported=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        tool=tool,
        relabelled_binary=relabelled,
        connectivity=masks.connectivity if relabelled else None,
        summary=stats,
    )
    entry = TrainingSet.resolve(trainset).add(image, cleaned, semantic, id=item_id, voxel_size=voxel, channel=channel, source="hand-corrected", split=split, provenance=record, replace=replace)
    LOG.info("imported %s as %s: %d nuclei%s", mask_path, item_id, stats["instances_out"], " (binary mask relabelled)" if relabelled else "")
    return entry



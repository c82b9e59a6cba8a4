"""The raw image shown under the overlay's outlines: which file or store volume it is.

* ``--image`` a TIFF file: that file's volume at the pair's time point (time point 0 of a
  single-volume file), channel ``plots.image_channel`` (an index, default 0);
* ``--image`` a folder of TIFFs: the file with the ground truth's file name;
* ``--image`` a store, or none given when the prediction (else the ground truth) is a
  store: the field's raw image, channel ``plots.image_channel`` (a name or an index) or
  else the channel the labels record that they were made from (``segment`` records it),
  else the first.

Only metadata is read here, and only for the volumes the overlay shows; a worker reads
the pixels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, StoreError
from pipeline.evaluate.sources import EvalItem, VolumeRef, file_stamp, is_store, record_stamp
from pipeline.io.readers.tiff import open_tiff

LOG = logging.getLogger(__name__)


def attach_raw(items: list[EvalItem], indices: list[int], image: str | None, *, channel: int | str | None = None, storage_options: dict[str, Any] | None = None) -> list[EvalItem]:
    """``items`` with the raw volume set on those at ``indices`` (where one can be found).

    Raises
    ------
    InputError
        If ``image`` is given but holds no matching volume, or one of another shape.
    StoreError
        If a store named by ``image`` cannot be opened.
    """
    out = list(items)
    for i in indices:
        item = items[i]
        ref = _raw_ref(item, image, channel, storage_options)
        if ref is None:
            LOG.info("no raw image for %s t=%d: the overlay shows outlines on black (give --image)", item.image, item.t)
            continue
        if ref.shape != item.truth.shape:
            raise InputError(f"{ref.label} has shape {ref.shape} but {item.truth.label} has shape {item.truth.shape}")
        out[i] = replace(item, raw=ref)
    return out


def _raw_ref(item: EvalItem, image: str | None, channel: int | str | None, storage_options: dict[str, Any] | None) -> VolumeRef | None:
    if image is None:
        for ref in (item.pred, item.truth):
            if ref.location is not None:
                return _store_raw(ref.location, item, channel, labels_path=ref.array_path)
        return None
    if is_store(image):
        from pipeline.io.location import Location

        return _store_raw(Location(image, storage_options or {}), item, channel, labels_path=None, required=True)
    path = Path(image)
    if path.is_dir():
        path = path / item.image
        if not path.is_file():
            raise InputError(f"{image}: no raw image named {item.image} (a folder of images pairs with the ground truth by file name)")
    elif not path.is_file():
        raise InputError(f"{image}: no such file, folder or store")
    source = open_tiff(os.fspath(path))[0]
    n_t, n_c = source.shape[:2]
    if isinstance(channel, str):
        raise InputError(f"{path}: plots.image_channel {channel!r} is a name; give a channel index for a TIFF image")
    c = 0 if channel is None else int(channel)
    if not 0 <= c < n_c:
        raise InputError(f"{path}: no channel {c} (the image has {n_c})")
    t = item.t if n_t > 1 else 0
    if t >= n_t:
        raise InputError(f"{path}: no time point {t} (the image has {n_t})")
    return VolumeRef(f"{path} (t={t}, c={c})" if n_t * n_c > 1 else str(path), t, c, tuple(source.shape[2:]), str(source.dtype), source=source, stamp=file_stamp(source))


def _store_raw(location, item: EvalItem, channel: int | str | None, *, labels_path: str | None, required: bool = False) -> VolumeRef | None:
    from pipeline.io.plate import Plate, parse_field

    plate = Plate.open(location.url, storage_options=location.storage_options)
    field = plate.field(*parse_field(item.image)) if required else _field_or_none(plate, item.image)
    if field is None or not field.has_image():
        if required:
            raise InputError(f"{location.url}: field {item.image} has no raw image")
        return None
    meta = field.meta()
    array = field.image()
    if isinstance(channel, str):
        if channel not in meta.channels:
            raise InputError(f"{location.url}: plots.image_channel {channel!r} is not a channel of field {field} ({', '.join(meta.channels)})")
        c = meta.channels.index(channel)
    elif channel is not None:
        c = int(channel)
        if not 0 <= c < array.shape[1]:
            raise InputError(f"{location.url}: field {field} has no channel {c} (it has {array.shape[1]})")
    else:
        made_from = None
        if labels_path is not None:
            made_from = dict(location.open_group(labels_path.rsplit("/", 1)[0]).attrs.get("spheroid", {})).get("channel")
        c = meta.channels.index(made_from) if made_from in meta.channels else 0
    return VolumeRef(
        f"{location.child(field.array_path())} (t={item.t}, c={c})", item.t, c, tuple(int(s) for s in array.shape[2:]), str(array.dtype),
        location=location, array_path=field.array_path(), stamp=record_stamp(field.attrs()),
    )  # fmt: skip


def _field_or_none(plate, name: str):
    from pipeline.io.plate import parse_field

    try:
        return plate.field(*parse_field(name))
    except (InputError, StoreError):  # a file-named image (TIFF ground truth) is not a field of the store
        return None

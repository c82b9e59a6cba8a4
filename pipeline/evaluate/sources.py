"""Where the label volumes to compare come from, paired ground truth with prediction.

A source is a label TIFF (``YX``, ``ZYX``, ``TZYX`` or ``TCZYX``), a folder of them
(paired with the other folder by file name), or a plate store (``labels/<name>`` of
every field, every done ``(t, c)`` volume). Only file headers and store metadata are
read here, so that every input problem is reported before any work starts; the
pixels are read later by whichever Dask worker evaluates the pair.

Pairing rules:

* two single files pair with each other, whatever their names;
* two folders pair by file name; two stores by field, channel and time point;
* a single label TIFF against a store pairs with one field of the store: the one given
  with ``fields`` (needed when more than one field holds the labels), time point by time
  point; a single-volume (``ZYX``) TIFF is time point 0, or the one time point given with
  ``times``. A single-channel TIFF pairs with the store's single label channel whatever
  its name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import InputError
from pipeline.io.readers.tiff import GENERIC_AXES, TIFF_SUFFIXES, TiffSource, open_tiff

if TYPE_CHECKING:
    from pipeline.io.location import Location

LOG = logging.getLogger(__name__)

DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TCZYX"}


@dataclass(frozen=True)
class VolumeRef:
    """One ``(z, y, x)`` label volume: time point ``t`` and channel ``c`` of a TIFF series or a store array.

    Small and picklable: a Dask task receives it and reads the pixels itself.
    """

    label: str
    t: int
    c: int
    shape: tuple[int, int, int]
    dtype: str
    source: TiffSource | None = None
    location: Location | None = None
    array_path: str | None = None
    stamp: str = ""
    """What identifies the data for resuming: a file's size and modification time, or a
    store image's provenance record; a volume whose stamp changed is evaluated again."""

    def load(self) -> np.ndarray:
        """Read the volume (``z, y, x``; a 2D image has z = 1)."""
        if self.source is not None:
            return self.source.read(self.t, [self.c])[0]
        from pipeline.io.volumes import read_volume  # zarr: imported only for stores

        return np.asarray(read_volume(self.location, self.array_path, self.t, self.c))


@dataclass(frozen=True)
class EvalItem:
    """One ground-truth volume with its prediction (and optionally both semantic class maps)."""

    image: str
    channel: str
    t: int
    truth: VolumeRef
    pred: VolumeRef
    semantic_truth: VolumeRef | None = None
    semantic_pred: VolumeRef | None = None
    raw: VolumeRef | None = None
    """The raw image's volume, shown under the overlay (attached for the volumes shown)."""
    overlay: tuple[int, ...] | None = None
    """For the volume the overlay shows: its z slices (``()``: top, middle and bottom)."""

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.image, self.channel, self.t)


Key = tuple[str, str, int]


def _channel_name(names: list[str] | None, c: int, n: int, label: str) -> str:
    if names is None:
        return f"c{c}"
    if len(names) != n:
        raise InputError(f"{label}: {n} channel(s) but channel_names has {len(names)} ({', '.join(names)})")
    return str(names[c])


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_store(spec: str) -> bool:
    """A plate store (remote URL, or a folder with ``zarr.json``) rather than TIFF files."""
    scheme = _SCHEME.match(spec)
    return (scheme is not None and scheme.group(1).lower() != "file") or (Path(spec) / "zarr.json").is_file()


def tiff_volumes(path: str, image: str, *, axes: str | None = None, channel_names: list[str] | None = None) -> dict[Key, VolumeRef]:
    """Every ``(t, c)`` volume of a label TIFF, keyed by ``(image, channel, t)``.

    Raises
    ------
    InputError
        If the file is missing, empty, corrupt, not integer-typed or of an unsupported shape.
    """
    import tifffile

    axes_override = axes
    if axes_override is None:
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                file_axes, ndim = series.axes, len(series.shape)
        except Exception as exc:  # tifffile raises many kinds on empty or corrupt files
            raise InputError(f"{path}: not a readable TIFF file ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'empty'})") from exc
        if any(a in GENERIC_AXES for a in file_axes):
            if ndim not in DEFAULT_AXES:
                raise InputError(f"{path}: {ndim}-dimensional labels; expected YX, ZYX, TZYX or TCZYX (set tiff_axes)")
            axes_override = DEFAULT_AXES[ndim]
    sources = open_tiff(path, axes=axes_override)
    source = sources[0]
    if not np.issubdtype(source.dtype, np.integer):
        raise InputError(f"{path}: labels must be integers, got dtype {source.dtype}")
    n_t, n_c, z, y, x = source.shape
    out = {}
    for t in range(n_t):
        for c in range(n_c):
            ch = _channel_name(channel_names, c, n_c, path)
            label = f"{path} (t={t}, c={c})" if n_t * n_c > 1 else path
            out[(image, ch, t)] = VolumeRef(label, t, c, (z, y, x), str(source.dtype), source=source, stamp=file_stamp(source))
    return out


def file_stamp(source: TiffSource) -> str:
    """``size:mtime_ns`` of the files a TIFF source reads."""
    return ";".join(f"{f.size}:{f.mtime_ns}" for f in source.files)


def record_stamp(attrs: dict[str, Any]) -> str:
    """A short digest of a store image's ``spheroid`` attributes (what made it, and when)."""
    return hashlib.sha1(json.dumps(attrs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def store_volumes(
    url: str,
    name: str,
    *,
    storage_options: dict[str, Any] | None = None,
    channel_names: list[str] | None = None,
    fields: list[str] | None = None,
    times: list[int] | None = None,
) -> dict[Key, VolumeRef]:
    """Every done ``(t, c)`` volume of ``labels/<name>`` in every field of a plate store.

    Parameters
    ----------
    fields : list of str, optional
        Only these fields (``"B10/0"``).
    times : list of int, optional
        Only these time points.

    Raises
    ------
    InputError
        If no field holds such labels, or they are not integers.
    StoreError
        If the store cannot be opened or is not a plate, or a named field does not exist.
    """
    from pipeline.io.plate import Plate, iter_volumes  # zarr: imported only for stores

    plate = Plate.open(url, storage_options=storage_options)
    out: dict[Key, VolumeRef] = {}
    skipped = 0
    found = False
    for field in plate.select(fields) if fields else plate.fields():
        if not field.has_labels(name):
            if fields:
                raise InputError(f"{plate.location.url}: field {field} holds no labels/{name}")
            continue
        found = True
        stamp = record_stamp(field.attrs(name, label=True))
        array = field.labels(name)
        label = plate.location.child(field.label_path(name))
        if not np.issubdtype(array.dtype, np.integer):
            raise InputError(f"{label}: labels must be integers, got dtype {array.dtype}")
        done = field.done(name, label=True)
        n_c = array.shape[1] if array.ndim == 5 else 1  # t, z, y, x label images have one channel
        names = channel_names
        if names is None and n_c > 1 and field.has_image() and field.image().shape[1] == n_c:
            names = list(field.meta().channels)
        for t, c in iter_volumes((array.shape[0], n_c)):
            if times is not None and t not in times:
                continue
            if not done[t, c]:
                skipped += 1
                continue
            ch = _channel_name(names, c, n_c, label)
            out[(str(field), ch, t)] = VolumeRef(
                f"{label} (t={t}, c={c})", t, c, tuple(int(s) for s in array.shape[-3:]), str(array.dtype),
                location=plate.location, array_path=field.label_path(name) + "/0", stamp=stamp,
            )  # fmt: skip
    if not found:
        raise InputError(f"{plate.location.url}: no field holds labels/{name}")
    if skipped:
        LOG.warning("%s: %d volume(s) of labels/%s are not marked done and are left out", plate.location.url, skipped, name)
    return out


def discover(
    spec: str,
    *,
    labels: str,
    storage_options: dict[str, Any] | None = None,
    axes: str | None = None,
    channel_names: list[str] | None = None,
    fields: list[str] | None = None,
    times: list[int] | None = None,
) -> tuple[dict[Key, VolumeRef], str]:
    """Volumes of a source given on the command line, and its kind: ``"file"``, ``"folder"`` or ``"store"``."""
    if is_store(spec):
        return store_volumes(spec, labels, storage_options=storage_options, channel_names=channel_names, fields=fields, times=times), "store"
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES)
        if not files:
            raise InputError(f"{spec}: folder holds no TIFF files ({', '.join(TIFF_SUFFIXES)})")
        out: dict[Key, VolumeRef] = {}
        for f in files:
            out.update(tiff_volumes(os.fspath(f), f.name, axes=axes, channel_names=channel_names))
        return _only_times(out, times), "folder"
    if path.is_file():
        return tiff_volumes(os.fspath(path), path.name, axes=axes, channel_names=channel_names), "file"
    raise InputError(f"{spec}: no such file, folder or store")


def _only_times(volumes: dict[Key, VolumeRef], times: list[int] | None) -> dict[Key, VolumeRef]:
    return volumes if times is None else {k: v for k, v in volumes.items() if k[2] in times}


def _as_store_field(file_vol: dict[Key, VolumeRef], store_vol: dict[Key, VolumeRef], spec: str, store_spec: str, times: list[int] | None) -> dict[Key, VolumeRef]:
    """Key a single file's volumes like the store's one field (see the module's pairing rules)."""
    fields = sorted({k[0] for k in store_vol})
    if len(fields) != 1:
        raise InputError(
            f"{store_spec}: {len(fields)} fields hold these labels ({', '.join(fields[:4])}{'...' if len(fields) > 4 else ''}); "
            f"name the one {spec} shows with --field"
        )
    file_channels = sorted({k[1] for k in file_vol})
    store_channels = sorted({k[1] for k in store_vol})
    rename = {file_channels[0]: store_channels[0]} if len(file_channels) == 1 and len(store_channels) == 1 else {}
    file_times = sorted({k[2] for k in file_vol})
    shift = {}
    if len(file_times) == 1 and times is not None:
        if len(times) != 1:
            raise InputError(f"{spec} holds one time point: give one --t to say which of {store_spec} it shows")
        shift = {file_times[0]: times[0]}
    elif times is not None:
        file_vol = _only_times(file_vol, times)
    return {(fields[0], rename.get(ch, ch), shift.get(t, t)): ref for (_, ch, t), ref in file_vol.items()}


def _align(truth: dict[Key, VolumeRef], other: dict[Key, VolumeRef], what: str, spec: str) -> dict[Key, VolumeRef]:
    missing = [k for k in truth if k not in other]
    if missing:
        image, ch, t = missing[0]
        have = ", ".join(f"{i} channel {c} t={tt}" for i, c, tt in list(other)[:3]) or "none"
        raise InputError(f"{spec}: no {what} for {len(missing)} ground-truth volume(s), first: {image} channel {ch} t={t} (it has: {have}{'...' if len(other) > 3 else ''})")
    extra = len(other) - len(truth)
    if extra > 0:
        LOG.info("%s: %d %s volume(s) without ground truth are ignored", spec, extra, what)
    for key in truth:
        a, b = truth[key], other[key]
        if a.shape != b.shape:
            raise InputError(f"{a.label} has shape {a.shape} but {b.label} has shape {b.shape}")
    return {k: other[k] for k in truth}


def pair_sources(
    truth: str,
    pred: str,
    *,
    truth_labels: str = "nuclei",
    pred_labels: str = "nuclei",
    semantic_truth: str | None = None,
    semantic_pred: str | None = None,
    semantic_labels: str = "semantic",
    storage_options: dict[str, Any] | None = None,
    axes: str | None = None,
    channel_names: list[str] | None = None,
    fields: list[str] | None = None,
    times: list[int] | None = None,
) -> list[EvalItem]:
    """Pair every ground-truth volume with its prediction (and semantic maps when given).

    See the module's pairing rules. Predictions without ground truth are ignored.

    Parameters
    ----------
    fields : list of str, optional
        Fields of the stores to evaluate (``"B10/0"``); all when omitted.
    times : list of int, optional
        Time points to evaluate; all when omitted.

    Returns
    -------
    list of EvalItem
        In the order of the ground truth.

    Raises
    ------
    InputError
        Naming the source and the first volume that has no counterpart or another shape.
    """
    if (semantic_truth is None) != (semantic_pred is None):
        raise InputError("semantic masks need both --semantic-truth and --semantic-pred")
    kw = {"storage_options": storage_options, "axes": axes, "channel_names": channel_names, "fields": fields, "times": times}
    t_vol, t_kind = discover(truth, labels=truth_labels, **kw)
    if not t_vol:
        raise InputError(f"{truth}: no ground-truth volumes to evaluate")

    def aligned(spec: str, labels: str, what: str) -> dict[Key, VolumeRef]:
        nonlocal t_vol
        vol, kind = discover(spec, labels=labels, **kw)
        if kind == "file" and t_kind == "file":
            t_vol = _only_times(t_vol, times)
            vol = {(next(iter(t_vol), ("",))[0], ch, t): ref for (_, ch, t), ref in _only_times(vol, times).items()}
        elif kind == "file" and t_kind == "store":
            vol = _as_store_field(vol, t_vol, spec, truth, times)
        elif kind == "store" and t_kind == "file":
            if what == "prediction":  # the ground truth takes the prediction's field name
                t_vol = _as_store_field(t_vol, vol, truth, spec, times)
            else:
                vol = _as_store_field(vol, t_vol, spec, truth, times)
        return _align(t_vol, vol, what, spec)

    p_vol = aligned(pred, pred_labels, "prediction")
    if not t_vol:
        raise InputError(f"{truth}: no ground-truth volumes to evaluate")
    st = aligned(semantic_truth, semantic_labels, "semantic ground truth") if semantic_truth else {}
    sp = aligned(semantic_pred, semantic_labels, "semantic prediction") if semantic_pred else {}
    return [EvalItem(k[0], k[1], k[2], t_vol[k], p_vol[k], st.get(k), sp.get(k)) for k in t_vol]

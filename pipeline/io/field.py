"""One field of a plate: its images (raw and derived), labels, tables and their codec.

See :mod:`pipeline.io.plate` for the store's layout; :class:`Field` objects come from
:meth:`pipeline.io.plate.Plate.field` and :meth:`~pipeline.io.plate.Plate.add_field`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from pipeline.errors import StoreError
from pipeline.io import affine, ngff
from pipeline.io.chunks import get_records
from pipeline.io.ngff import ImageMeta

if TYPE_CHECKING:
    from pipeline.io.plate import Plate

LOG = logging.getLogger(__name__)

RAW = "raw"
RESERVED = {"labels", "tables", "done", "0", "normalization"}

DEFAULT_LEVEL = 2
"""Default Blosc-zstd level. Blosc maps its level ``L`` to zstd's ``2L - 1``, so 2 is zstd's own
default (3). On 16-bit microscopy stacks with bit-shuffle it encodes 1.3-1.6x faster than Blosc
level 3 (zstd 5) and the chunks are at most ~1.5% larger (measured on the shared samples)."""



def compressor(level: int = DEFAULT_LEVEL, cname: str = "zstd") -> BloscCodec:
    """The store's codec: Blosc with zstd and bit-shuffle (good on 16-bit microscopy).

    ``cname="lz4"`` (byte shuffle) suits float images that hardly compress: it encodes
    about 4x faster than zstd at a few percent more bytes.
    """
    if cname == "lz4":
        return BloscCodec(cname="lz4", clevel=level, shuffle="shuffle")
    return BloscCodec(cname=cname, clevel=level, shuffle="bitshuffle")


def chunk_codecs(level: int = DEFAULT_LEVEL, cname: str = "zstd") -> list:
    """The compressors of every image and label array: :func:`compressor`, then a CRC32C
    checksum of the compressed chunk, so that damage to a chunk file is caught on read
    (see :mod:`pipeline.io.chunks`)."""
    return [compressor(level, cname), Crc32cCodec()]


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as ``{"a.b": value}`` (lists kept whole)."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def describe_change(old: dict | None, new: dict | None, limit: int = 3) -> str:
    """``key: old -> new`` for the settings that differ (the first ``limit``; nested keys dotted), for error messages.

    Examples
    --------
    >>> describe_change({"model": {"diameter_um": None}, "tile": 1}, {"model": {"diameter_um": [34, 16, 17]}, "tile": 1})
    'model.diameter_um: None -> [34, 16, 17]'
    """
    if not isinstance(old, dict):
        return "no record of the settings it was made with"
    old, new = _flat(old), _flat(new or {})
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    parts = []
    for key in changed[:limit]:
        a, b = (str(v) for v in (old.get(key), new.get(key)))
        parts.append(f"{key}: {a[:60]} -> {b[:60]}")
    more = f", and {len(changed) - limit} more" if len(changed) > limit else ""
    return "; ".join(parts) + more if parts else "a different signature"


class Field:
    """One field of view of one well: a raw image plus derived images, labels and tables."""

    def __init__(self, plate: Plate, row: str, column: str, index: int):
        self.plate = plate
        self.row = row
        self.column = column
        self.index = index

    @property
    def well(self) -> str:
        return f"{self.row}{self.column}"

    @property
    def path(self) -> str:
        return f"{self.row}/{self.column}/{self.index}"

    def __str__(self) -> str:
        return f"{self.well}/{self.index}"

    def __repr__(self) -> str:
        return f"Field({self})"

    # -- paths ------------------------------------------------------------------------
    def image_path(self, name: str = RAW) -> str:
        """Group path of image ``name`` (``raw`` is the field group itself)."""
        if name == RAW:
            return self.path
        if name in RESERVED or "/" in name.strip("/").replace("labels/", "", 1):
            raise StoreError(f"image name {name!r} is reserved or not a plain name")
        return f"{self.path}/{name}"

    def label_path(self, name: str = "nuclei") -> str:
        return f"{self.path}/labels/{name}"

    def array_path(self, name: str = RAW) -> str:
        return f"{self.image_path(name)}/0"

    # -- images -----------------------------------------------------------------------
    def create_image(
        self,
        name: str,
        shape: tuple[int, int, int, int, int],
        dtype: np.dtype | str,
        meta: ImageMeta,
        *,
        chunk_yx: tuple[int, int] = (256, 256),
        overwrite: bool = False,
        attrs: dict[str, Any] | None = None,
        compression_level: int = DEFAULT_LEVEL,
        codec: str = "zstd",
        normalized: bool = False,
    ) -> zarr.Array:
        """Create image ``name`` with axes ``t, c, z, y, x``, its ``done`` array and NGFF metadata.

        Chunks hold one ``(t, c)`` volume split in y/x by ``chunk_yx``. An existing image
        with the same shape, dtype and chunks is kept (so an interrupted stage resumes)
        unless ``overwrite`` is set; one that differs raises :class:`StoreError`.
        ``compression_level`` and ``codec`` (``"zstd"`` or ``"lz4"``) select the Blosc
        compression (see :func:`compressor`). With ``normalized`` the image holds float32
        values stored as ``dtype`` integers plus one linear map per volume (see
        :mod:`pipeline.io.affine`); :meth:`image` then returns the float32 view.
        """
        return self._create(
            self.image_path(name),
            name,
            shape,
            dtype,
            meta,
            chunk_yx,
            overwrite,
            attrs,
            label=False,
            level=compression_level,
            codec=codec,
            normalized=normalized,
        )

    def create_labels(
        self,
        name: str,
        shape: tuple[int, ...],
        meta: ImageMeta,
        *,
        dtype: np.dtype | str = "uint32",
        chunk_yx: tuple[int, int] = (256, 256),
        overwrite: bool = False,
        attrs: dict[str, Any] | None = None,
    ) -> zarr.Array:
        """Create NGFF label image ``labels/<name>`` with axes ``t, z, y, x``.

        ``shape`` is ``(T, Z, Y, X)``, or an image's ``(T, 1, Z, Y, X)``. Its one channel is
        volume ``c = 0`` for the volume functions (:func:`~pipeline.io.volumes.write_volume`...)
        and for its ``done`` flags, which stay ``(T, 1)``.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) == 5:
            if shape[1] != 1:
                raise StoreError(f"{self.plate.location.child(self.label_path(name))}: label images have one channel; got shape {shape}")
            shape = (shape[0], *shape[2:])
        return self._create(self.label_path(name), name, shape, dtype, meta, chunk_yx, overwrite, attrs, label=True)

    def _create(self, gpath, name, shape, dtype, meta, chunk_yx, overwrite, attrs, *, label, level=DEFAULT_LEVEL, codec="zstd", normalized=False):
        shape = tuple(int(s) for s in shape)
        axes = ngff.LABEL_AXES if label else ngff.AXES
        if len(shape) != len(axes):
            raise StoreError(f"{self.plate.location.child(gpath)}: {'label images' if label else 'images'} have axes {', '.join(axes)}; got shape {shape}")
        if not label and shape[1] != len(meta.channels):
            raise StoreError(f"{self.plate.location.child(gpath)}: {shape[1]} channels but {len(meta.channels)} channel names")
        chunks = (1,) * (len(shape) - 3) + (shape[-3], min(chunk_yx[0], shape[-2]), min(chunk_yx[1], shape[-1]))
        done_shape = (shape[0], 1) if label else shape[:2]
        root = self.plate.group
        if gpath in root and not overwrite:
            existing = root[f"{gpath}/0"] if f"{gpath}/0" in root else None
            old_attrs = dict(root[gpath].attrs.get("spheroid", {}))
            same_kind = affine.is_stored_normalized(old_attrs) == normalized
            if existing is not None and "signature" in (attrs or {}) and old_attrs.get("signature") != attrs["signature"]:
                raise StoreError(
                    f"{self.plate.location.child(gpath)}: was made with other settings ({describe_change(old_attrs.get('settings'), attrs.get('settings'))}); "
                    "pass --overwrite to recompute it"
                )
            if existing is not None and existing.shape == shape and existing.dtype == np.dtype(dtype) and existing.chunks == chunks and same_kind:
                LOG.info("resuming into existing %s", self.plate.location.child(gpath))
                return existing
            if existing is not None:
                raise StoreError(
                    f"{self.plate.location.child(gpath)}: exists with shape {existing.shape} {existing.dtype}, "
                    f"chunks {existing.chunks}; pass --overwrite to replace it"
                )
        group = root.require_group(gpath)
        for child in ("0", "done", affine.ARRAY):
            if child in group:
                del group[child]
        array = group.create_array(
            "0",
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            compressors=chunk_codecs(level, codec),
            fill_value=0,
            dimension_names=list(axes),
        )
        group.create_array("done", shape=done_shape, chunks=(1, 1), dtype="uint8", fill_value=0, compressors=None)
        stored = {}
        if normalized:  # one chunk per volume: workers write their own (t, c) entry
            group.create_array(affine.ARRAY, shape=(*shape[:2], 3), chunks=(1, 1, 3), dtype="float64", fill_value=np.nan, compressors=None)
            stored = {"stored": affine.stored_attrs(dtype)}
        if label:
            ome = ngff.label_attrs(meta, name)
            ngff.register_label(root.require_group(f"{self.path}/labels"), name)
        else:
            window = np.iinfo(dtype).max if np.issubdtype(np.dtype(dtype), np.integer) else 1.0
            ome = ngff.image_attrs(meta, name=name, window_max=window)
        group.attrs.update({"ome": ome, "spheroid": {"complete": False, **(attrs or {}), **stored}})
        return array

    def has_image(self, name: str = RAW) -> bool:
        return f"{self.image_path(name)}/0" in self.plate.group

    def has_labels(self, name: str = "nuclei") -> bool:
        return f"{self.label_path(name)}/0" in self.plate.group

    def _group(self, gpath: str) -> zarr.Group:
        if f"{gpath}/0" not in self.plate.group:
            raise StoreError(f"{self.plate.location.child(gpath)}: no such image in the store")
        return self.plate.group[gpath]

    def image(self, name: str = RAW) -> "zarr.Array | affine.NormalizedImage":
        """The ``t, c, z, y, x`` array of image ``name``.

        For an image stored as integers plus per-volume linear maps, a read-only float32
        view (:class:`~pipeline.io.affine.NormalizedImage`); :meth:`stored_image` gives the
        integers.
        """
        group = self._group(self.image_path(name))
        if affine.is_stored_normalized(dict(group.attrs.get("spheroid", {}))):
            where = self.plate.location.child(self.image_path(name))
            if affine.ARRAY not in group:
                raise StoreError(f"{where}/{affine.ARRAY}: no such array (the image's per-volume normalisation is gone: rerun the stage that wrote it with --overwrite)")
            return affine.NormalizedImage(group["0"], group[affine.ARRAY], where=where)
        return group["0"]

    def stored_image(self, name: str = RAW) -> zarr.Array:
        """The zarr array image ``name`` is stored in, whatever it represents."""
        return self._group(self.image_path(name))["0"]

    def labels(self, name: str = "nuclei") -> zarr.Array:
        """The ``t, z, y, x`` array of label image ``name`` (``t, 1, z, y, x`` in stores written
        by earlier versions; :meth:`label_volume` reads either)."""
        return self._group(self.label_path(name))["0"]

    def label_volume(self, name: str, t: int) -> np.ndarray:
        """Time point ``t`` of label image ``name`` as a ``z, y, x`` array, checked (see
        :func:`~pipeline.io.volumes.read_volume`)."""
        from pipeline.io.volumes import read_volume

        return read_volume(self.plate.location, f"{self.label_path(name)}/0", t, 0)

    def meta(self, name: str = RAW) -> ImageMeta:
        """Channels, voxel size and time step of image ``name``."""
        return ngff.read_image_meta(dict(self._group(self.image_path(name)).attrs))

    def attrs(self, name: str = RAW, *, label: bool = False) -> dict[str, Any]:
        """The ``spheroid`` attributes of an image (provenance, ``complete``...)."""
        gpath = self.label_path(name) if label else self.image_path(name)
        return dict(self._group(gpath).attrs.get("spheroid", {}))

    def update_attrs(self, name: str = RAW, *, label: bool = False, **values: Any) -> None:
        gpath = self.label_path(name) if label else self.image_path(name)
        group = self._group(gpath)
        attrs = dict(group.attrs.get("spheroid", {}))
        attrs.update(values)
        group.attrs["spheroid"] = attrs

    def set_display_window(self, name: str, windows: dict[int, tuple[float, float]]) -> None:
        """Set the ``omero`` display window (start, end) of channels of image ``name``."""
        group = self._group(self.image_path(name))
        ome = dict(group.attrs["ome"])
        channels = [dict(ch) for ch in ome.get("omero", {}).get("channels", [])]
        for c, (start, end) in windows.items():
            if 0 <= c < len(channels):
                channels[c]["window"] = {**channels[c].get("window", {}), "start": float(start), "end": float(end)}
        ome["omero"] = {**ome.get("omero", {}), "channels": channels}
        group.attrs["ome"] = ome

    # -- completion -------------------------------------------------------------------
    def done(self, name: str = RAW, *, label: bool = False) -> np.ndarray:
        """``(T, C)`` bool array: which volumes are written and verified."""
        gpath = self.label_path(name) if label else self.image_path(name)
        flags = self._group(gpath)["done"]
        values = get_records(flags, where=self.plate.location.child(f"{gpath}/done"))
        return (flags[:] if values is None else values) > 0

    def is_complete(self, name: str = RAW, *, label: bool = False) -> bool:
        """True once every volume of the image is written and the stage has finished."""
        try:
            return bool(self.attrs(name, label=label).get("complete", False))
        except StoreError:
            return False

    def mark_complete(self, name: str = RAW, *, label: bool = False, **values: Any) -> None:
        """Set ``complete`` once every volume is done (raises if some are not)."""
        missing = np.argwhere(~self.done(name, label=label))
        if len(missing):
            t, c = missing[0]
            raise StoreError(f"{self}/{name}: {len(missing)} volume(s) not written (first: t={t}, c={c})")
        self.update_attrs(name, label=label, complete=True, **values)

    # -- tables -----------------------------------------------------------------------
    def table_url(self, name: str) -> str:
        """URL of the per-field table ``tables/<name>.parquet``."""
        return self.plate.location.child(f"{self.path}/tables/{name}.parquet")

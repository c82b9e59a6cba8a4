"""Float images stored as integers plus one linear map per ``(t, c)`` volume.

Percentile normalisation (the last step of the default preprocessing chain) maps a
16-bit volume linearly onto roughly 0..1. Storing its float32 result doubles the bytes
and costs a float conversion, encode and write per volume; storing the 16-bit input of
that step with its ``(low, high)`` loses nothing, since the float32 values are
recomputed on read with the same arithmetic
(:func:`pipeline.preprocess.normalize.normalize_range`), bit for bit.

Layout, beside the image's ``0`` and ``done`` arrays::

    <image>/0              t, c, z, y, x   the integers (uint8/uint16)
    <image>/normalization  t, c, 3         low, high, clip (0/1) per volume; NaN until written
    attrs spheroid.stored  {"as": "normalized", "dtype": "uint16", "array": "normalization"}

NGFF readers (napari, ome-zarr-py) see the integer image; :meth:`pipeline.io.plate.Field.image`
and :func:`pipeline.io.volumes.read_volume` return the float32 values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ARRAY = "normalization"
KIND = "normalized"


def stored_attrs(dtype: np.dtype | str) -> dict[str, Any]:
    """The ``spheroid.stored`` attribute of an image kept as integers of ``dtype``."""
    return {"as": KIND, "dtype": str(np.dtype(dtype)), "array": ARRAY}


def is_stored_normalized(attrs: dict[str, Any]) -> bool:
    """Whether an image's ``spheroid`` attributes say it is stored as integers + linear maps."""
    return (attrs.get("stored") or {}).get("as") == KIND


def normalized(volume: np.ndarray, params: np.ndarray, *, where: str = "") -> np.ndarray:
    """The float32 values of one stored ``z, y, x`` volume, given its ``(low, high, clip)``.

    Raises
    ------
    StoreError
        When the volume's map was never written (NaN).
    """
    from pipeline.errors import StoreError
    from pipeline.preprocess.normalize import normalize_range

    low, high, clip = (float(v) for v in params)
    if np.isnan(low) or np.isnan(high):
        raise StoreError(f"{where}: this volume's normalisation was never written (an interrupted run?)")
    return normalize_range(volume, low, high, clip=bool(clip))


class NormalizedImage:
    """Read-only float32 view of an image stored as integers plus per-volume linear maps.

    Supports what code reads images with: ``shape``, ``dtype``, ``chunks``, ``ndim`` and
    basic indexing (integers, slices, ``...``) that returns numpy arrays.

    Parameters
    ----------
    stored : zarr.Array
        The ``t, c, z, y, x`` integers.
    params : zarr.Array
        The ``t, c, 3`` maps.
    """

    def __init__(self, stored, params, where: str = ""):
        self.stored = stored
        self.params = params
        self.where = where
        self.shape = tuple(stored.shape)
        self.chunks = tuple(stored.chunks)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)

    def __repr__(self) -> str:
        return f"<NormalizedImage {self.shape} float32 stored as {self.stored.dtype}>"

    def __getitem__(self, key) -> np.ndarray:
        key = _full_key(key, self.ndim)
        data = np.asarray(self.stored[key])
        params = np.asarray(self.params[key[0], key[1]])
        kept = [isinstance(k, slice) for k in key[:2]]  # t and c axes present in the result
        out = np.empty(data.shape, np.float32)
        lead = data.shape[: sum(kept)]
        for index in np.ndindex(*lead):
            out[index] = normalized(data[index], params[index], where=self.where)
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype)


def _full_key(key, ndim: int) -> tuple:
    """``key`` as a tuple of ``ndim`` integers and slices (basic indexing only)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (ndim - len(key))
    for k in key:
        if not isinstance(k, (slice, int, np.integer)):
            raise TypeError(f"only integers, slices and ... index a normalised image, not {type(k).__name__}")
    if len(key) != ndim:
        raise IndexError(f"too many indices for an image of {ndim} axes")
    return tuple(int(k) if isinstance(k, np.integer) else k for k in key)

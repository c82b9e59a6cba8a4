"""Worker-side reading and writing of single ``(t, c)`` volumes.

These functions take a picklable :class:`~pipeline.io.location.Location` and an
array path, so a Dask task opens the store itself, writes its volume straight
to Zarr and returns only small metadata to the client.
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.errors import StoreError
from pipeline.io import affine
from pipeline.io.chunks import damaged, get_volume_chunks, missing_chunks, put_chunk, put_volume_chunks, volume_index
from pipeline.io.location import Location

LOG = logging.getLogger(__name__)


def done_path(array_path: str) -> str:
    """Path of the ``done`` array beside an image's ``0`` array."""
    return array_path.rsplit("/", 1)[0] + "/done"


def is_done(location: Location, array_path: str, t: int, c: int) -> bool:
    """Whether volume ``(t, c)`` is marked written and verified."""
    return bool(location.open_array(done_path(array_path))[t, c])


def mark_done(location: Location, array_path: str, t: int, c: int) -> None:
    """Mark volume ``(t, c)`` written and verified: last, once its data are in place."""
    _set_entry(location.open_array(done_path(array_path), mode="r+"), t, c, 1)


def read_volume(location: Location, array_path: str, t: int, c: int) -> np.ndarray:
    """Read volume ``(t, c)`` (``z, y, x``) of the array at ``array_path``.

    Decodes the chunks directly for the store's own layout (see
    :func:`~pipeline.io.chunks.get_volume_chunks`), through zarr otherwise. An image
    stored as integers plus per-volume linear maps (:mod:`pipeline.io.affine`) gives its
    float32 values.

    Raises
    ------
    StoreError
        When a chunk of the volume is missing, fails its checksum or cannot be decoded
        (writers always write every chunk: a missing one is damage, not the fill value).
    """
    array = location.open_array(array_path)
    where = location.child(array_path)
    volume = get_volume_chunks(array, t, c, where=where)
    if volume is None:
        volume = read_through_zarr(array, t, c, where=where)
    group_path = array_path.rsplit("/", 1)[0] if "/" in array_path else ""
    if affine.is_stored_normalized(dict(location.open_group(group_path).attrs.get("spheroid", {}))):
        params = location.open_array(f"{group_path}/{affine.ARRAY}" if group_path else affine.ARRAY)[t, c]
        volume = affine.normalized(volume, params, where=f"{where} t={t} c={c}")
    return volume


def read_through_zarr(array, t: int, c: int, *, where: str) -> np.ndarray:
    """``array[t, c]`` for layouts the direct path does not handle, with missing chunks and
    failed checksums reported as a damaged volume."""
    gone = missing_chunks(array, t, c)
    if gone:
        raise damaged(where, t, c, f"{len(gone)} chunk(s) missing (first: {gone[0]})")
    try:
        return array[volume_index(array, t, c)]
    except ValueError as exc:  # zarr's crc32c codec: "Stored and computed checksum do not match"
        raise damaged(where, t, c, str(exc).splitlines()[0][:200]) from None


def write_normalized_volume(
    location: Location, array_path: str, t: int, c: int, volume: np.ndarray, low: float, high: float, clip: bool, **kwargs
) -> dict:
    """Write the integers of volume ``(t, c)`` of a normalised image and its linear map, then mark it done.

    The map is written first: a volume is marked done (by :func:`write_volume`) only once
    both are in place. ``kwargs`` go to :func:`write_volume`.
    """
    group_path = array_path.rsplit("/", 1)[0]
    _set_entry(location.open_array(f"{group_path}/{affine.ARRAY}", mode="r+"), t, c, (float(low), float(high), float(bool(clip))))
    return write_volume(location, array_path, t, c, volume, **kwargs)


def _set_entry(array, t: int, c: int, value) -> None:
    """``array[t, c] = value`` for a ``done`` or ``normalization`` array (one chunk per entry)."""
    if not put_chunk(array, (t, c) + (0,) * (array.ndim - 2), value):
        array[t, c] = value


def write_volume(
    location: Location,
    array_path: str,
    t: int,
    c: int,
    volume: np.ndarray,
    *,
    verify: bool = True,
    stats: bool = True,
) -> dict:
    """Write one ``z, y, x`` volume, read it back, then mark it done.

    Parameters
    ----------
    location : Location
        The store.
    array_path : str
        Path of the ``t, c, z, y, x`` array (or a ``t, z, y, x`` label image's), e.g. ``"B/10/0/0"``.
    t, c : int
        Time point and channel.
    volume : numpy.ndarray
        Data of shape ``array.shape[-3:]``; cast to the array's dtype only if
        that loses nothing.
    verify : bool
        Read the written chunks back and compare before marking done (byte for byte
        for the store's own Blosc layout, see :mod:`pipeline.io.chunks`; otherwise by
        decoding the volume again).
    stats : bool
        Add the volume's minimum, maximum and mean to the result (three passes over it).

    Returns
    -------
    dict
        ``{"t", "c", "nbytes"}`` plus ``"min", "max", "mean"`` when ``stats`` is set:
        what the client keeps.

    Raises
    ------
    StoreError
        On a shape or dtype mismatch, or if the read-back differs.
    """
    array = location.open_array(array_path, mode="r+")
    if volume.shape != array.shape[-3:]:
        raise StoreError(f"{location.child(array_path)}: volume t={t} c={c} has shape {volume.shape}, expected {array.shape[-3:]}")
    if volume.dtype != array.dtype:
        if not np.can_cast(volume.dtype, array.dtype, casting="safe"):
            raise StoreError(f"{location.child(array_path)}: cannot store {volume.dtype} data in a {array.dtype} array without loss")
        volume = volume.astype(array.dtype)
    if not put_volume_chunks(array, t, c, volume, verify=verify, where=location.child(array_path)):
        lead = volume_index(array, t, c)
        array[lead] = volume
        if verify and not np.array_equal(array[lead], volume, equal_nan=volume.dtype.kind in "fc"):
            raise StoreError(f"{location.child(array_path)}: read-back of t={t} c={c} differs from what was written")
    mark_done(location, array_path, t, c)
    info = {"t": int(t), "c": int(c), "nbytes": int(volume.nbytes)}
    if stats:
        info.update(
            min=float(volume.min()) if volume.size else 0.0,
            max=float(volume.max()) if volume.size else 0.0,
            mean=float(volume.mean()) if volume.size else 0.0,
        )
    return info

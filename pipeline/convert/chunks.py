"""Write a volume as ready-compressed chunks, verified byte for byte, then mark it done.

:func:`pipeline.io.volumes.write_volume` goes through zarr's asynchronous codec
pipeline and verifies by decoding the volume again. For the store's own layout
(``bytes`` + ``blosc`` codecs, a regular chunk grid) the worker can do the same
work more cheaply: compress each chunk itself with the array's Blosc settings,
put the bytes in the store, read them back and compare. The first volume a
process writes is also read back through zarr and compared with the data, which
checks that the hand-encoded chunks decode as zarr expects. Any other layout
falls back to ``write_volume``. Either way the ``done`` entry is set only after
the verification.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import numpy as np

from pipeline.errors import StoreError
from pipeline.io.location import Location
from pipeline.io.volumes import done_path, write_volume

LOG = logging.getLogger(__name__)

_checked_once = False


def write_volume_chunks(location: Location, array_path: str, t: int, c: int, volume: np.ndarray, *, verify: bool = True) -> dict[str, Any]:
    """Write volume ``(t, c)`` chunk by chunk, verify it, then mark it done.

    Parameters and result are those of :func:`pipeline.io.volumes.write_volume`.

    Raises
    ------
    StoreError
        On a shape or dtype mismatch, or when a chunk read back differs.
    """
    global _checked_once
    array = location.open_array(array_path, mode="r+")
    codec = blosc_of(array)
    if codec is None:
        return write_volume(location, array_path, t, c, volume, verify=verify)
    where = location.child(array_path)
    if volume.shape != array.shape[2:]:
        raise StoreError(f"{where}: volume t={t} c={c} has shape {volume.shape}, expected {array.shape[2:]}")
    if volume.dtype != array.dtype:
        if not np.can_cast(volume.dtype, array.dtype, casting="safe"):
            raise StoreError(f"{where}: cannot store {volume.dtype} data in a {array.dtype} array without loss")
        volume = volume.astype(array.dtype)
    volume = volume.astype(array.dtype.newbyteorder("<"), copy=False)  # the bytes codec is little-endian
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    store, prefix = array.store_path.store, array.store_path.path
    prototype = default_buffer_prototype()
    chunk = array.chunks[2:]
    fill = array.fill_value
    for index in itertools.product(*(range(math.ceil(n / k)) for n, k in zip(volume.shape, chunk))):
        region = tuple(slice(i * k, min((i + 1) * k, n)) for i, k, n in zip(index, chunk, volume.shape))
        block = volume[region]
        if block.shape != chunk:  # edge chunks are stored full size, padded with the fill value
            full = np.full(chunk, fill, dtype=volume.dtype)
            full[tuple(slice(0, s) for s in block.shape)] = block
            block = full
        encoded = codec.encode(np.ascontiguousarray(block))
        key = f"{prefix}/{array.metadata.encode_chunk_key((t, c, *index))}" if prefix else array.metadata.encode_chunk_key((t, c, *index))
        sync(store.set(key, prototype.buffer.from_bytes(bytes(encoded))))
        if verify:
            stored = sync(store.get(key, prototype=prototype))
            if stored is None or stored.to_bytes() != bytes(encoded):
                raise StoreError(f"{where}: chunk {key} of t={t} c={c} reads back differently from what was written")
    if verify and not _checked_once:
        if not np.array_equal(array[t, c], volume):
            raise StoreError(f"{where}: t={t} c={c} decodes differently from what was written")
        _checked_once = True
    location.open_array(done_path(array_path), mode="r+")[t, c] = 1
    return {"t": int(t), "c": int(c), "nbytes": int(volume.nbytes)}


def blosc_of(array) -> Any | None:
    """A numcodecs Blosc matching ``array``'s codecs, or ``None`` if its layout is not bytes + blosc."""
    try:
        from numcodecs import Blosc
        from zarr.codecs import BloscCodec, BytesCodec

        codecs = array.metadata.codecs
        if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], BloscCodec):
            return None
        if array.metadata.chunk_grid.__class__.__name__ != "RegularChunkGrid":
            return None
        blosc = codecs[1]
        shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}[blosc.shuffle.value]
        typesize = blosc.typesize or array.dtype.itemsize
        return Blosc(cname=blosc.cname.value, clevel=blosc.clevel, shuffle=shuffle, blocksize=blosc.blocksize, typesize=typesize)
    except (AttributeError, KeyError, ImportError, TypeError):
        return None

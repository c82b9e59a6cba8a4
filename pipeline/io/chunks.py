"""Write a volume as ready-compressed chunks, verified byte for byte; read them back checked.

Writing through zarr (``array[t, c] = volume``) goes through its asynchronous codec
pipeline, and verifying it means decoding the volume again. For the store's own
layout (``bytes`` + ``blosc`` codecs, a regular chunk grid) a worker can do the
same work more cheaply: compress each chunk itself with the array's Blosc
settings, put the bytes in the store, read them back and compare. The first volume
a process writes this way is also read back through zarr and compared with the
data, which checks that the hand-encoded chunks decode as zarr expects.
:func:`pipeline.io.volumes.write_volume` uses this path when the layout allows it.

Integrity. Images are stored with a CRC32C checksum after each compressed chunk (zarr v3's
``crc32c`` codec, :class:`VolumeCodec` appends and checks the same four bytes), so a flipped
byte in a chunk file is caught on read instead of decoding into wrong pixels. A writer always
writes every chunk of a volume, so a chunk missing from a volume being read means damage
(a deleted or lost file), not the fill value: :func:`get_volume_chunks` says which.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import StoreError

LOG = logging.getLogger(__name__)

_checked_once = False


def volume_index(array, t: int, c: int) -> tuple[int, ...]:
    """The leading index of volume ``(t, c)``: ``(t, c)`` in a ``t, c, z, y, x`` image, ``(t,)`` in a
    ``t, z, y, x`` label image (whose single channel is ``c = 0``)."""
    if array.ndim == 4:
        if c != 0:
            raise IndexError(f"a t, z, y, x array has no channel {c}")
        return (int(t),)
    return (int(t), int(c))


def put_volume_chunks(array, t: int, c: int, volume: np.ndarray, *, verify: bool = True, where: str = "") -> bool:
    """Encode and store volume ``(t, c)`` of ``array`` chunk by chunk.

    Parameters
    ----------
    array : zarr.Array
        A ``t, c, z, y, x`` (or ``t, z, y, x``) array opened for writing.
    t, c : int
        Time point and channel.
    volume : numpy.ndarray
        Data of shape ``array.shape[-3:]`` and dtype ``array.dtype``.
    verify : bool
        Read every chunk back and compare its bytes with what was written.
    where : str
        The array's URL, for error messages.

    Returns
    -------
    bool
        False (nothing written) when the array's layout is not bytes + Blosc on a
        regular grid; the caller then writes through zarr.

    Raises
    ------
    StoreError
        When a chunk read back differs from what was written.
    """
    global _checked_once
    codec = volume_codec(array)
    if codec is None:
        return False
    volume = volume.astype(array.dtype.newbyteorder("<"), copy=False)  # the bytes codec is little-endian
    io = ChunkIO(array)
    lead = volume_index(array, t, c)
    chunk = array.chunks[-3:]
    fill = array.fill_value
    for index, region in chunk_regions(volume.shape, chunk):
        block = volume[region]
        if block.shape != chunk:  # edge chunks are stored full size, padded with the fill value
            full = np.full(chunk, fill, dtype=volume.dtype)
            full[tuple(slice(0, s) for s in block.shape)] = block
            block = full
        encoded = bytes(codec.encode(np.ascontiguousarray(block)))
        key = io.key((*lead, *index))
        io.put(key, encoded)
        if verify and io.get(key) != encoded:
            raise StoreError(f"{where}: chunk {key} of t={t} c={c} reads back differently from what was written")
    if verify and not _checked_once:
        if not np.array_equal(array[lead], volume, equal_nan=volume.dtype.kind in "fc"):
            raise StoreError(f"{where}: t={t} c={c} decodes differently from what was written")
        _checked_once = True
    return True


def put_chunk(array, coords: tuple[int, ...], values) -> bool:
    """Store ``values`` as the whole chunk at chunk coordinates ``coords`` of an uncompressed array.

    For the small per-volume records beside an image (its ``done`` flags, the
    ``normalization`` rows), whose chunks hold one volume's entry: the chunk's bytes are
    the values in the array's dtype, little-endian, put in place as
    :meth:`ChunkIO.put` does. A zarr write of the same entry goes through the event
    loop and costs a few milliseconds per volume.

    Returns
    -------
    bool
        False (nothing written) when the array is not ``bytes`` alone (little-endian) on a
        regular grid, or ``values`` is not exactly one chunk; the caller then writes through zarr.
    """
    if not _plain_bytes(array):
        return False
    data = np.asarray(values, dtype=array.dtype.newbyteorder("<"))
    if data.size != math.prod(array.chunks):
        return False
    if any(i >= math.ceil(n / k) for i, n, k in zip(coords, array.shape, array.chunks)):
        raise IndexError(f"chunk {coords} is outside an array of shape {array.shape}")
    io = ChunkIO(array)
    io.put(io.key(tuple(int(i) for i in coords)), data.tobytes())
    return True


def get_records(array, *, where: str = "") -> np.ndarray | None:
    """Read a whole uncompressed array of small chunks from a local store, chunk file by chunk file.

    For the per-volume records beside an image (its ``done`` flags, ``normalization``
    rows): one chunk per volume lets workers write their entries without touching each
    other's, but zarr takes ~0.5 ms per chunk to read them back (1.4 s for the 3,000
    flags of a 1,000-time-point series, twice per stage); plain file reads take a
    few microseconds each. Chunks never written read as the fill value.

    Returns
    -------
    numpy.ndarray or None
        The array's values; ``None`` when it is not ``bytes`` alone (little-endian) on a
        regular grid in a local store (the caller then reads through zarr).

    Raises
    ------
    StoreError
        When a chunk file does not hold exactly one chunk's bytes.
    """
    if not _plain_bytes(array):
        return None
    io = ChunkIO(array)
    if io.root is None:
        return None
    dtype = array.dtype.newbyteorder("<")
    chunk = tuple(array.chunks)
    grid = tuple(math.ceil(n / k) for n, k in zip(array.shape, chunk))
    fill = np.full(chunk, array.fill_value, dtype=dtype).tobytes()
    parts = []
    for index in itertools.product(*map(range, grid)):
        key = io.key(index)
        raw = io.get(key)
        if raw is not None and len(raw) != len(fill):
            raise StoreError(f"{where}: chunk {key} holds {len(raw)} bytes, not {len(fill)}; corrupt or truncated?")
        parts.append(fill if raw is None else raw)
    # chunks in grid order -> (g0, k0, g1, k1, ...) -> the padded array -> its first shape entries
    blocks = np.frombuffer(b"".join(parts), dtype=dtype).reshape(grid + chunk)
    order = [axis for pair in zip(range(len(grid)), range(len(grid), 2 * len(grid))) for axis in pair]
    padded = blocks.transpose(order).reshape([g * k for g, k in zip(grid, chunk)])
    return np.array(padded[tuple(slice(0, n) for n in array.shape)], dtype=array.dtype)


def get_volume_chunks(array, t: int, c: int, *, where: str = "", missing: str = "error") -> np.ndarray | None:
    """Read volume ``(t, c)`` of ``array`` by decoding its chunks directly.

    The counterpart of :func:`put_volume_chunks`: the chunks' bytes come straight from
    the store and Blosc decodes them into the volume, without zarr's event loop and
    codec pipeline (for a 21 x 512 x 512 volume in four chunks about half the time
    of ``array[t, c]``). Checksummed chunks are verified first.

    Parameters
    ----------
    missing : {"error", "fill"}
        What a chunk that is not in the store means: damage (``"error"``, the default:
        writers always write every chunk of a volume) or a volume not written yet
        (``"fill"``: it reads as the fill value, as zarr does).

    Returns
    -------
    numpy.ndarray or None
        The ``z, y, x`` volume; ``None`` when the layout is not bytes + Blosc on a
        regular grid (the caller then reads through zarr).

    Raises
    ------
    StoreError
        When a chunk is missing, fails its checksum or cannot be decoded.
    """
    codec = volume_codec(array)
    if codec is None:
        return None
    dtype = array.dtype.newbyteorder("<")
    lead = volume_index(array, t, c)
    shape = tuple(array.shape[-3:])
    chunk = tuple(array.chunks[-3:])
    out = np.empty(shape, dtype=array.dtype)
    io = ChunkIO(array)
    scratch = np.empty(chunk, dtype=dtype)
    for index, region in chunk_regions(shape, chunk):
        key = io.key((*lead, *index))
        encoded = io.get(key)
        if encoded is None:
            if missing != "fill":
                raise damaged(where, t, c, f"chunk {key} is missing")
            out[region] = array.fill_value
            continue
        try:
            codec.decode(encoded, out=scratch)
        except ChecksumError as exc:
            raise damaged(where, t, c, f"chunk {key} fails its checksum ({exc})") from None
        except Exception as exc:  # Blosc reports corrupt input as RuntimeError or ValueError
            raise damaged(where, t, c, f"chunk {key} cannot be decoded ({exc})") from exc
        out[region] = scratch[tuple(slice(0, r.stop - r.start) for r in region)]
    return out


def missing_chunks(array, t: int, c: int) -> list[str]:
    """Keys of the chunks of volume ``(t, c)`` that are not in the store (any codec)."""
    io = ChunkIO(array)
    lead = volume_index(array, t, c)
    keys = [io.key((*lead, *index)) for index, _ in chunk_regions(tuple(array.shape[-3:]), tuple(array.chunks[-3:]))]
    return [key for key in keys if not io.exists(key)]


def check_volume_chunks(array, t: int, c: int, *, where: str = "", decode: bool = False) -> None:
    """Check that every chunk of volume ``(t, c)`` is in the store and passes its checksum,
    one chunk in memory at a time (for volumes too large to read whole, and for
    ``spheroid verify``). Arrays without checksums are decoded instead when ``decode`` is set.

    Raises
    ------
    StoreError
        Naming the volume and the first damaged chunk.
    """
    codec = volume_codec(array)
    io = ChunkIO(array)
    lead = volume_index(array, t, c)
    chunk = tuple(array.chunks[-3:])
    scratch = np.empty(chunk, dtype=array.dtype.newbyteorder("<")) if codec is not None and decode else None
    for index, _ in chunk_regions(tuple(array.shape[-3:]), chunk):
        key = io.key((*lead, *index))
        encoded = io.get(key)
        if encoded is None:
            raise damaged(where, t, c, f"chunk {key} is missing")
        if codec is None:
            continue
        try:
            if codec.checksum and not decode:
                codec.verify(encoded)
            elif decode:
                codec.decode(encoded, out=scratch)
        except ChecksumError as exc:
            raise damaged(where, t, c, f"chunk {key} fails its checksum ({exc})") from None
        except Exception as exc:  # Blosc reports corrupt input as RuntimeError or ValueError
            raise damaged(where, t, c, f"chunk {key} cannot be decoded ({exc})") from exc


class DamagedVolume(StoreError):
    """A volume marked done whose chunks are missing or fail their checksum."""

    def __init__(self, where: str, t: int, c: int, problem: str):
        super().__init__(
            f"{where}: volume t={t} c={c} is damaged: {problem}; "
            "run `spheroid verify STORE --repair` to unmark the damaged volumes, then rerun the stage that wrote them"
        )
        self.problem = problem

    def __reduce__(self):  # picklable with its own arguments, so it crosses from Dask workers intact
        return (_rebuild_damaged, (str(self), self.problem))


def _rebuild_damaged(message: str, problem: str) -> "DamagedVolume":
    exc = DamagedVolume.__new__(DamagedVolume)
    StoreError.__init__(exc, message)
    exc.problem = problem
    return exc


def damaged(where: str, t: int, c: int, problem: str) -> DamagedVolume:
    """The error for a damaged volume: which one, what is wrong, what to do."""
    return DamagedVolume(where, t, c, problem)


def chunk_regions(shape: tuple[int, ...], chunk: tuple[int, ...]):
    """Yield ``(chunk index, region of the volume)`` for every chunk of a regular grid."""
    for index in itertools.product(*(range(math.ceil(n / k)) for n, k in zip(shape, chunk))):
        yield index, tuple(slice(i * k, min((i + 1) * k, n)) for i, k, n in zip(index, chunk, shape))


class ChunkIO:
    """Put and get an array's encoded chunks: plain file I/O for a local store, else the zarr store API.

    A local store's chunk files are written like zarr's ``LocalStore`` does (a
    temporary file renamed into place), without a round trip through zarr's
    event loop for every chunk.
    """

    def __init__(self, array):
        from zarr.storage import LocalStore

        self.array = array
        self.store = array.store_path.store
        self.prefix = array.store_path.path
        self.root = Path(self.store.root) if isinstance(self.store, LocalStore) else None

    def key(self, coords: tuple[int, ...]) -> str:
        key = self.array.metadata.encode_chunk_key(coords)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        if self.root is None:
            from zarr.core.buffer import default_buffer_prototype
            from zarr.core.sync import sync

            sync(self.store.set(key, default_buffer_prototype().buffer.from_bytes(data)))
            return
        path = os.path.join(self.root, key)
        partial = f"{path}.{uuid.uuid4().hex}.partial"
        try:
            try:
                file = open(partial, "wb")
            except FileNotFoundError:  # the chunk's folder is new: made here, not checked before every chunk
                os.makedirs(os.path.dirname(path), exist_ok=True)
                file = open(partial, "wb")
            with file:
                file.write(data)
            os.replace(partial, path)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            if exc.filename is None:  # a full disk names no file: name the chunk
                raise OSError(exc.errno, exc.strerror, path) from exc
            raise
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise

    def exists(self, key: str) -> bool:
        if self.root is None:
            from zarr.core.sync import sync

            return bool(sync(self.store.exists(key)))
        return os.path.isfile(os.path.join(self.root, key))

    def get(self, key: str) -> bytes | None:
        if self.root is None:
            from zarr.core.buffer import default_buffer_prototype
            from zarr.core.sync import sync

            stored = sync(self.store.get(key, prototype=default_buffer_prototype()))
            return None if stored is None else stored.to_bytes()
        try:
            with open(os.path.join(self.root, key), "rb") as file:  # plain strings: ~half a Path's cost
                return file.read()
        except FileNotFoundError:
            return None


class ChecksumError(ValueError):
    """A chunk's stored CRC32C differs from its bytes' (the chunk file is damaged)."""


class VolumeCodec:
    """The store's chunk codec done by hand: Blosc, then (optionally) a CRC32C of the result.

    The bytes are exactly what zarr's ``BloscCodec`` followed by ``Crc32cCodec`` produce:
    the Blosc frame, then its CRC32C as four little-endian bytes.
    """

    def __init__(self, blosc, checksum: bool):
        self.blosc = blosc
        self.checksum = checksum

    def encode(self, block: np.ndarray) -> bytes:
        data = bytes(self.blosc.encode(block))
        if self.checksum:
            data += crc32c(data)
        return data

    def verify(self, encoded: bytes) -> memoryview:
        """The Blosc frame of ``encoded`` after checking its CRC32C (raises :class:`ChecksumError`)."""
        body, stored = memoryview(encoded)[:-4], bytes(encoded[-4:])
        if len(encoded) < 4 or crc32c(body) != stored:
            raise ChecksumError(f"stored CRC32C {stored.hex()} != computed {crc32c(body).hex()}")
        return body

    def decode(self, encoded: bytes, out: np.ndarray) -> np.ndarray:
        if self.checksum:
            encoded = self.verify(encoded)
        return self.blosc.decode(encoded, out=out)


def crc32c(data) -> bytes:
    """CRC32C of ``data`` as the four little-endian bytes zarr's ``crc32c`` codec appends."""
    import google_crc32c

    return int(google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)).to_bytes(4, "little")


def volume_codec(array) -> VolumeCodec | None:
    """The :class:`VolumeCodec` of ``array``: ``bytes`` + ``blosc`` (+ ``crc32c``) codecs on a
    regular grid, little-endian; ``None`` for any other layout (callers then go through zarr)."""
    try:
        from zarr.codecs import Crc32cCodec

        codecs = list(array.metadata.codecs)
        checksum = bool(codecs) and isinstance(codecs[-1], Crc32cCodec)
        if checksum:
            codecs = codecs[:-1]
        blosc = _blosc(codecs, array)
        return None if blosc is None else VolumeCodec(blosc, checksum)
    except (AttributeError, KeyError, ImportError, TypeError):
        return None


def blosc_of(array) -> Any | None:
    """A numcodecs Blosc matching ``array``'s Blosc codec, or ``None`` if its layout is not
    bytes + blosc (+ crc32c) on a regular grid."""
    codec = volume_codec(array)
    return None if codec is None else codec.blosc


def _blosc(codecs, array):
    from numcodecs import Blosc
    from zarr.codecs import BloscCodec, BytesCodec

    if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], BloscCodec):
        return None
    if not _little_endian(codecs[0], array) or not _regular_grid(array):
        return None
    blosc = codecs[1]
    shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}[blosc.shuffle.value]
    typesize = blosc.typesize or array.dtype.itemsize
    return Blosc(cname=blosc.cname.value, clevel=blosc.clevel, shuffle=shuffle, blocksize=blosc.blocksize, typesize=typesize)


def _plain_bytes(array) -> bool:
    """Whether ``array`` stores its chunks as raw little-endian bytes on a regular grid."""
    from zarr.codecs import BytesCodec

    codecs = array.metadata.codecs
    return len(codecs) == 1 and isinstance(codecs[0], BytesCodec) and _little_endian(codecs[0], array) and _regular_grid(array)


def _little_endian(bytes_codec, array) -> bool:
    """Whether the ``bytes`` codec stores ``array``'s items little-endian (the order the direct paths use)."""
    endian = getattr(bytes_codec.endian, "value", bytes_codec.endian)
    return endian in (None, "little") or array.dtype.itemsize == 1


def _regular_grid(array) -> bool:
    """Whether ``array``'s chunks form a regular grid (the layout the direct chunk paths handle)."""
    return array.metadata.chunk_grid.__class__.__name__ == "RegularChunkGrid"

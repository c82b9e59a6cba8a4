"""OME-TIFF, ImageJ hyperstacks and plain multi-page TIFF, read one time point at a time.

Any order of the T, C and Z axes is accepted (tifffile's ``series.axes``, e.g.
``"TZCYX"``, ``"CZYX"``, ``"ZYX"``); missing axes get length 1, so a 2D section
is a volume with Z = 1. A time point is read page by page
(``TiffFile.asarray(key=pages)``), so memory holds one ``(C, Z, Y, X)`` volume
whatever the length of the series.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pipeline.errors import InputError
from pipeline.io.readers.base import FileStamp, Source, SourceMeta
from pipeline.io.readers.metadata import imagej_meta, ome_meta, resolution_meta

LOG = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
#: Axis letters tifffile uses for an unnamed stack dimension (plain multi-page files).
GENERIC_AXES = "QIEL"


@dataclass(frozen=True)
class AxisLayout:
    """Where T, C and Z live in a TIFF series.

    Parameters
    ----------
    stack_axes : str
        Roles of the axes above the page (one of ``T``, ``C``, ``Z`` or ``-`` for a
        length-1 axis that is ignored), in file order.
    stack_shape : tuple of int
        Their lengths; the pages are these axes flattened in C order.
    channels_in_page : bool
        Channels are the samples of each page (RGB-like ``YXS`` or ``SYX`` pages).
    sample_axis : int
        Position of the samples axis within a page (only with ``channels_in_page``).
    shape : tuple of int
        The series as ``(T, C, Z, Y, X)``.
    """

    stack_axes: str
    stack_shape: tuple[int, ...]
    channels_in_page: bool
    sample_axis: int
    shape: tuple[int, int, int, int, int]

    @property
    def n_pages(self) -> int:
        return int(math.prod(self.stack_shape))

    def page_indices(self, t: int, channels: list[int]) -> list[int]:
        """Page numbers (within the series) holding time point ``t``, ordered channel-major then z."""
        planes = [0] if self.channels_in_page else channels
        out = []
        for c in planes:
            for z in range(self.shape[2]):
                coord = {"T": t, "C": c, "Z": z, "-": 0}
                out.append(int(np.ravel_multi_index([coord[a] for a in self.stack_axes], self.stack_shape)) if self.stack_axes else 0)
        return out


def layout_from_axes(axes: str, shape: tuple[int, ...], page_axes: str, *, label: str) -> AxisLayout:
    """Map a tifffile series' axes onto ``T, C, Z, Y, X``.

    Parameters
    ----------
    axes : str
        The series' axes, e.g. ``"TZCYX"`` (its last letters are the page's).
    shape : tuple of int
        The series' shape.
    page_axes : str
        The axes of one page: ``"YX"``, ``"YXS"`` or ``"SYX"``.
    label : str
        File name for error messages.

    Returns
    -------
    AxisLayout

    Raises
    ------
    InputError
        For an axis the pipeline cannot place (e.g. two unnamed stack axes, or a
        position axis with several entries), naming the file and its axes.

    Examples
    --------
    >>> layout_from_axes("ZCYX", (5, 3, 64, 80), "YX", label="x.tif").shape
    (1, 3, 5, 64, 80)
    """
    axes = axes.upper()
    if len(axes) != len(shape):
        raise InputError(f"{label}: axes {axes!r} do not match shape {tuple(shape)}")
    if not axes.endswith(page_axes) or sorted(page_axes.replace("S", "")) != ["X", "Y"]:
        raise InputError(f"{label}: unsupported page layout {page_axes!r} in series axes {axes!r}")
    n_stack = len(axes) - len(page_axes)
    stack, stack_shape = axes[:n_stack], tuple(int(s) for s in shape[:n_stack])
    page_shape = dict(zip(page_axes, shape[n_stack:]))
    roles = []
    for letter, size in zip(stack, stack_shape):
        if letter in "TCZ" and letter in roles:
            raise InputError(f"{label}: axis {letter} appears twice in {axes!r}")
        if letter in "TCZ":
            roles.append(letter)
        elif size == 1:
            roles.append("-")
        elif letter in GENERIC_AXES:
            roles.append("?")
        else:
            raise InputError(f"{label}: axis {letter!r} of length {size} in {axes!r} has no place in t, c, z, y, x; set 'axes' to name it")
    for i, role in enumerate(roles):
        if role == "?":
            free = [r for r in "ZT" if r not in roles]
            if not free:
                raise InputError(f"{label}: cannot tell what axis {stack[i]!r} of {axes!r} is; set 'axes' (e.g. 'TZCYX')")
            roles[i] = free[0]
            LOG.info("%s: unnamed stack axis %r (length %d) taken as %s", label, stack[i], stack_shape[i], free[0])
    samples = int(page_shape.get("S", 1))
    channels_in_page = samples > 1
    if channels_in_page and "C" in roles:
        raise InputError(f"{label}: both a channel axis and {samples} samples per pixel in {axes!r}; not supported")
    size = {r: s for r, s in zip(roles, stack_shape) if r != "-"}
    full = (size.get("T", 1), samples if channels_in_page else size.get("C", 1), size.get("Z", 1), page_shape["Y"], page_shape["X"])
    return AxisLayout("".join(roles), stack_shape, channels_in_page, page_axes.find("S"), full)


@dataclass(frozen=True, kw_only=True)
class TiffSource(Source):
    """One series of a TIFF file (OME-TIFF, ImageJ hyperstack or plain multi-page).

    Parameters
    ----------
    path : str
        The file.
    series : int
        Index of the series in the file (OME-TIFF images).
    layout : AxisLayout
        Where T, C and Z are among the pages.
    """

    path: str
    series: int = 0
    layout: AxisLayout

    def _read(self, t: int, channels: list[int]) -> np.ndarray:
        keys = self.layout.page_indices(t, channels)
        try:
            with _open_cached(self.files[0]) as tif:
                data = tif.asarray(key=keys, series=self.series, maxworkers=1)
        except InputError:
            raise
        except Exception as exc:  # tifffile, imagecodecs and OS errors alike
            raise InputError(f"{self.label}: cannot read time point {t} ({type(exc).__name__}: {_short(exc)}); truncated or corrupt file?") from exc
        _, _, z, y, x = self.shape
        if self.layout.channels_in_page:
            data = np.moveaxis(data.reshape(z, *_page_shape(self.layout, y, x)), self.layout.sample_axis + 1, 0)
            data = data[channels]
        else:
            data = data.reshape(len(channels), z, y, x)
        return np.ascontiguousarray(data)


def _page_shape(layout: AxisLayout, y: int, x: int) -> tuple[int, ...]:
    samples = layout.shape[1]
    return (samples, y, x) if layout.sample_axis == 0 else (y, x, samples)


def open_tiff(path: str | os.PathLike, *, axes: str | None = None) -> list[TiffSource]:
    """Describe the image series of a TIFF file without reading its pixels.

    Parameters
    ----------
    path : str or path-like
        An OME-TIFF, ImageJ hyperstack or plain (multi-page) TIFF.
    axes : str, optional
        Override the series' axes (same length as tifffile's, e.g. ``"TZYX"``), for
        files whose metadata does not name them.

    Returns
    -------
    list of TiffSource
        One per image of an OME-TIFF (several fields of view), else one.

    Raises
    ------
    InputError
        If the file is unreadable, truncated (pages or pixel data beyond its end)
        or its axes cannot be mapped to ``t, c, z, y, x``.
    """
    import tifffile

    path = os.fspath(path)
    label = path
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    stamp = FileStamp.of(path)
    with tifffile_errors() as errors:
        try:
            with tifffile.TiffFile(path) as tif:
                series_list = list(tif.series)
                kind = "ome" if tif.is_ome else "imagej" if tif.is_imagej else "tiff"
                ome_xml = tif.ome_metadata if tif.is_ome else None
                metas: list[SourceMeta] = []
                layouts = []
                chosen = series_list if kind == "ome" else series_list[:1]
                if kind != "ome" and len(series_list) > 1:
                    LOG.warning("%s: %d image series; converting the first (%s)", path, len(series_list), series_list[0].axes)
                for i, series in enumerate(chosen):
                    s_axes = series.axes
                    if axes is not None:
                        if len(axes) != len(series.shape):
                            raise InputError(f"{path}: 'axes' {axes!r} has {len(axes)} letters, the file's series has {len(series.shape)} axes ({s_axes})")
                        s_axes = axes.upper()
                    layout = layout_from_axes(s_axes, series.shape, series.keyframe.axes, label=path)
                    _check_complete(series, layout, path)
                    layouts.append((i, layout, np.dtype(series.dtype)))
                    if kind == "ome":
                        metas.append(ome_meta(ome_xml, i, layout.shape, label=path))
                    elif kind == "imagej":
                        metas.append(imagej_meta(tif.imagej_metadata or {}, tif.pages.first, label=path))
                    else:
                        metas.append(resolution_meta(tif.pages.first))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{path}: not a readable TIFF file ({type(exc).__name__}: {_short(exc)})") from exc
    if errors:
        raise InputError(f"{path}: truncated or corrupt TIFF ({errors[0]})")
    sources = []
    for (i, layout, dtype), meta in zip(layouts, metas):
        name = f"{label} (series {i})" if len(layouts) > 1 else label
        sources.append(TiffSource(label=name, shape=layout.shape, dtype=dtype, meta=meta, files=(stamp,), path=path, series=i, layout=layout))
    return sources


def _check_complete(series, layout: AxisLayout, path: str) -> None:
    """Every page the axes announce exists and its pixel data lies inside its file."""
    check_series_complete(series, path, layout.n_pages)


def check_series_complete(series, path: str, n_pages: int | None = None) -> None:
    """Every page of a tifffile series exists and its pixel data lies inside its file.

    ``n_pages`` defaults to the series' size over its key frame's (the pages its shape
    announces). A truncated ImageJ hyperstack (as Fiji writes it: one contiguous block
    announced in the description) otherwise reads as its first pages only.

    Raises
    ------
    InputError
        Naming the file and what is missing.
    """
    pages = series.pages
    if n_pages is None:
        frame = int(np.prod(series.keyframe.shape)) or 1
        n_pages = max(1, int(np.prod(series.shape)) // frame)
    if len(pages) < n_pages:
        raise InputError(f"{path}: truncated or corrupt TIFF: {len(pages)} of {n_pages} pages for axes {series.axes} {tuple(series.shape)}")
    if series.dataoffset is not None:  # contiguous (ImageJ, uncompressed tifffile output)
        size = series.parent.filehandle.size
        if series.dataoffset + series.nbytes > size:
            raise InputError(f"{path}: truncated: pixel data needs {series.dataoffset + series.nbytes} bytes, the file has {size}")
        return
    for number in range(n_pages):
        page = pages[number]
        if page is None:
            raise InputError(f"{path}: truncated or corrupt TIFF: page {number} is missing")
        size = page.parent.filehandle.size
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n]
        if ends and max(ends) > size:
            raise InputError(f"{path}: truncated: page {number} needs {max(ends)} bytes, the file has {size}")


_COLLECTING: list = []
_COLLECTING_LOCK = threading.Lock()
_PROPAGATE = [True]


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().split("\n")[0][:200])


@contextmanager
def tifffile_errors() -> Iterator[list[str]]:
    """Collect what tifffile logs at ERROR level (it logs, rather than raises, bad offsets and
    broken ImageJ metadata); while collecting they are kept out of the log, since the
    reader reports them as one :class:`InputError`."""
    logger = logging.getLogger("tifffile")
    handler = _ErrorCollector()
    with _COLLECTING_LOCK:
        if not _COLLECTING:
            _PROPAGATE[0] = logger.propagate
        logger.addHandler(handler)
        _COLLECTING.append(handler)
        logger.propagate = False  # the reader reports them as one InputError instead
    try:
        yield handler.messages
    finally:
        with _COLLECTING_LOCK:
            logger.removeHandler(handler)
            _COLLECTING.remove(handler)
            if not _COLLECTING:
                logger.propagate = _PROPAGATE[0]


# -- open files, cached per process -------------------------------------------------------
_CACHE_SIZE = 4
_cache: "OrderedDict[tuple, tuple[object, threading.Lock]]" = OrderedDict()
_cache_lock = threading.Lock()


@contextmanager
def _open_cached(stamp: FileStamp):
    """A per-process cache of open ``TiffFile`` handles (parsing a large OME header once).

    Keyed by path, size and modification time, so a rewritten file is opened afresh.
    """
    import tifffile

    key = (stamp.path, stamp.size, stamp.mtime_ns)
    with _cache_lock:
        entry = _cache.get(key)
        if entry is None:
            entry = (tifffile.TiffFile(stamp.path), threading.Lock())
            _cache[key] = entry
            while len(_cache) > _CACHE_SIZE:
                _, (old, old_lock) = _cache.popitem(last=False)
                with old_lock:
                    old.close()
        else:
            _cache.move_to_end(key)
    tif, lock = entry
    with lock:
        yield tif


def _forget_cache() -> None:
    """In a forked child: drop the parent's handles (their file offsets are shared with it)."""
    global _cache, _cache_lock
    _cache = OrderedDict()
    _cache_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_cache)


def close_cached() -> None:
    """Close every cached file handle of this process."""
    with _cache_lock:
        while _cache:
            _, (tif, lock) = _cache.popitem()
            with lock:
                tif.close()


def _short(exc: BaseException) -> str:
    return str(exc).split("\n")[0][:200]

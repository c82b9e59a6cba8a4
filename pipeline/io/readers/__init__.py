"""Readers for microscope files, chosen by file type.

Each returns lazy :class:`~pipeline.io.readers.base.Source` objects: the series'
``(T, C, Z, Y, X)`` shape, dtype and physical metadata (from the file's header
only), and a picklable ``read(t)`` that reads a single time point.

==================  =========================================  ==========================
input               reader                                     metadata
==================  =========================================  ==========================
``*.ome.tif(f)``    :func:`~pipeline.io.readers.tiff.open_tiff`  OME-XML: sizes, time, names
``*.tif(f)``        :func:`~pipeline.io.readers.tiff.open_tiff`  ImageJ: spacing, unit, finterval
folder / pattern    :func:`~pipeline.io.readers.pattern.scan_pattern`  per-file ImageJ/OME
``*.nd2``           :func:`~pipeline.io.readers.nd2.open_nd2`    ND2 loops, voxel size, names
==================  =========================================  ==========================
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.readers.base import FileStamp, Source, SourceMeta
from pipeline.io.readers.tiff import TIFF_SUFFIXES, open_tiff

__all__ = ["FileStamp", "Source", "SourceMeta", "open_file", "file_kind", "strip_suffix"]

ND2_SUFFIXES = (".nd2",)


def file_kind(path: str | os.PathLike) -> str:
    """``"tiff"`` or ``"nd2"`` by the file's ending.

    Raises
    ------
    InputError
        For any other ending.
    """
    suffix = Path(path).suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in ND2_SUFFIXES:
        return "nd2"
    raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected .tif, .tiff, .ome.tif or .nd2")


def strip_suffix(path: str | os.PathLike) -> str:
    """File name without its image endings: ``"B10.ome.tif"`` -> ``"B10"``."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", *TIFF_SUFFIXES, *ND2_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def open_file(path: str | os.PathLike, *, axes: str | None = None) -> list[Source]:
    """Open one image file (TIFF family or ND2) and describe its series.

    Parameters
    ----------
    path : str or path-like
        The file.
    axes : str, optional
        TIFF only: override the series' axis letters (e.g. ``"TZYX"``).

    Returns
    -------
    list of Source
        One per image series (OME-TIFF images, ND2 positions), usually one.
    """
    kind = file_kind(path)
    if kind == "nd2":
        from pipeline.io.readers.nd2 import open_nd2

        if axes is not None:
            raise InputError(f"{path}: 'axes' applies to TIFF files only; ND2 files name their axes")
        return open_nd2(path)
    return open_tiff(path, axes=axes)

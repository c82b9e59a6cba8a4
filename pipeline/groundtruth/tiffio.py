"""ZYX TIFF reading and writing for ground truth, training sets and correction round trips.

Files are written so that Fiji (Labkit, MorphoLibJ) and napari open them with the
right calibration: ImageJ hyperstacks (``spacing`` and ``unit=um`` in the ImageJ
description, x/y resolution in pixels per micrometre) for the data types ImageJ
supports (uint8, uint16, float32); other types (uint32 instance labels) are plain
TIFFs with the same calibration in tifffile's JSON description. Writes are atomic:
the data go to a hidden temporary name in the same folder, which is renamed onto
the target only when complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from pipeline.errors import InputError

LOG = logging.getLogger(__name__)

IMAGEJ_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))
_UNIT_TO_UM = {"um": 1.0, "µm": 1.0, "\\u00b5m": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "nm": 1e-3, "mm": 1e3}


def read_tiff(path: str | Path, *, min_ndim: int = 0) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Read a TIFF's first series and its ``(z, y, x)`` voxel size in micrometres.

    Parameters
    ----------
    path : str or Path
        TIFF file (ImageJ, OME or plain).
    min_ndim : int
        Prepend singleton axes up to this many (a one-slice ZYX volume reads as YX).

    Returns
    -------
    array : numpy.ndarray
        The data, squeezed of singleton axes other than the last three.
    voxel_size : tuple of float or None
        ``(z, y, x)`` in micrometres when the file states a physical unit, else ``None``.

    Raises
    ------
    InputError
        If the file is missing or not a readable TIFF.
    """
    import tifffile

    from pipeline.io.readers.tiff import check_series_complete, tifffile_errors

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with tifffile_errors() as errors:
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                check_series_complete(series, str(path))
                data = series.asarray()
                voxel = _voxel_size(tif)
        except InputError:
            raise
        except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error... on corrupt files
            raise InputError(f"{path}: not a readable TIFF ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'corrupt'})") from exc
    if errors:  # tifffile logs, rather than raises, broken ImageJ metadata and page offsets past the end
        raise InputError(f"{path}: truncated or corrupt TIFF ({errors[0]})")
    while data.ndim > max(3, min_ndim) and data.shape[0] == 1:
        data = data[0]
    if data.ndim < min_ndim:
        data = data.reshape((1,) * (min_ndim - data.ndim) + data.shape)
    return data, voxel


def _voxel_size(tif) -> tuple[float, float, float] | None:
    """Voxel size from ImageJ, OME or tifffile-JSON metadata (micrometres), or None."""
    page = tif.pages[0]
    meta: dict = {}
    if tif.is_imagej and tif.imagej_metadata:
        meta = dict(tif.imagej_metadata)
    elif tif.is_shaped and tif.shaped_metadata:
        meta = dict(tif.shaped_metadata[0])
    elif tif.is_ome:
        return _ome_voxel_size(tif.ome_metadata)
    unit = str(meta.get("unit", "")).strip().lower()
    scale = _UNIT_TO_UM.get(unit)
    if scale is None:
        return None
    try:
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        x = xres[1] / xres[0]
        y = yres[1] / yres[0]
    except (KeyError, ZeroDivisionError, TypeError):
        return None
    z = float(meta.get("spacing", 1.0))
    return (z * scale, y * scale, x * scale)


def _ome_voxel_size(xml: str | None) -> tuple[float, float, float] | None:
    """``PhysicalSizeZ/Y/X`` of the first OME ``Pixels`` element (micrometres assumed)."""
    import re

    if not xml:
        return None
    sizes = {}
    for axis in "ZYX":
        match = re.search(rf'PhysicalSize{axis}="([0-9.eE+-]+)"', xml)
        if match:
            sizes[axis] = float(match.group(1))
    if "X" not in sizes:
        return None
    return (sizes.get("Z", 1.0), sizes.get("Y", sizes["X"]), sizes["X"])


def write_tiff(path: str | Path, data: np.ndarray, voxel_size=None, *, imagej: bool | None = None) -> Path:
    """Write a ZYX (or YX) array atomically, calibrated for Fiji and napari.

    Parameters
    ----------
    path : str or Path
        Target file; its folder must exist.
    data : numpy.ndarray
        YX, ZYX or TZYX array.
    voxel_size : sequence of 3 floats, optional
        ``(z, y, x)`` in micrometres.
    imagej : bool, optional
        Force (True) or forbid (False) the ImageJ hyperstack format; by default it is
        used when the data type allows it (uint8, uint16, float32).

    Returns
    -------
    Path
        The written file.
    """
    import tifffile

    path = Path(path)
    data = np.ascontiguousarray(data)
    if imagej is None:
        imagej = data.dtype in IMAGEJ_DTYPES
    kwargs: dict = {"metadata": {"axes": "TZYX"[-data.ndim :]}, "photometric": "minisblack"}
    if voxel_size is not None:
        z, y, x = (float(v) for v in voxel_size)
        kwargs["resolution"] = (1.0 / x, 1.0 / y)
        kwargs["metadata"].update({"spacing": z, "unit": "um"})
        if not imagej:
            kwargs["resolutionunit"] = 1
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tifffile.imwrite(tmp, data, imagej=imagej, **kwargs)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()

"""Physical metadata from OME-XML, ImageJ descriptions and TIFF resolution tags.

Each function returns a :class:`~pipeline.io.readers.base.SourceMeta` whose
entries are ``None`` where the file says nothing (or says something meaningless,
like ImageJ's default of 1 pixel per pixel).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from pipeline.io.readers.base import SourceMeta

LOG = logging.getLogger(__name__)

#: Micrometres per unit of length, by the spellings OME, ImageJ and TIFF use.
LENGTH_UNITS = {
    "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4,
    "m": 1e6, "meter": 1e6, "å": 1e-4, "angstrom": 1e-4, "in": 25400.0, "inch": 25400.0,
}
#: Seconds per unit of time.
TIME_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "millisecond": 1e-3, "µs": 1e-6, "us": 1e-6,
    "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
}


def length_um(value: Any, unit: str | None) -> float | None:
    """A length in micrometres, or ``None`` when absent or in an unknown unit."""
    if value is None:
        return None
    factor = LENGTH_UNITS.get((unit or "um").strip().lower())
    if factor is None:
        LOG.warning("unknown length unit %r: ignoring a physical size", unit)
        return None
    try:
        return float(value) * factor
    except (TypeError, ValueError):
        return None


def time_s(value: Any, unit: str | None) -> float | None:
    """A duration in seconds, or ``None`` when absent or in an unknown unit."""
    if value is None:
        return None
    factor = TIME_UNITS.get((unit or "s").strip().lower())
    if factor is None:
        LOG.warning("unknown time unit %r: ignoring a time step", unit)
        return None
    try:
        return float(value) * factor
    except (TypeError, ValueError):
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def ome_meta(xml: str | None, image_index: int, shape: tuple[int, ...], *, label: str) -> SourceMeta:
    """Metadata of image ``image_index`` in an OME-XML document.

    Voxel size from ``Pixels/@PhysicalSize{X,Y,Z}`` (+ units), time step from
    ``@TimeIncrement`` or else the mean step of the planes' ``DeltaT``, channel
    names from ``Channel/@Name``.

    Parameters
    ----------
    xml : str or None
        The OME-XML (``TiffFile.ome_metadata``).
    image_index : int
        Which ``Image`` element (tifffile's series index).
    shape : tuple of int
        The series as ``(T, C, Z, Y, X)``: channel names are used only if there is
        one per channel.
    label : str
        File name for log messages.
    """
    if not xml:
        return SourceMeta()
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        LOG.warning("%s: OME-XML not parseable (%s); ignoring its metadata", label, exc)
        return SourceMeta()
    images = [el for el in root if _local(el.tag) == "Image"]
    if image_index >= len(images):
        return SourceMeta()
    pixels = next((el for el in images[image_index] if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        return SourceMeta()
    a = pixels.attrib
    voxel = tuple(length_um(a.get(f"PhysicalSize{ax}"), a.get(f"PhysicalSize{ax}Unit")) for ax in "ZYX")
    step = time_s(a.get("TimeIncrement"), a.get("TimeIncrementUnit"))
    if step is None and shape[0] > 1:
        step = _delta_t_step(pixels)
    names = [el.attrib.get("Name") for el in pixels if _local(el.tag) == "Channel"]
    channels = tuple(names) if names and all(names) and len(names) == shape[1] else None
    return SourceMeta(channels=channels, voxel_size=voxel, time_step=step)


def _delta_t_step(pixels: ET.Element) -> float | None:
    times = {}
    for plane in pixels:
        if _local(plane.tag) != "Plane" or "DeltaT" not in plane.attrib:
            continue
        if int(plane.attrib.get("TheZ", 0)) == 0 and int(plane.attrib.get("TheC", 0)) == 0:
            t = time_s(plane.attrib["DeltaT"], plane.attrib.get("DeltaTUnit"))
            if t is not None:
                times[int(plane.attrib.get("TheT", 0))] = t
    if len(times) < 2:
        return None
    ordered = np.array([times[k] for k in sorted(times)])
    step = float(np.mean(np.diff(ordered)))
    return step if step > 0 else None


def imagej_meta(ij: dict[str, Any], page, *, label: str) -> SourceMeta:
    """Metadata of an ImageJ hyperstack: ``spacing`` (z), resolution tags (x, y), ``finterval``.

    Sizes count only with a ``unit`` (ImageJ's default is pixels, i.e. unknown);
    ``finterval`` is in ``tunit`` (seconds by default).

    Parameters
    ----------
    ij : dict
        ``TiffFile.imagej_metadata``.
    page : tifffile.TiffPage
        The first page (for the X/YResolution tags).
    label : str
        File name for log messages.
    """
    unit = ij.get("unit")
    if isinstance(unit, str) and unit.strip().lower() in ("pixel", "pixels", ""):
        unit = None
    y, x = _resolution(page)
    if unit is None:
        # ImageJ without a unit: sizes are in pixels, i.e. unknown
        voxel = (None, None, None)
    else:
        voxel = (length_um(ij.get("spacing"), unit), length_um(y, unit), length_um(x, unit))
    step = time_s(ij.get("finterval"), ij.get("tunit"))
    # ImageJ hyperstacks have no standard field for channel names: they come from options
    return SourceMeta(channels=None, voxel_size=voxel, time_step=step)


def resolution_meta(page) -> SourceMeta:
    """x/y pixel size from the resolution tags of a plain TIFF, if their unit is a length."""
    unit_tag = page.tags.get("ResolutionUnit")
    unit = {2: "inch", 3: "cm"}.get(int(unit_tag.value) if unit_tag is not None else 1)
    if unit is None:
        return SourceMeta()
    y, x = _resolution(page, unit_default=True)
    return SourceMeta(voxel_size=(None, length_um(y, unit), length_um(x, unit)))


def _resolution(page, *, unit_default: bool = False) -> tuple[float | None, float | None]:
    """Pixel size (``1 / resolution``) along y and x from the resolution tags, in the tags' unit.

    With ``unit_default``, a resolution of exactly 1 (what writers put when they know
    nothing) counts as absent.
    """
    out = []
    for name in ("YResolution", "XResolution"):
        tag = page.tags.get(name)
        if tag is None:
            out.append(None)
            continue
        value = tag.value
        num, den = value if isinstance(value, tuple) else (value, 1)
        res = float(num) / float(den) if den else 0.0
        out.append(1.0 / res if res > 0 and not (unit_default and res == 1.0) else None)
    return out[0], out[1]

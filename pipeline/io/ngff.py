"""OME-NGFF 0.5 metadata (zarr v3) for plates, wells, images and labels.

NGFF 0.5 is what ome-zarr-py 0.18 and napari-ome-zarr read with zarr 3 on Python
3.11. The metadata is plain JSON built here (importing ome-zarr-py's writer costs
about a second of start-up on every command); the tests check what is written
against ome-zarr-py's reader and the ``ome-zarr-models`` validators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import zarr

NGFF_VERSION = "0.5"
AXES = ("t", "c", "z", "y", "x")
LABEL_AXES = ("t", "z", "y", "x")
"""Axes of label images: no channel axis, so that viewers that split an image on ``c``
(napari-ome-zarr) show the labels with the same dimensions as each channel."""
DEFAULT_CHANNELS = ("Hoechst", "Cy3", "GFP")
DEFAULT_COLORS = {"hoechst": "0000FF", "dapi": "0000FF", "cy3": "FF0000", "red": "FF0000", "gfp": "00FF00", "green": "00FF00"}
FALLBACK_COLORS = ("FF00FF", "00FFFF", "FFFF00", "FFFFFF")


def default_color(name: str, index: int) -> str:
    """Display colour (hex RGB) for a channel name: blue Hoechst, red Cy3, green GFP."""
    return DEFAULT_COLORS.get(name.lower(), FALLBACK_COLORS[index % len(FALLBACK_COLORS)])


@dataclass(frozen=True)
class ImageMeta:
    """Physical description of a ``t, c, z, y, x`` image.

    Parameters
    ----------
    channels : tuple of str
        Channel names, e.g. ``("Hoechst", "Cy3", "GFP")``.
    voxel_size : tuple of float
        ``(z, y, x)`` voxel size in micrometres (thesis data: 5.0, 1.24, 1.24).
    time_step : float
        Seconds between time points (thesis data: 1800).
    colors : tuple of str, optional
        Hex RGB display colours; derived from the names when omitted.
    """

    channels: tuple[str, ...] = DEFAULT_CHANNELS
    voxel_size: tuple[float, float, float] = (5.0, 1.24, 1.24)
    time_step: float = 1800.0
    colors: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "voxel_size", tuple(float(v) for v in self.voxel_size))
        if not self.colors:
            object.__setattr__(self, "colors", tuple(default_color(n, i) for i, n in enumerate(self.channels)))
        if len(self.colors) != len(self.channels):
            raise ValueError("one colour per channel is needed")

    @property
    def scale(self) -> list[float]:
        """NGFF scale for ``t, c, z, y, x``."""
        return [float(self.time_step), 1.0, *self.voxel_size]

    def with_channels(self, channels: tuple[str, ...]) -> "ImageMeta":
        """The same geometry with other channels (colours re-derived)."""
        return ImageMeta(channels=tuple(channels), voxel_size=self.voxel_size, time_step=self.time_step)


_AXIS = {
    "t": {"name": "t", "type": "time", "unit": "second"},
    "c": {"name": "c", "type": "channel"},
    "z": {"name": "z", "type": "space", "unit": "micrometer"},
    "y": {"name": "y", "type": "space", "unit": "micrometer"},
    "x": {"name": "x", "type": "space", "unit": "micrometer"},
}


def axes_metadata(axes: tuple[str, ...] = AXES) -> list[dict[str, str]]:
    return [dict(_AXIS[a]) for a in axes]


def _multiscales(meta: ImageMeta, name: str, axes: tuple[str, ...] = AXES) -> list[dict[str, Any]]:
    scale = dict(zip(AXES, meta.scale))
    return [
        {
            "name": name,
            "axes": axes_metadata(axes),
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [scale[a] for a in axes]}]}],
        }
    ]


def image_attrs(meta: ImageMeta, name: str, window_max: float) -> dict[str, Any]:
    """The ``ome`` attribute of a one-level image whose array is ``0`` (multiscales + omero)."""
    channels = [
        {
            "label": ch,
            "color": color,
            "active": True,
            "window": {"start": 0.0, "end": float(window_max), "min": 0.0, "max": float(window_max)},
        }
        for ch, color in zip(meta.channels, meta.colors)
    ]
    return {
        "version": NGFF_VERSION,
        "multiscales": _multiscales(meta, name),
        "omero": {"channels": channels, "rdefs": {"model": "color"}},
    }


def label_attrs(meta: ImageMeta, name: str) -> dict[str, Any]:
    """The ``ome`` attribute of a ``t, z, y, x`` label image (multiscales + image-label)."""
    # the field's image, two levels up (labels/<name>). No "colors": napari-ome-zarr builds a
    # direct colour map from that list and draws every label it does not list black (seen with
    # 0.10.0); without it each nucleus gets a colour of napari's palette
    image_label = {"version": NGFF_VERSION, "source": {"image": "../../"}}
    return {"version": NGFF_VERSION, "multiscales": _multiscales(meta, name, LABEL_AXES), "image-label": image_label}


def register_label(labels_group: zarr.Group, name: str) -> None:
    """List label image ``name`` in a field's ``labels`` group."""
    ome = dict(labels_group.attrs.get("ome", {}))
    names = list(ome.get("labels", []))
    if name not in names:
        names.append(name)
    labels_group.attrs["ome"] = {"version": NGFF_VERSION, "labels": names}


def write_plate(group: zarr.Group, name: str, wells: list[tuple[str, str]], field_count: int) -> None:
    """Write plate metadata for ``wells`` given as ``(row, column)`` pairs."""
    rows = sorted({r for r, _ in wells}, key=_row_key)
    columns = sorted({c for _, c in wells}, key=_column_key)
    plate = {
        "version": NGFF_VERSION,
        "name": name,
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": c} for c in columns],
        "wells": [
            {"path": f"{r}/{c}", "rowIndex": rows.index(r), "columnIndex": columns.index(c)}
            for r, c in sorted(wells, key=lambda w: (_row_key(w[0]), _column_key(w[1])))
        ],
        "field_count": int(field_count),
    }
    group.attrs["ome"] = {"version": NGFF_VERSION, "plate": plate}


def write_well(group: zarr.Group, fields: list[int]) -> None:
    """Write well metadata listing the field images ``0, 1, ...``."""
    group.attrs["ome"] = {"version": NGFF_VERSION, "well": {"images": [{"path": str(f)} for f in sorted(fields)]}}


def _row_key(row: str) -> tuple[int, str]:
    return (len(row), row)


def _column_key(col: str) -> tuple[int, str]:
    return (int(col), col) if col.isdigit() else (10**9, col)


def read_image_meta(group_attrs: dict[str, Any]) -> ImageMeta:
    """Rebuild :class:`ImageMeta` from an image group's NGFF attributes."""
    ome = group_attrs["ome"]
    ms = ome["multiscales"][0]
    scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    channels = ome.get("omero", {}).get("channels", [])
    names = tuple(ch["label"] for ch in channels)
    colors = tuple(ch.get("color", "FFFFFF") for ch in channels)
    return ImageMeta(channels=names, voxel_size=tuple(scale[2:]), time_step=scale[0], colors=colors)

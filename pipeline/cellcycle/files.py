"""The one-off forms: phases and tracks from a TIFF image and a label TIFF, written as CSV.

``spheroid cellcycle image.tif --labels labels.tif --channels hoechst,cy3,gfp --out nuclei.csv``
    The image is ``CZYX`` or ``CYX`` (or a time series, ``TCZYX`` / ``TCYX``, with
    ``(T)ZYX`` / ``(T)YX`` labels); ``--channels`` names its channels in order. One row
    per label (and time point).
``spheroid track labels.tif --voxel-size Z Y X --out tracks.csv``
    A ``TZYX`` (or ``TYX``) label time series whose ids need not agree between frames.
    One row per ``(t, label)``.

Everything is checked before anything is written, and the CSV is written to a
temporary name and renamed, so a failed run leaves no file behind.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.cellcycle.model import apply_phase_model, fit_phase_model
from pipeline.cellcycle.nuclei import measure_nuclei
from pipeline.cellcycle.track import track_frames
from pipeline.config.cellcycle import CellcycleConfig, TrackConfig
from pipeline.errors import ConfigError, InputError
from pipeline.measure import measure_regions

LOG = logging.getLogger(__name__)


def _read(path: str | Path) -> tuple[np.ndarray, str | None, tuple[float, float, float] | None]:
    """Array, tifffile's axes string and the voxel size of a TIFF."""
    import tifffile

    from pipeline.groundtruth.tiffio import read_tiff

    data, voxel = read_tiff(path)
    axes = None
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if tuple(series.shape) == tuple(data.shape):
                axes = series.axes
    except Exception:  # noqa: BLE001 - the read above already succeeded; axes are a hint only
        axes = None
    return data, axes, voxel


def write_csv(table: pd.DataFrame, out: str | Path) -> Path:
    """Write ``table`` to ``out`` atomically (temporary file in the same folder, then renamed)."""
    out = Path(out)
    if not out.parent.exists():
        raise InputError(f"{out}: folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        table.to_csv(tmp, index=False, float_format="%.6g")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def parse_channels(text: str, *, source: str = "--channels") -> list[str]:
    """``"hoechst,cy3,gfp"`` -> ``["hoechst", "cy3", "gfp"]`` (names unique, none empty)."""
    names = [c.strip() for c in str(text).split(",")]
    if not names or any(not n for n in names):
        raise InputError(f"{source}: expected comma-separated channel names, got {text!r}")
    if len({n.lower() for n in names}) != len(names):
        raise InputError(f"{source}: channel names must be unique, got {text!r}")
    return names


def align_image(image: np.ndarray, axes: str | None, labels: np.ndarray, n_channels: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Bring image and labels to ``(T, C, Z, Y, X)`` and ``(T, Z, Y, X)`` (Z = 1 for 2-D data).

    Raises
    ------
    InputError
        When the channel count or the shapes do not fit.
    """
    img_where, lab_where = where.split("|")
    if labels.ndim not in (2, 3, 4):
        raise InputError(f"{lab_where}: labels must be YX, ZYX, TYX or TZYX; got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{lab_where}: labels must be integers; got {labels.dtype}")
    if image.ndim == labels.ndim:  # no channel axis: only a single channel fits
        image = image[None] if n_channels == 1 else image
        if n_channels != 1:
            raise InputError(f"{img_where}: image of shape {image.shape} does not fit labels of shape {labels.shape} ({lab_where}): expected one more axis in the image, for its {n_channels} channels")
    if image.ndim != labels.ndim + 1:
        raise InputError(f"{img_where}: image of shape {image.shape} does not fit labels of shape {labels.shape} (expected one more axis: channels)")
    ax = axes.upper() if axes and len(axes) == image.ndim else ""
    if "C" in ax and set(ax) <= set("TCZYX"):
        # put the file's axes (ImageJ hyperstacks are TZCYX) in T, C, Z, Y, X order
        image = image.transpose([ax.index(a) for a in "TCZYX" if a in ax])
        ax = "".join(a for a in "TCZYX" if a in ax)
        c_axis = ax.index("C")
    elif image.shape[0] == n_channels:
        c_axis = 0
    elif image.ndim >= 4 and image.shape[1] == n_channels:
        c_axis = 1
    else:
        c_axis = 0
    if c_axis not in (0, 1):
        raise InputError(f"{img_where}: channel axis at position {c_axis} of {ax}; expected CZYX, CYX, TCZYX or TCYX")
    if image.shape[c_axis] != n_channels:
        raise InputError(f"{img_where}: {image.shape[c_axis]} channels in the image (shape {image.shape}) but --channels names {n_channels}")
    rest = tuple(s for i, s in enumerate(image.shape) if i != c_axis)
    if rest != labels.shape:
        raise InputError(f"{img_where}: image shape {image.shape} and labels shape {labels.shape} differ (beyond the channel axis)")
    if c_axis == 0:
        image = image[None]
        labels = labels[None]
    # now (T, C, ...) and (T, ...); add Z for 2-D frames
    if labels.ndim == 3:
        image, labels = image[:, :, None], labels[:, None]
    return image, labels


def _voxel(voxel_size: Sequence[float] | None, found, planar: bool) -> tuple[float, float, float]:
    if voxel_size is not None:
        v = tuple(float(x) for x in voxel_size)
    elif found is not None:
        v = tuple(float(x) for x in found)
    else:
        v = (1.0, 1.0, 1.0)
    if min(v[1:]) <= 0 or (not planar and v[0] <= 0):
        raise InputError(f"voxel size {v}: every value must be > 0")
    return v


def cellcycle_files(
    image_path: str | Path,
    labels_path: str | Path,
    channels: Sequence[str],
    out: str | Path,
    config: CellcycleConfig | None = None,
    *,
    voxel_size: Sequence[float] | None = None,
    source: str = "<defaults>",
) -> pd.DataFrame:
    """Measure and classify every labelled nucleus of one image (or time series); write a CSV.

    Parameters
    ----------
    image_path, labels_path : str or Path
        The image (CZYX, CYX, TCZYX, TCYX) and its labels ((T)ZYX, (T)YX).
    channels : sequence of str
        Names of the image's channels, in order; ``config.channels`` names the roles.
    out : str or Path
        CSV to write.
    config : CellcycleConfig, optional
        Background, thresholds, depth correction.
    voxel_size : sequence of float, optional
        ``(z, y, x)`` um; by default from the image's metadata, else 1.
    source : str
        The config file's name, for error messages.

    Returns
    -------
    pandas.DataFrame
        The table written.
    """
    config = config or CellcycleConfig()
    names = [c.lower() for c in channels]
    image, axes, found = _read(image_path)
    labels, _, _ = _read(labels_path)
    image, labels = align_image(image, axes, labels, len(channels), f"{image_path}|{labels_path}")
    roles = {"red": config.channels.red, "green": config.channels.green, "dead": config.channels.dead}
    for role, name in roles.items():
        if name is not None and name.lower() not in names:
            raise ConfigError(f"{source}: key 'channels.{role}': no channel {name!r} among --channels {','.join(channels)}")
    planar = labels.shape[1] == 1
    voxel = _voxel(voxel_size, found, planar)
    frames = []
    for t in range(labels.shape[0]):
        lab, img = (labels[t, 0], image[t, :, 0]) if planar else (labels[t], image[t])
        frames.append(measure_nuclei(lab, img, names, voxel_size=voxel, method=config.background.method, shell_um=config.background.shell_um, t=t))
    table = pd.concat(frames, ignore_index=True)
    if len(table) < 10:
        raise InputError(f"{labels_path}: {len(table)} labelled nuclei; at least 10 are needed to set the thresholds")
    model = fit_phase_model(table, _lower_roles(config))
    table = apply_phase_model(table, model)
    if labels.shape[0] == 1:
        table = table.drop(columns=["t"])
    write_csv(table, out)
    LOG.info("wrote %s: %d nuclei; thresholds red %.0f green %.0f", out, len(table), 10 ** model.thresholds["red"].threshold, 10 ** model.thresholds["green"].threshold)
    return table


def _lower_roles(config: CellcycleConfig) -> CellcycleConfig:
    ch = config.channels
    roles = ch.model_copy(update={"red": ch.red.lower(), "green": ch.green.lower(), "nuclear": ch.nuclear.lower(), "dead": ch.dead.lower() if ch.dead else None})
    return config.model_copy(update={"channels": roles})


def label_frames(labels: np.ndarray, voxel: tuple[float, float, float]):
    """Per-frame centroid tables of a ``(T, Z, Y, X)`` label series (one frame in memory at a time)."""
    for t in range(labels.shape[0]):
        table = measure_regions(labels[t], voxel_size=voxel, bbox=False)[["label", "centroid_z", "centroid_y", "centroid_x"]]
        table.insert(0, "t", np.full(len(table), t, dtype=np.int64))
        table.attrs["t"] = t
        yield table


def track_file(
    labels_path: str | Path,
    out: str | Path,
    config: TrackConfig | None = None,
    *,
    voxel_size: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Track the nuclei of a label time series; write ``t, label, track_id, parent_track_id`` as CSV.

    Raises
    ------
    InputError
        A file that is not a label time series of at least two frames.
    """
    labels, axes, found = _read(labels_path)
    known = axes is not None and len(axes) == labels.ndim and set(axes.upper()) <= set("TZYXC")
    if known and "T" not in axes.upper():
        raise InputError(f"{labels_path}: labels with axes {axes} have no time axis; tracking needs a TZYX or TYX time series")
    if labels.ndim not in (3, 4):
        raise InputError(f"{labels_path}: expected a TZYX or TYX label time series; got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{labels_path}: labels must be integers; got {labels.dtype}")
    if labels.shape[0] < 2:
        raise InputError(f"{labels_path}: a time series of {labels.shape[0]} frame; tracking needs at least 2")
    if labels.ndim == 3:
        labels = labels[:, None]
    voxel = _voxel(voxel_size, found, labels.shape[1] == 1)
    rows = list(track_frames(label_frames(labels, voxel), config or TrackConfig()))
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["t", "label", "track_id", "parent_track_id"])
    write_csv(table, out)
    LOG.info("wrote %s: %d nuclei in %d tracks", out, len(table), table["track_id"].nunique())
    return table

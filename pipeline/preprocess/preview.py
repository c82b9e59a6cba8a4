"""Before/after figure of the chain: one z-slice per channel after each step (thesis figures).

Rows are channels, columns the raw slice then the slice after each enabled step. The
whole ``(t, c)`` volume goes through the chain (3D steps and volume statistics need it);
only slice ``z`` is drawn.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.config.preprocess import PreprocessConfig
from pipeline.errors import InputError
from pipeline.io.plate import Field
from pipeline.io.volumes import read_volume
from pipeline.preprocess import chain as ch

LOG = logging.getLogger(__name__)

ROW_PERCENTILES = (0.5, 99.8)


def as_fraction(image: np.ndarray) -> np.ndarray:
    """Values as a fraction of their dtype's range (uint / max; float as is), float32."""
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    return image.astype(np.float32, copy=False)


def step_label(step) -> str:
    """Column title: the step's name and its parameters, on short lines."""
    params = [f"{k}={list(v) if isinstance(v, tuple) else (round(v, 4) if isinstance(v, float) else v)}" for k, v in ch.params_of(step).items()]
    lines, line = [], ""
    for p in params:
        if line and len(line) + len(p) > 26:
            lines.append(line)
            line = ""
        line = f"{line}, {p}" if line else p
    if line:
        lines.append(line)
    return "\n".join([step.step] + lines)


def preview_panels(field: Field, config: PreprocessConfig, t: int, z: int) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """Slice ``z`` of every channel of volume ``t``, raw and after each enabled step.

    Returns
    -------
    list
        ``[(channel, [(label, slice2d), ...]), ...]``.

    Raises
    ------
    InputError
        If ``t`` or ``z`` is out of range.
    """
    image = field.image(config.input)
    where = field.plate.location.child(field.image_path(config.input))
    if np.dtype(image.dtype) not in (np.uint8, np.uint16):
        raise InputError(f"{where}: image '{config.input}' is {image.dtype}; preprocessing needs uint8 or uint16 data")
    n_t, _, n_z = image.shape[:3]
    if not 0 <= t < n_t:
        raise InputError(f"--t {t}: field {field} has time points 0..{n_t - 1}")
    if not 0 <= z < n_z:
        raise InputError(f"--z {z}: field {field} has z-slices 0..{n_z - 1}")
    rows = []
    for c, name in enumerate(field.meta(config.input).channels):
        volume = read_volume(field.plate.location, field.array_path(config.input), t, c)
        panels = [("raw", volume[z].copy())]
        for step, result in ch.iter_chain(volume, config.chain_for(name)):
            panels.append((step_label(step), result[z].copy()))
        rows.append((name, panels))
    return rows


def row_limits(panels: list[tuple[str, np.ndarray]]) -> tuple[float, float]:
    """Shared colour limits of a row: percentiles of all its panels, each as a fraction of its dtype range."""
    values = np.concatenate([as_fraction(p).ravel() for _, p in panels])
    lo, hi = np.percentile(values, ROW_PERCENTILES)
    return float(lo), float(max(hi, lo + 1e-6))


def write_preview(
    field: Field,
    config: PreprocessConfig,
    t: int,
    z: int,
    out: str | Path,
    *,
    scale: Literal["row", "panel"] = "row",
    dpi: int = 110,
) -> Path:
    """Draw the preview grid and save it as a PNG.

    Parameters
    ----------
    field : Field
        The field to show.
    config : PreprocessConfig
        The chains to apply.
    t, z : int
        Time point and z-slice.
    out : str or Path
        PNG file to write.
    scale : {"row", "panel"}
        ``row``: one colour scale shared by a row's panels (each panel first expressed as
        a fraction of its dtype's range, so uint16 steps and the normalised float32 output
        are comparable); ``panel``: each panel stretched on its own.
    dpi : int
        Resolution.

    Returns
    -------
    Path
        The written file.
    """
    from matplotlib.figure import Figure

    out = Path(out)
    formats = Figure().canvas.get_supported_filetypes()
    if out.suffix.lower().lstrip(".") not in formats:
        raise InputError(f"--out {out}: unsupported image format '{out.suffix}' (use {', '.join('.' + f for f in ('png', 'pdf', 'svg', 'tif', 'jpg'))})")
    rows = preview_panels(field, config, t, z)
    n_cols = max(len(p) for _, p in rows)
    fig = Figure(figsize=(2.4 * n_cols, 2.9 * len(rows) + 0.7), dpi=dpi, layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    lo_p, hi_p = ROW_PERCENTILES
    for r, (name, panels) in enumerate(rows):
        shared = row_limits(panels) if scale == "row" else None
        for col in range(n_cols):
            ax = axes[r][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(panels):
                ax.set_axis_off()
                continue
            label, img = panels[col]
            frac = as_fraction(img)
            vmin, vmax = shared if shared else np.percentile(frac, ROW_PERCENTILES)
            ax.imshow(frac, cmap="gray", vmin=vmin, vmax=max(vmax, vmin + 1e-6), interpolation="nearest")
            ax.set_title(label, fontsize=7)
            if col == 0:
                ax.set_ylabel(name, fontsize=9)
    how = (
        f"colour scale shared per row: {lo_p}-{hi_p} percentiles of the row's panels, each as a fraction of its "
        "dtype range (uint16/65535, uint8/255, normalised float32 as is)"
        if scale == "row"
        else f"each panel stretched to its own {lo_p}-{hi_p} percentiles"
    )
    fig.suptitle(f"{field.plate.name} field {field}  t={t}  z={z}: raw, then after each step\n{how}", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    LOG.info("wrote %s", out)
    return out

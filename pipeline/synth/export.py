"""Write a synthetic well as a microscope export would look, plus its ground truth.

Layout under ``out_dir``::

    raw/{well}_T{t:02d}_{channel}.tif     layout "files": one ZYX uint16 ImageJ stack per
                                          time point (from 1) and channel
    raw/{well}.ome.tif                    layout "ome": one TCZYX OME-TIFF per well
    truth/{well}_labels.tif               TZYX instance labels (uint16 if they fit, else uint32)
    truth/{well}_nuclei.csv               the truth table (:attr:`SynthResult.table`)
    synth.yaml                            the configuration used
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile

from pipeline.config.base import save_config
from pipeline.synth.timelapse import SynthResult

LOG = logging.getLogger(__name__)

Layout = Literal["files", "ome"]
LAYOUTS = ("files", "ome")


def raw_file_name(well: str, t: int, channel: str) -> str:
    """File name of one stack in the ``files`` layout; ``t`` is 0-based, written from 1."""
    return f"{well}_T{t + 1:02d}_{channel}.tif"


def imagej_metadata(result: SynthResult, axes: str) -> dict:
    """ImageJ metadata: z spacing (um), unit, frame interval (s) and axes."""
    return {"spacing": result.voxel_size[0], "unit": "um", "finterval": result.time_step_s, "axes": axes}


def ome_metadata(result: SynthResult) -> dict:
    """OME-XML metadata for a TCZYX OME-TIFF: physical sizes (um), time increment (s), channel names."""
    z, y, x = result.voxel_size
    return {
        "axes": "TCZYX",
        "PhysicalSizeX": x,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": y,
        "PhysicalSizeYUnit": "µm",
        "PhysicalSizeZ": z,
        "PhysicalSizeZUnit": "µm",
        "TimeIncrement": result.time_step_s,
        "TimeIncrementUnit": "s",
        "Channel": {"Name": list(result.channels)},
    }


def write_export(
    result: SynthResult,
    out_dir: str | Path,
    *,
    layout: Layout = "files",
    compression: str | None = None,
    write_config: bool = True,
) -> list[Path]:
    """Write one well's raw stacks and ground truth under ``out_dir``.

    Parameters
    ----------
    result : SynthResult
        Output of :func:`pipeline.synth.generate`.
    out_dir : str or Path
        Export folder (created if missing); existing files of the same names are replaced.
    layout : {"files", "ome"}
        ``"files"``: one ImageJ ZYX stack per time point and channel; ``"ome"``: one
        TCZYX OME-TIFF per well.
    compression : str, optional
        TIFF compression (e.g. ``"zlib"``); uncompressed when ``None``.
    write_config : bool
        Also write ``synth.yaml`` (the configuration used).

    Returns
    -------
    list of Path
        The files written.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    out = Path(out_dir)
    raw, truth = out / "raw", out / "truth"
    raw.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    z, y, x = result.voxel_size
    resolution = (1.0 / y, 1.0 / x)
    written: list[Path] = []
    if layout == "files":
        for t in range(result.images.shape[0]):
            for c, channel in enumerate(result.channels):
                path = raw / raw_file_name(result.well, t, channel)
                tifffile.imwrite(
                    path,
                    result.images[t, c],
                    imagej=True,
                    resolution=resolution,
                    metadata=imagej_metadata(result, "ZYX"),
                    compression=compression,
                )
                written.append(path)
    else:
        path = raw / f"{result.well}.ome.tif"
        tifffile.imwrite(
            path,
            result.images,
            ome=True,
            photometric="minisblack",
            resolution=resolution,
            resolutionunit="MICROMETER",
            metadata=ome_metadata(result),
            compression=compression,
        )
        written.append(path)

    labels_path = truth / f"{result.well}_labels.tif"
    labels = result.labels
    if labels.max(initial=0) <= np.iinfo(np.uint16).max:
        tifffile.imwrite(
            labels_path,
            labels.astype(np.uint16),
            imagej=True,
            resolution=resolution,
            metadata=imagej_metadata(result, "TZYX"),
            compression=compression,
        )
    else:  # ImageJ has no uint32: a plain TIFF with tifffile's shaped metadata
        tifffile.imwrite(
            labels_path,
            labels,
            photometric="minisblack",
            resolution=resolution,
            metadata={"axes": "TZYX", "spacing": z, "unit": "um", "finterval": result.time_step_s},
            compression=compression,
        )
    written.append(labels_path)
    table_path = truth / f"{result.well}_nuclei.csv"
    result.table.to_csv(table_path, index=False, float_format="%.3f")
    written.append(table_path)
    if write_config:
        config_path = out / "synth.yaml"
        save_config(result.config, config_path)
        config_path.write_text(f"# model: pipeline.config.synth:SynthConfig\n{config_path.read_text()}")
        written.append(config_path)
    LOG.info("well %s: wrote %d files under %s", result.well, len(written), out)
    return written


def read_table(path: str | Path):
    """Read a truth table written by :func:`write_export` with its column types."""
    import pandas as pd

    return pd.read_csv(path, dtype={"well": str, "phase": str}, keep_default_na=False)

"""The one-off form: segment one TIFF volume into a uint32 label TIFF (``spheroid segment FILE --out``).

For comparisons and scripts. The file holds one ``(z, y, x)`` volume, or ``(c, z, y, x)``
channels of which ``channel`` names one or a combination; its voxel size comes from
its metadata or ``voxel_size``. Everything is checked before the model runs, and the
labels are written atomically, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.segment import SegmentConfig
from pipeline.errors import InputError
from pipeline.groundtruth.tiffio import write_tiff
from pipeline.io.readers import open_file
from pipeline.segment.inputs import data_voxel_size, parse_channel, resolve_channels

LOG = logging.getLogger(__name__)


def open_volume(path: str | Path, config: SegmentConfig, *, model_channels=()) -> tuple[Any, list[int], tuple[float, float, float]]:
    """Check a TIFF for the one-off form: ``(source, channel indices, voxel size)``.

    Raises
    ------
    InputError
        Naming the file: unreadable, several series or time points, a single plane, a channel
        out of range or missing, no voxel size anywhere.
    """
    path = str(path)
    sources = open_file(path)
    if len(sources) != 1:
        raise InputError(f"{path}: holds {len(sources)} image series; segment one volume per file")
    source = sources[0]
    t, c, z, y, x = source.shape
    if t > 1:
        raise InputError(f"{path}: holds {t} time points; the one-off form takes one (c, z, y, x) volume (convert a time series into a store and segment that)")
    if z < 2:
        raise InputError(f"{path}: is a single plane of {y} x {x} (2D); segment needs a (z, y, x) volume")
    spec = config.channel
    if c == 1 and not isinstance(spec, list) and not isinstance(parse_channel(spec), int):
        channels = [0]  # a single-channel volume: its one channel, whatever its name
    else:
        channels = resolve_channels(spec, source.meta.channels, c, source=path, model_channels=model_channels)
    voxel = data_voxel_size(config.voxel_size, source.meta.voxel_size, source=path)
    return source, channels, voxel


def segment_file(path: str | Path, out: str | Path, config: SegmentConfig, *, overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Segment the volume of one TIFF and write its labels (uint32, same ZYX shape, calibrated).

    Returns
    -------
    dict
        ``{"nuclei", "shape", "voxel_size", "seconds", "out", "segmenter", ...}``: what was done.
    """
    import time

    from pipeline.segment.backends import get_segmenter

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: no such folder for the labels")
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"{out}: the labels are written as a TIFF (.tif)")
    segmenter = get_segmenter(config)  # a bad model folder fails before the data is read
    source, channels, voxel = open_volume(path, config, model_channels=segmenter.card.channels)
    names = source.meta.channels or [f"c{i}" for i in range(source.shape[1])]
    segmenter.check(voxel_size=voxel, channels=[names[c] for c in channels], source=str(path))
    data = source.read(0, channels)
    start = time.perf_counter()
    labels, info = segmenter.run([data[i] for i in range(len(channels))], voxel_size=voxel, source=str(path), progress=progress)
    seconds = time.perf_counter() - start
    write_tiff(out, np.asarray(labels, dtype=np.uint32), voxel)
    LOG.info("%s: %d nuclei in %.1f s -> %s", path, info["nuclei"], seconds, out)
    return {**info, "shape": list(data.shape[1:]), "voxel_size": list(voxel), "channels": [names[c] for c in channels],
            "seconds": seconds, "out": str(out), "segmenter": segmenter.describe()}

"""The per-nucleus table written beside a label image: one row per nucleus and time point.

``segment`` measures every volume it labels: id, centroid (um), volume (um^3), voxel count,
bounding box (voxels, end exclusive) and the mean and integrated intensity of every channel
of the image it segmented (raw or preprocessed, not background-corrected; the phase
read-out's background-corrected intensities are ``spheroid cellcycle``'s). A volume is
measured in y/x blocks read from the store, whose statistics are combined exactly, so the
worker's memory does not grow with the volume (the block path of large volumes included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from pipeline.measure import AXES, measure_regions

#: y/x size of the blocks a volume is measured in.
BLOCK_YX = (512, 512)


def object_columns(channels: Sequence[str]) -> list[str]:
    """The table's columns, in order."""
    names = [str(c).strip().lower() for c in channels]
    return [
        "t", "label", *(f"centroid_{a}" for a in AXES), "volume", "voxels",
        *(f"bbox_{a}0" for a in AXES), *(f"bbox_{a}1" for a in AXES),
        *(f"{n}_{s}" for n in names for s in ("mean", "integrated")),
    ]


def _blocks(shape: Sequence[int], block_yx: Sequence[int]):
    _, ny, nx = (int(s) for s in shape)
    by, bx = (max(1, int(b)) for b in block_yx)
    for y0 in range(0, ny, by):
        for x0 in range(0, nx, bx):
            yield (slice(None), slice(y0, min(ny, y0 + by)), slice(x0, min(nx, x0 + bx)))


def measure_objects(
    read_labels: Callable[[tuple], np.ndarray],
    read_image: Callable[[tuple], np.ndarray],
    shape: Sequence[int],
    channels: Sequence[str],
    *,
    voxel_size: Sequence[float],
    t: int = 0,
    block_yx: Sequence[int] = BLOCK_YX,
) -> pd.DataFrame:
    """One row per label of a ``(z, y, x)`` volume, measured block by block.

    Parameters
    ----------
    read_labels : callable
        ``read_labels(index)`` -> the labels of a ``(z, y, x)`` slice tuple.
    read_image : callable
        ``read_image(index)`` -> ``(c, z, y, x)`` intensities of the same region.
    shape : sequence of int
        ``(z, y, x)`` of the volume.
    channels : sequence of str
        Channel names, in the image's order (columns ``<name>_mean``, ``<name>_integrated``).
    voxel_size : sequence of float
        ``(z, y, x)`` um.
    t : int
        Written in the ``t`` column.
    block_yx : sequence of int
        y/x size of the blocks (whole z).

    Returns
    -------
    pandas.DataFrame
        Columns :func:`object_columns`, sorted by label.

    Examples
    --------
    >>> lab = np.zeros((2, 4, 4), np.uint32); lab[:, 1:3, 1:4] = 5
    >>> img = np.ones((1, 2, 4, 4), np.float32)
    >>> measure_objects(lambda i: lab[i], lambda i: img[(slice(None), *i)], lab.shape, ["dna"],
    ...                 voxel_size=(2, 1, 1), block_yx=(2, 2))[["label", "voxels", "volume", "bbox_x1", "dna_integrated"]]
       label  voxels  volume  bbox_x1  dna_integrated
    0      5      12    24.0        4            12.0
    """
    names = [str(c).strip().lower() for c in channels]
    pieces = []
    for index in _blocks(shape, block_yx):
        labels = np.asarray(read_labels(index))
        if not labels.any():
            continue
        image = np.asarray(read_image(index), dtype=np.float32)
        part = measure_regions(labels, image, channels=names, voxel_size=voxel_size, bbox=True)
        offsets = (0, index[1].start, index[2].start)
        for axis, offset, size in zip(AXES, offsets, voxel_size):
            part[f"bbox_{axis}0"] += offset
            part[f"bbox_{axis}1"] += offset
            # voxel-weighted sums of the centroid in the volume's frame, combined below
            part[f"centroid_{axis}"] = (part[f"centroid_{axis}"] + offset * float(size)) * part["voxels"]
        pieces.append(part)
    columns = object_columns(channels)
    if not pieces:
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c in ("t", "label", "voxels") or c.startswith("bbox") else np.float64) for c in columns})
    table = pd.concat(pieces, ignore_index=True)
    agg = {f"centroid_{a}": "sum" for a in AXES}
    agg.update({"volume": "sum", "voxels": "sum"})
    agg.update({f"bbox_{a}0": "min" for a in AXES})
    agg.update({f"bbox_{a}1": "max" for a in AXES})
    agg.update({f"{n}_integrated": "sum" for n in names})
    out = table.groupby("label", sort=True).agg(agg).reset_index()
    for axis in AXES:
        out[f"centroid_{axis}"] = out[f"centroid_{axis}"] / out["voxels"]
    for n in names:
        out[f"{n}_mean"] = out[f"{n}_integrated"] / out["voxels"]
    out.insert(0, "t", np.full(len(out), int(t), dtype=np.int64))
    return out[columns]

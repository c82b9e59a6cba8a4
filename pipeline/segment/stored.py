"""Worker side: segment one stored ``(field, t)`` volume and write its labels to the store.

A volume that fits one block (see :mod:`pipeline.segment.volume`) is read whole, segmented,
written, read back and marked done. A larger one is read block by block straight from
Zarr and its labels are written block by block (each write read back and compared), then
marked done: the worker never holds the whole volume, so its memory does not grow with
the volume's size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.errors import StoreError
from pipeline.io import affine
from pipeline.io.location import Location
from pipeline.io.volumes import mark_done, read_volume, write_volume
from pipeline.segment.inputs import StoredVolume, plan_series, series_frames
from pipeline.segment.objects import measure_objects
from pipeline.segment.resample import target_voxel_size, zoom_factors

LOG = logging.getLogger(__name__)


class VerifiedOutput:
    """``(z, y, x)`` view of time point ``t`` of a label array (``t, z, y, x``, or ``t, 1, z, y, x``
    as earlier versions wrote); every write is read back and compared."""

    def __init__(self, array, t: int, where: str):
        self.array, self.where = array, where
        self.lead = (int(t),) if array.ndim == 4 else (int(t), 0)
        self.shape = tuple(int(s) for s in array.shape[-3:])

    def __getitem__(self, index) -> np.ndarray:
        return np.asarray(self.array[(*self.lead, *index)])

    def __setitem__(self, index, value) -> None:
        value = np.asarray(value, dtype=self.array.dtype)
        self.array[(*self.lead, *index)] = value
        if not np.array_equal(np.asarray(self.array[(*self.lead, *index)]), value):
            raise StoreError(f"{self.where}: read-back of t={self.lead[0]} block {index} differs from what was written")


def _image(location: Location, path: str):
    """The ``t, c, z, y, x`` image at ``path``: its float32 view when stored as integers + maps."""
    array = location.open_array(path)
    group = path.rsplit("/", 1)[0] if "/" in path else ""
    if affine.is_stored_normalized(dict(location.open_group(group).attrs.get("spheroid", {}))):
        params = location.open_array(f"{group}/{affine.ARRAY}" if group else affine.ARRAY)
        return affine.NormalizedImage(array, params, where=location.child(path))
    return array


def fits_one_block(segmenter, shape: Sequence[int], voxel_size: Sequence[float]) -> bool:
    """Whether a volume of ``shape`` is segmented as one block (at the model's scale, no halo needed)."""
    card, c = segmenter.card, segmenter.config
    target = target_voxel_size(card.voxel_size, card.nucleus_diameter_um, c.diameter, card_diameters=card.nucleus_diameters_um)
    factors = zoom_factors(voxel_size, target, card.voxel_tolerance)
    return float(np.prod(np.asarray(shape) * factors)) <= c.block_mvoxels * 1e6


def segment_stored(
    location: Location,
    src: str,
    dst: str,
    t: int,
    channels: Sequence[int],
    segmenter,
    *,
    voxel_size: Sequence[float],
    source: str,
    plan=None,
) -> dict[str, Any]:
    """Segment volume ``t`` (channels ``channels`` of the image at ``src``) into the label array ``dst``.

    ``plan`` (an :class:`~pipeline.segment.inputs.InputPlan`) is the normalisation to apply
    (its time series'); by default the volume's own percentiles.

    Returns
    -------
    dict
        What :func:`pipeline.segment.volume.segment_volume` reports (nuclei, resampling, blocks).
    """
    image = _image(location, src)
    shape = tuple(int(s) for s in image.shape[2:])
    if fits_one_block(segmenter, shape, voxel_size):
        views = [read_volume(location, src, t, c) for c in channels]
        labels, info = segmenter.run(views, voxel_size=voxel_size, source=source, plan=plan)
        write_volume(location, dst, t, 0, labels, stats=False)
        return info
    views = [StoredVolume(image, t, c, where=location.child(src)) for c in channels]
    out = VerifiedOutput(location.open_array(dst, mode="r+"), t, location.child(dst))
    _, info = segmenter.run(views, voxel_size=voxel_size, source=source, out=out, plan=plan)
    mark_done(location, dst, t, 0)
    return info


def series_plan_stored(location: Location, src: str, channels: Sequence[int], *, low: float, high: float, clip: bool, combine: str):
    """The normalisation of a stored field's whole time series (:func:`~pipeline.segment.inputs.plan_series`).

    Reads a regular subsample of up to :data:`~pipeline.segment.inputs.SERIES_FRAMES` time points.
    """
    image = _image(location, src)
    frames = [[StoredVolume(image, t, c, where=location.child(src)) for c in channels] for t in series_frames(int(image.shape[0]))]
    return plan_series(frames, low=low, high=high, clip=clip, combine=combine)


def measure_stored(location: Location, src: str, dst: str, t: int, channel_names: Sequence[str], *, voxel_size: Sequence[float]):
    """The per-nucleus table of labelled time point ``t``: labels at ``dst``, every channel of ``src``.

    Read block by block from the store (see :func:`pipeline.segment.objects.measure_objects`),
    so memory stays flat in the volume's size.
    """
    image = _image(location, src)
    labels = VerifiedOutput(location.open_array(dst), t, location.child(dst))
    n_channels = int(image.shape[1])

    def read_image(index) -> np.ndarray:
        return np.stack([np.asarray(image[(int(t), c, *index)]) for c in range(n_channels)])

    names = list(channel_names) if len(channel_names) == n_channels else [f"c{c}" for c in range(n_channels)]
    return measure_objects(labels.__getitem__, read_image, labels.shape, names, voxel_size=voxel_size, t=t)

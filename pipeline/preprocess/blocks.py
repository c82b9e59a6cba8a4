"""Preprocess one volume split in blocks with a halo, on the Dask cluster, without seams.

Used when ``block_shape`` is set, for volumes too large for one worker. The chain is cut
into segments at the steps that need whole-volume statistics (a percentile threshold,
the 8-bit window, the normalisation): each segment runs block-wise with
``dask.array.map_overlap`` and a depth equal to the sum of its steps' halos, and before a
statistics step the segment's output is persisted on the workers and its exact value
histogram summed over the blocks (only that histogram comes back to the client). Given
the histogram the statistics steps are point-wise, so every block's core equals the
same region of :func:`pipeline.preprocess.chain.apply_chain` on the whole volume.

Rule this relies on: a step may only be split along axes where its halo is finite
(CLAHE needs whole slices: ``2d`` CLAHE allows splitting z only, ``3d`` CLAHE nothing);
:func:`check_block_shape` enforces it before any work starts.

Results are rechunked to the store's chunks before writing, so no two tasks write the
same Zarr chunk; each write task reads its chunk back before the volume is marked done.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from pipeline.errors import ConfigError, StoreError
from pipeline.io.chunks import check_volume_chunks
from pipeline.io.location import Location
from pipeline.io.volumes import mark_done
from pipeline.preprocess import chain as ch
from pipeline.preprocess.steps import volume_histogram

LOG = logging.getLogger(__name__)

AXES = ("z", "y", "x")


def resolve_blocks(block_shape: Sequence[int], shape: Sequence[int]) -> tuple[int, int, int]:
    """Block shape with 0 (whole axis) and oversize entries replaced by the volume's size."""
    return tuple(s if b == 0 else min(int(b), int(s)) for b, s in zip(block_shape, shape))  # type: ignore[return-value]


def check_block_shape(chain: Sequence, block_shape: Sequence[int], shape: Sequence[int], channel: str) -> None:
    """Raise :class:`ConfigError` if ``chain`` cannot run on blocks of ``block_shape``.

    An axis may be split only if every enabled step has a finite halo along it.
    """
    blocks = resolve_blocks(block_shape, shape)
    for step in ch.enabled(chain):
        halo = ch.spec(step).halo(step)
        for axis, (b, s, h) in enumerate(zip(blocks, shape, halo)):
            if b < s and h is None:
                raise ConfigError(
                    f"block_shape: step '{step.step}' ({getattr(step, 'mode', '')}) of channel {channel} needs whole "
                    f"{AXES[axis]} lines, so block_shape[{axis}] ({AXES[axis]}) must be 0 (whole axis) or >= {s}"
                )


def _apply_segment(block: np.ndarray, segment: list[tuple[Any, np.ndarray | None]]) -> np.ndarray:
    from pipeline.preprocess.runner import tune_worker

    tune_worker()
    for step, hist in segment:
        block = ch.run_step(block, step, hist=hist)
    return block


def _sum_hists(parts: list[np.ndarray]) -> np.ndarray:
    return np.sum(parts, axis=0)


def _write_block(block: np.ndarray, location: Location, array_path: str, t: int, c: int, block_info=None) -> np.ndarray:
    from pipeline.preprocess.runner import tune_worker

    tune_worker()
    where = block_info[0]["array-location"]
    region = (t, c) + tuple(slice(a, b) for a, b in where)
    array = location.open_array(array_path, mode="r+")
    if block.dtype != array.dtype:
        if not np.can_cast(block.dtype, array.dtype, casting="safe"):
            raise StoreError(f"{location.child(array_path)}: cannot store {block.dtype} data in a {array.dtype} array without loss")
        block = block.astype(array.dtype)
    array[region] = block
    if not np.array_equal(array[region], block, equal_nan=block.dtype.kind in "fc"):
        raise StoreError(f"{location.child(array_path)}: read-back of t={t} c={c} block {where} differs from what was written")
    return np.ones((1, 1, 1), np.uint8)


def _segment_array(x, segment: list, dtype: np.dtype):
    if not segment:
        return x
    halo = ch.chain_halo([s for s, _ in segment])
    depth = {axis: (h or 0) for axis, h in enumerate(halo)}
    return x.map_overlap(
        _apply_segment,
        depth=depth,
        boundary="none",
        dtype=dtype,
        meta=np.empty((0, 0, 0), dtype),
        segment=segment,
    )


def process_volume_blocks(
    client,
    location: Location,
    src: str,
    dst: str,
    t: int,
    c: int,
    chain: Sequence,
    block_shape: Sequence[int],
) -> dict[str, Any]:
    """Run ``chain`` on volume ``(t, c)`` of ``src`` block-wise and write it to ``dst``.

    Parameters
    ----------
    client : distributed.Client
        The cluster; blocks are its tasks, the client receives only histograms and flags.
    location : Location
        The store.
    src, dst : str
        Array paths of the input and output ``t, c, z, y, x`` images.
    t, c : int
        The volume.
    chain : sequence of step configs
        The channel's chain.
    block_shape : (int, int, int)
        Block shape (0 = whole axis), checked with :func:`check_block_shape`.

    Returns
    -------
    dict
        ``{"t", "c", "blocks", "mode": "blocks"}``.
    """
    import dask
    import dask.array as da

    source_array = location.open_array(src)
    check_volume_chunks(source_array, t, c, where=location.child(src))  # zarr reads a lost chunk as zeros
    source = da.from_zarr(source_array)[t, c]
    out_array = location.open_array(dst)
    blocks = resolve_blocks(block_shape, source.shape)
    x = source.rechunk(blocks)
    dtype = np.dtype(source.dtype)
    segment: list = []
    persisted = []
    for step in ch.enabled(chain):
        if ch.spec(step).stats(step):
            x = _segment_array(x, segment, dtype)
            segment = []
            x = client.persist(x)
            persisted.append(x)
            parts = [dask.delayed(volume_histogram)(b) for b in x.to_delayed().ravel()]
            hist = client.compute(dask.delayed(_sum_hists)(parts)).result()
            segment.append((step, hist))
        else:
            segment.append((step, None))
        dtype = ch.spec(step).out_dtype(dtype)
    x = _segment_array(x, segment, dtype)
    n_blocks = int(np.prod([len(b) for b in x.chunks]))
    x = x.rechunk(out_array.chunks[2:])
    flags = x.map_blocks(
        _write_block,
        location=location,
        array_path=dst,
        t=t,
        c=c,
        chunks=(1, 1, 1),
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), np.uint8),
    )
    written = client.compute(flags).result()
    del persisted
    if not written.all():  # pragma: no cover - _write_block raises instead
        raise StoreError(f"{location.child(dst)}: some blocks of t={t} c={c} were not written")
    mark_done(location, dst, t, c)
    return {"t": int(t), "c": int(c), "blocks": n_blocks, "mode": "blocks"}

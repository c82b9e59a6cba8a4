"""Segment a volume in overlapping blocks and merge the labels across block faces.

The volume is cut into a regular grid of *cores* that tile it; each block is its core
grown by a halo of ``halo`` voxels per side (clipped at the volume's border). Every block
is segmented on its own; the output takes each voxel from the block whose core holds it,
so a nucleus cut by a core face is made of the pieces the two blocks found.

Merging (after the Cellpose distributed pattern, with overlap instead of adjacency): in
a slab ``w = max(1, halo // 2)`` voxels either side of each face, both neighbours have
labels (one from its core, one from its halo). Two labels that cover the same voxels
there (IoU >= :data:`MERGE_IOU`) are the same nucleus and get one id (union-find over all
faces, so a nucleus at a corner of four blocks is joined too). Ids are then renumbered
1..N in a second pass over the cores.

Size rule: a nucleus is found as in whole-volume segmentation when the block that holds
its larger part also sees the rest of it and the context the model needs around it,
i.e. when nuclei are smaller than the halo. The default halo is twice the nucleus
diameter. Two nuclei that touch each other across a face stay apart, since only
overlapping pieces merge.

Blocks are processed one at a time: memory holds one block, the face slabs of the
blocks not yet merged, and a lookup table of ids, whatever the volume's size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
from pipeline.progress import progress_bar

LOG = logging.getLogger(__name__)

MERGE_IOU = 0.5
"""Two labels of neighbouring blocks are one nucleus when their IoU in the face slab reaches this."""


@dataclass(frozen=True)
class Block:
    """One block: its grid index, its core and its outer region (core + halo), as slices."""

    index: tuple[int, int, int]
    core: tuple[slice, slice, slice]
    outer: tuple[slice, slice, slice]

    @property
    def inner(self) -> tuple[slice, slice, slice]:
        """The core, in the coordinates of the outer region."""
        return tuple(slice(c.start - o.start, c.stop - o.start) for c, o in zip(self.core, self.outer))


def _edges(size: int, n: int) -> list[int]:
    return [int(round(i * size / n)) for i in range(n + 1)]


def plan_blocks(shape: Sequence[int], block: Sequence[int], halo: Sequence[int]) -> list[Block]:
    """Blocks of at most ``block`` core voxels per axis (evenly spread) with ``halo`` per side.

    Examples
    --------
    >>> [b.core for b in plan_blocks((4, 10, 10), (4, 10, 10), (0, 2, 2))]
    [(slice(0, 4, None), slice(0, 10, None), slice(0, 10, None))]
    >>> len(plan_blocks((4, 10, 10), (4, 5, 6), (0, 2, 2)))
    4
    """
    shape = [int(s) for s in shape]
    counts = [max(1, math.ceil(s / max(1, int(b)))) for s, b in zip(shape, block)]
    edges = [_edges(s, n) for s, n in zip(shape, counts)]
    blocks = []
    for index in product(*(range(n) for n in counts)):
        core = tuple(slice(e[i], e[i + 1]) for e, i in zip(edges, index))
        outer = tuple(slice(max(0, c.start - h), min(s, c.stop + h)) for c, h, s in zip(core, halo, shape))
        blocks.append(Block(tuple(int(i) for i in index), core, outer))
    return blocks


def choose_block(shape: Sequence[int], zoom: Sequence[float], halo: Sequence[int], max_voxels: int) -> tuple[int, int, int]:
    """Largest core (z, y, x) whose block, at the model's scale (``zoom``), has at most ``max_voxels``.

    The axis with the most model voxels per block is halved until the block fits; z (few
    slices in confocal stacks) is split last.
    """
    core = [int(s) for s in shape]

    def model_voxels(c):
        return float(np.prod([(min(ci + 2 * h, s)) * z for ci, h, s, z in zip(c, halo, shape, zoom)]))

    while model_voxels(core) > max_voxels:
        sizes = [(min(c + 2 * h, s)) * z for c, h, s, z in zip(core, halo, shape, zoom)]
        order = sorted(range(3), key=lambda a: (a == 0, -sizes[a]))
        axis = next((a for a in order if core[a] > max(1, halo[a])), None)
        if axis is None:
            break
        core[axis] = max(1, math.ceil(core[axis] / 2))
    return tuple(core)


class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        root = a
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(a, a) != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def overlapping_pairs(a: np.ndarray, b: np.ndarray, min_iou: float = MERGE_IOU) -> np.ndarray:
    """``(n, 2)`` label pairs of two label arrays over the same voxels whose IoU there is at least ``min_iou``."""
    a = a.ravel().astype(np.uint64)
    b = b.ravel().astype(np.uint64)
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), np.uint64)
    keys, inter = np.unique((a[both] << np.uint64(32)) | b[both], return_counts=True)
    la, lb = keys >> np.uint64(32), keys & np.uint64(0xFFFFFFFF)
    ids_a, size_a = np.unique(a[a > 0], return_counts=True)
    ids_b, size_b = np.unique(b[b > 0], return_counts=True)
    sa = size_a[np.searchsorted(ids_a, la)]
    sb = size_b[np.searchsorted(ids_b, lb)]
    iou = inter / (sa + sb - inter)
    return np.stack([la[iou >= min_iou], lb[iou >= min_iou]], axis=1)


def _slab(block: Block, axis: int, face: int, width: int) -> tuple[slice, slice, slice]:
    """Global slices of the slab ``[face - width, face + width)`` along ``axis`` over the block's core."""
    sl = list(block.core)
    sl[axis] = slice(face - width, face + width)
    return tuple(sl)


def _local(region: tuple[slice, ...], outer: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, outer))


def segment_blocks(
    segment: Callable[[tuple[slice, slice, slice]], np.ndarray],
    shape: Sequence[int],
    blocks: Sequence[Block],
    out,
    *,
    progress: bool = False,
) -> int:
    """Segment every block, write the merged labels into ``out`` and return the number of nuclei.

    Parameters
    ----------
    segment : callable
        ``segment(outer_slices) -> labels`` of the outer region's shape (any non-negative
        integer ids, 0 background).
    shape : sequence of int
        The volume's ``(z, y, x)`` shape.
    blocks : sequence of Block
        From :func:`plan_blocks`.
    out : array-like
        ``(z, y, x)`` uint32 output that takes slice assignment (a numpy array, or a zarr
        array view); read back and rewritten in the renumbering pass.
    progress : bool
        Show a progress bar over the blocks.

    Returns
    -------
    int
        Nuclei in the merged labels, numbered 1..N.
    """
    by_index = {b.index: b for b in blocks}
    union = _UnionFind()
    pending: dict[tuple[int, tuple[int, int, int]], np.ndarray] = {}
    offset = 0
    for block in progress_bar(blocks, desc="blocks", unit="block", disable=not progress or len(blocks) == 1, leave=False):
        local = np.asarray(segment(block.outer))
        if local.shape != tuple(s.stop - s.start for s in block.outer):
            raise ValueError(f"segment returned shape {local.shape} for the block {block.outer}")
        top = int(local.max()) if local.size else 0
        labels = np.where(local > 0, local.astype(np.uint64) + np.uint64(offset), np.uint64(0))
        offset += top
        if offset >= np.iinfo(np.uint32).max:
            raise ValueError("too many labels for uint32 before merging; use larger blocks")
        labels = labels.astype(np.uint32)
        out[block.core] = labels[block.inner]
        for axis in range(3):
            for step in (-1, 1):
                neighbour = list(block.index)
                neighbour[axis] += step
                other = by_index.get(tuple(neighbour))
                if other is None:
                    continue
                halo = (block.outer[axis].stop - block.core[axis].stop) if step > 0 else (block.core[axis].start - block.outer[axis].start)
                width = max(1, halo // 2)
                face = block.core[axis].stop if step > 0 else block.core[axis].start
                key = (axis, min(block.index, other.index))
                slab = labels[_local(_slab(block, axis, face, width), block.outer)] if halo else None
                if key in pending:
                    theirs = pending.pop(key)
                    if slab is not None and theirs is not None and theirs.shape == slab.shape:
                        for a, b in overlapping_pairs(theirs, slab):
                            union.union(int(a), int(b))
                else:
                    pending[key] = slab
        del labels, local
    # renumber: merged ids -> 1..N, in order of first appearance of their roots
    roots = np.arange(offset + 1, dtype=np.int64)
    for a in list(union.parent):
        roots[a] = union.find(a)
    present = np.zeros(offset + 1, dtype=bool)
    for block in blocks:
        counts = np.bincount(np.asarray(out[block.core]).ravel())
        present[: counts.size] |= counts > 0
    present[0] = False
    keep = np.zeros(offset + 1, dtype=bool)
    keep[np.unique(roots[present])] = True
    keep[0] = False
    new_id = np.zeros(offset + 1, dtype=np.uint32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    lut = new_id[roots]
    lut[0] = 0
    if np.array_equal(lut, np.arange(offset + 1)):
        return int(keep.sum())  # already 1..N (one block of consecutive ids)
    for block in blocks:
        out[block.core] = lut[np.asarray(out[block.core])]
    return int(keep.sum())

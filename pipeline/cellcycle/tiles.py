"""Track a large field in overlapping spatial tiles: laptrack's cost grows with the square of the nuclei.

laptrack builds a dense distance matrix per pair of frames, and its gap-closing and
division step looks at every track segment against every other (a pandas row loop):
with 5,000 nuclei per frame most of its time goes there, and it grows with the square
of the nuclei per frame. Tiles of ``tile_um`` in y and x, each widened by ``margin_um``
on every side, are tracked one by one (the same laptrack settings), so that cost falls
with the number of tiles.

Stitching. Each link ``(a, b)`` belongs to the tile whose core holds the later node
``b`` (every node gets its predecessor from one tile, which saw ``margin_um`` around
it). A node that then has two successors given by different tiles is a division only
if the tile whose core holds the mother made it too; otherwise only the successors
that tile linked are kept (the nearest one when it linked none). A margin of a few
linking distances makes the tiles agree wherever their cores meet.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Callable

import numpy as np

Node = tuple[int, int]


def _tiles(lo: np.ndarray, hi: np.ndarray, tile_um: float) -> list[tuple[float, float, float, float]]:
    """Cores ``(y0, y1, x0, x1)`` covering the box ``lo``..``hi`` (y, x); the last ones reach to infinity."""
    ny = max(1, int(np.ceil((hi[0] - lo[0]) / tile_um)))
    nx = max(1, int(np.ceil((hi[1] - lo[1]) / tile_um)))
    ys = [lo[0] + i * tile_um for i in range(ny)] + [np.inf]
    xs = [lo[1] + j * tile_um for j in range(nx)] + [np.inf]
    ys[0] = xs[0] = -np.inf
    return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(ny) for j in range(nx)]


def link_tiled(
    link: Callable[[list, list[tuple[Node, Node]]], list[tuple[Node, Node]]],
    frames: list,
    fixed: list[tuple[Node, Node]],
    *,
    tile_um: float,
    margin_um: float,
) -> list[tuple[Node, Node]]:
    """Links of ``frames`` made tile by tile with ``link(frames, fixed)`` and stitched.

    Parameters
    ----------
    link : callable
        Links consecutive frames (``pipeline.cellcycle.track._link_window`` with its tracker).
    frames : list
        Frames with ``t``, ``labels``, ``coords`` (um, z y x), ``phase``, ``dead``.
    fixed : list of (node, node)
        Links committed before; each tile gets those whose both nodes it holds.
    tile_um, margin_um : float
        Tile core size and the overlap added on every side (um).

    Returns
    -------
    list of (node, node)
        Links ``(earlier, later)``, each later node at most once.
    """
    coords = [f.coords for f in frames if len(f.labels)]
    if not coords:
        return []
    allc = np.concatenate(coords)
    lo, hi = allc[:, 1:].min(axis=0), allc[:, 1:].max(axis=0)
    cores = _tiles(lo, hi, tile_um)
    if len(cores) == 1:
        return link(frames, fixed)
    position = {(f.t, int(lab)): f.coords[i] for f in frames for i, lab in enumerate(f.labels.tolist())}

    def core_of(node: Node) -> int:
        y, x = position[node][1], position[node][2]
        for k, (y0, y1, x0, x1) in enumerate(cores):
            if y0 <= y < y1 and x0 <= x < x1:
                return k
        return len(cores) - 1  # pragma: no cover - the cores cover the plane

    made: list[set] = []
    for y0, y1, x0, x1 in cores:
        sub = []
        for f in frames:
            y, x = f.coords[:, 1], f.coords[:, 2]
            keep = (y >= y0 - margin_um) & (y < y1 + margin_um) & (x >= x0 - margin_um) & (x < x1 + margin_um)
            sub.append(
                replace(
                    f,
                    labels=f.labels[keep],
                    coords=f.coords[keep],
                    phase=f.phase[keep] if f.phase is not None else None,
                    dead=f.dead[keep] if f.dead is not None else None,
                )
            )
        held = {(f.t, int(lab)) for f in sub for lab in f.labels.tolist()}
        sub_fixed = [(a, b) for a, b in fixed if a in held and b in held]
        made.append({(a, b) if a[0] < b[0] else (b, a) for a, b in link(sub, sub_fixed)})
    kept = [(a, b) for k, edges in enumerate(made) for a, b in edges if core_of(b) == k]
    children: dict[Node, list[Node]] = defaultdict(list)
    for a, b in kept:
        children[a].append(b)
    out = []
    for a, kids in children.items():
        if len(kids) > 1 and len({core_of(b) for b in kids}) > 1:
            own = made[core_of(a)]
            agreed = [b for b in kids if (a, b) in own]
            if not agreed:
                agreed = [min(kids, key=lambda b: float(np.sum((position[b] - position[a]) ** 2)))]
            kids = agreed
        out.extend((a, b) for b in kids)
    return out

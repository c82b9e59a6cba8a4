"""Benchmark tracking: seconds and peak memory against the number of nuclei and frames.

    python bench/track.py [--nuclei 1000,5000] [--frames 50,100,300] [--quick]

Nuclei are points in a 3-D slab (density of the synthetic spheroids: ~10 um apart),
moving by a persistent random walk (1.2 um per frame and axis), a few percent dividing
every frame (two daughters 5 um apart), frames streamed one at a time into
:func:`pipeline.cellcycle.track.track_frames` (window 40; whole frames, or y/x tiles with ``--tile-nuclei``). Each run is a fresh process,
so its peak RSS is its own. The baseline, measured in the same run, is laptrack over
the whole series at once (no windows), whose memory grows with the number of frames.

Targets (PASS/FAIL): the windowed tracker's peak memory at the longest series is at
most 1.25x that at the shortest (flat in frames) for every nuclei count, and 5,000
nuclei x 300 frames (when measured) take under 10 minutes. CPU seconds are reported beside
the wall-clock ones: on a shared host the wall clock mostly measures the other jobs.
Writes ``bench/results/track.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def frames(n: int, n_frames: int, seed: int = 0):
    """Per-frame tables of a moving, dividing population (about ``n`` nuclei, held constant)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    side = (n * 1000.0 / 100.0) ** 0.5  # slab 100 um deep, one nucleus per 1000 um^3
    pos = rng.uniform((0, 0, 0), (100, side, side), size=(n, 3))
    vel = rng.normal(0, 1.2, size=(n, 3))
    for t in range(n_frames):
        if t:
            vel = 0.6 * vel + 0.8 * rng.normal(0, 1.2, size=vel.shape)
            pos = pos + vel
            divide = rng.random(len(pos)) < 0.01
            die = rng.choice(len(pos), size=int(divide.sum()), replace=False)  # keep the count flat
            offset = rng.normal(size=(int(divide.sum()), 3))
            offset *= 2.5 / np.linalg.norm(offset, axis=1, keepdims=True)
            kids = np.concatenate([pos[divide] + offset, pos[divide] - offset])
            keep = np.ones(len(pos), bool)
            keep[die] = False
            keep[divide] = False
            pos = np.concatenate([pos[keep], kids])
            vel = np.concatenate([vel[keep], np.zeros_like(kids)])
        order = rng.permutation(len(pos))
        table = pd.DataFrame({"t": t, "label": np.arange(1, len(pos) + 1), "centroid_z": pos[order, 0], "centroid_y": pos[order, 1], "centroid_x": pos[order, 2]})
        table.attrs["t"] = t
        yield table


def _run(kind: str, n: int, n_frames: int, queue, tiles: dict | None = None) -> None:
    from pipeline.cellcycle.track import make_tracker, track_frames
    from pipeline.config.cellcycle import TrackConfig

    config = TrackConfig(division_phase_check=False, **(tiles or {}))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    cpu0 = time.process_time()
    if kind == "windowed":
        rows = sum(len(f) for f in track_frames(frames(n, n_frames), config))
    else:  # baseline: laptrack over all frames at once
        coords = [f[["centroid_z", "centroid_y", "centroid_x"]].to_numpy() for f in frames(n, n_frames)]
        tree = make_tracker(config).predict(coords)
        rows = tree.number_of_nodes()
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"kind": kind, "nuclei": n, "frames": n_frames, "rows": rows, "seconds": seconds, "cpu_s": cpu, "peak_mb": peak / 1024, "start_mb": base / 1024})


def measure(kind: str, n: int, n_frames: int, tiles: dict | None = None) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(kind, n, n_frames, queue, tiles))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuclei", default="1000,5000")
    parser.add_argument("--frames", default="50,100,300")
    parser.add_argument("--baseline-frames", default="50,100", help="frame counts for the whole-series baseline (1,000 nuclei)")
    parser.add_argument("--quick", action="store_true", help="1,000 nuclei x 50 and 100 frames only")
    parser.add_argument("--tile-nuclei", type=int, default=0, help="TrackConfig.tile_nuclei (0: whole frames, the default)")
    parser.add_argument("--tile-margin", type=float, default=3.0, help="TrackConfig.tile_margin")
    args = parser.parse_args()
    tiles = {"tile_nuclei": args.tile_nuclei or None, "tile_margin": args.tile_margin}
    nuclei = [1000] if args.quick else [int(x) for x in args.nuclei.split(",")]
    counts = [50, 100] if args.quick else [int(x) for x in args.frames.split(",")]
    results = []
    for n in nuclei:
        for f in counts:
            r = measure("windowed", n, f, tiles)
            results.append(r)
            print(f"windowed  {n:6d} nuclei x {f:4d} frames: {r['seconds']:7.1f} s ({r['cpu_s']:7.1f} s CPU), peak {r['peak_mb']:7.0f} MB", flush=True)
    for f in [int(x) for x in args.baseline_frames.split(",")]:
        r = measure("whole", 1000, f)
        results.append(r)
        print(f"whole     {1000:6d} nuclei x {f:4d} frames: {r['seconds']:7.1f} s ({r['cpu_s']:7.1f} s CPU), peak {r['peak_mb']:7.0f} MB (baseline)", flush=True)
    ok = True
    for n in nuclei:
        rows = [r for r in results if r["kind"] == "windowed" and r["nuclei"] == n]
        ratio = max(rows, key=lambda r: r["frames"])["peak_mb"] / min(rows, key=lambda r: r["frames"])["peak_mb"]
        print(f"{n} nuclei: peak memory at {max(counts)} / {min(counts)} frames = {ratio:.2f}x")
        ok &= ratio <= 1.25
    big = [r for r in results if r["kind"] == "windowed" and r["nuclei"] >= 5000 and r["frames"] >= 300]
    if big:
        ok &= big[0]["seconds"] < 600
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "track.json").write_text(json.dumps(results, indent=1))
    print("PASS" if ok else "FAIL", "track: memory flat in frames" + (", 5000 x 300 under 10 min" if big else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

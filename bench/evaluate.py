"""Benchmark instance matching against StarDist's ``matching``, in the same run.

    python bench/evaluate.py [--nuclei 1000] [--repeat 7] [--seed 42]

Makes a 21 x 512 x 512 ground-truth label volume with about 1,000 nuclei
(ellipsoids cut by a Voronoi tessellation where they touch, anisotropic like the
thesis data: 5 um z, 1.24 um xy) and a prediction from it (centres jittered,
radii changed, 5 % of the nuclei dropped, some split, 40 false positives), then
times, best of ``--repeat`` rounds that run every contender in turn:

* ``pipeline.evaluate.matching.match_thresholds`` at the 9 thresholds 0.1..0.9 and
  ``matching`` at 0.5;
* ``stardist.matching.matching`` on the same pair at the same thresholds (its
  numba kernel is compiled before timing);
* for information, the per-nucleus Evaluation Score (``nucleus_scores``).

Checks both agree on every field, prints a table, writes
``bench/results/evaluate.json`` and a PASS/FAIL line (target: ours at least as
fast as StarDist, for 9 thresholds and for one); exits 1 on FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent
SHAPE = (21, 512, 512)
SAMPLING = (5.0 / 1.24, 1.0, 1.0)  # z voxels are ~4 times longer than xy ones
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FIELDS = ("tp", "fp", "fn", "precision", "recall", "accuracy", "f1", "n_true", "n_pred", "mean_true_score", "mean_matched_score", "panoptic_quality")


def nuclei_volume(centres: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Label ``i + 1`` where centre ``i`` is the nearest one and lies within ``radius[i]`` (physical units)."""
    seeds = np.zeros(SHAPE, np.int32)
    idx = np.clip(np.round(centres).astype(int), 0, np.array(SHAPE) - 1)
    seeds[tuple(idx.T)] = np.arange(1, len(idx) + 1)
    dist, (iz, iy, ix) = ndi.distance_transform_edt(seeds == 0, sampling=SAMPLING, return_indices=True)
    nearest = seeds[iz, iy, ix]
    r = np.zeros(len(idx) + 1)
    r[1:] = radius
    return np.where(dist <= r[nearest], nearest, 0).astype(np.int32)


def make_pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth with about ``n`` nuclei and a plausible prediction of it."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform((0, 0, 0), SHAPE, size=(n, 3))
    radius = rng.uniform(8, 12, n)
    truth = nuclei_volume(centres, radius)
    keep = rng.random(n) > 0.05
    moved = centres[keep] + rng.normal(0, (0.3, 1.5, 1.5), size=(keep.sum(), 3))
    extra = rng.uniform((0, 0, 0), SHAPE, size=(40, 3))
    pred = nuclei_volume(np.vstack([moved, extra]), np.r_[radius[keep] * rng.uniform(0.85, 1.15, keep.sum()), rng.uniform(6, 9, 40)])
    ids = np.unique(pred[pred > 0])
    split = rng.choice(ids, size=len(ids) // 20, replace=False)  # cut 5 % in two along x
    xx = np.broadcast_to(np.arange(SHAPE[2]), SHAPE)
    cx = ndi.mean(xx, pred, split)
    lut = np.zeros(int(pred.max()) + 1)
    lut[split] = cx
    cut = np.isin(pred, split) & (xx > lut[pred])
    pred = np.where(cut, pred + int(pred.max()), pred).astype(np.int32)
    return truth, pred


def interleaved(runs: dict, repeat: int) -> dict[str, tuple[float, float, object]]:
    """Best and median seconds of each function; rounds run every function once, in turn,
    so that all of them see the same load on a shared machine."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    out: dict[str, object] = {}
    for _ in range(repeat):
        for name, fn in runs.items():
            start = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (min(t), float(np.median(t)), out[name]) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuclei", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    from stardist.matching import matching as sd_matching

    from pipeline.evaluate.matching import match_thresholds, matching
    from pipeline.evaluate.score import nucleus_scores

    start = time.perf_counter()
    truth, pred = make_pair(args.nuclei, args.seed)
    made = time.perf_counter() - start
    n_true, n_pred = len(np.unique(truth)) - 1, len(np.unique(pred)) - 1
    print(f"volume {SHAPE}: {n_true} true, {n_pred} predicted nuclei (made in {made:.1f} s)")

    sd_matching(truth[:2, :64, :64], pred[:2, :64, :64], thresh=0.5)  # compile StarDist's numba kernel
    timed = interleaved(
        {
            "ours_9": lambda: match_thresholds(truth, pred, THRESHOLDS),
            "stardist_9": lambda: sd_matching(truth, pred, thresh=THRESHOLDS),
            "ours_1": lambda: matching(truth, pred, 0.5),
            "stardist_1": lambda: sd_matching(truth, pred, thresh=0.5),
            "score": lambda: nucleus_scores(truth, pred),
        },
        args.repeat,
    )
    ours_all_t, ours_all_med, ours_all = timed["ours_9"]
    sd_all_t, sd_all_med, sd_all = timed["stardist_9"]
    ours_one_t, ours_one_med, ours_one = timed["ours_1"]
    sd_one_t, sd_one_med, sd_one = timed["stardist_1"]
    score_t, _, rows = timed["score"]

    worst = 0.0
    for thr, ref in zip(THRESHOLDS, sd_all):
        for key in FIELDS:
            worst = max(worst, abs(float(getattr(ours_all[thr], key)) - float(getattr(ref, key))))
    for key in FIELDS:
        worst = max(worst, abs(float(getattr(ours_one, key)) - float(getattr(sd_one, key))))
    agree = worst <= 1e-9

    speed_all = sd_all_t / ours_all_t
    speed_one = sd_one_t / ours_one_t
    passed = agree and ours_all_t <= sd_all_t and ours_one_t <= sd_one_t
    print(f"{'run':<34}{'best s':>10}{'median s':>10}")
    print(f"{'ours, 9 thresholds':<34}{ours_all_t:>10.3f}{ours_all_med:>10.3f}")
    print(f"{'stardist, 9 thresholds':<34}{sd_all_t:>10.3f}{sd_all_med:>10.3f}   -> {speed_all:.1f}x faster (best)")
    print(f"{'ours, thresh 0.5':<34}{ours_one_t:>10.3f}{ours_one_med:>10.3f}")
    print(f"{'stardist, thresh 0.5':<34}{sd_one_t:>10.3f}{sd_one_med:>10.3f}   -> {speed_one:.1f}x faster (best)")
    print(f"{'Evaluation Score (per nucleus)':<34}{score_t:>10.3f}   ({len(rows)} nuclei, mean {rows.evaluation_score.mean():.3f})")
    print(f"largest difference to StarDist over all fields: {worst:.3g} (must be <= 1e-9)")
    print(f"at 0.5: tp {ours_one.tp} fp {ours_one.fp} fn {ours_one.fn} accuracy {ours_one.accuracy:.4f}")
    print(f"load average: {', '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    results = {
        "shape": list(SHAPE),
        "n_true": n_true,
        "n_pred": n_pred,
        "repeat": args.repeat,
        "median_seconds": {
            "ours_9_thresholds": ours_all_med,
            "stardist_9_thresholds": sd_all_med,
            "ours_1_threshold": ours_one_med,
            "stardist_1_threshold": sd_one_med,
        },
        "seconds": {
            "ours_9_thresholds": ours_all_t,
            "stardist_9_thresholds": sd_all_t,
            "ours_1_threshold": ours_one_t,
            "stardist_1_threshold": sd_one_t,
            "evaluation_score": score_t,
        },
        "speedup_9_thresholds": speed_all,
        "speedup_1_threshold": speed_one,
        "max_abs_difference": worst,
        "load_average": list(os.getloadavg()),
        "target": "ours <= stardist for 9 thresholds and for one; all fields equal to 1e-9",
        "passed": bool(passed),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "evaluate.json").write_text(json.dumps(results, indent=2))
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

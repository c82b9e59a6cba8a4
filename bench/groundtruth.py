"""Benchmark ground-truth preparation against the thesis' per-label, per-slice loop.

    python bench/groundtruth.py [--nuclei 1000] [--loop-labels 100] [--repeat 3] [--roundtrip]

Builds a 21 x 512 x 512 instance volume of N touching, anisotropic nuclei (seeds grown
with ``expand_labels``, plus Cellpose-like speckle: stray pixels of random labels), then
times, in the same run:

* :func:`pipeline.groundtruth.prepare.prepare_target` on the whole volume (defaults:
  min_area 20, majority smoothing r=1, inner edges, z contacts), best of ``--repeat``;
* the thesis' algorithm as a Python loop over every label and every slice (area check,
  per-label 3x3 convolution thresholded at 1/2, dilation minus mask), on the first
  ``--loop-labels`` labels, extrapolated linearly to all N (the loop's cost is per label).

With ``--roundtrip`` it also checks, on a synthetic spheroid (``pipeline.synth``), how
well instances come back from the prepared semantic target through the segmentation
stage's seeded watershed (``label_nuclei``), for inner and outer edges: a target that
loses nuclei or merges them caps what any network trained on it can reach.

Prints a table, writes ``bench/results/groundtruth.json`` and a PASS/FAIL line (target:
the full volume in < 10 s and >= 20x faster than the loop); exits 1 on FAIL.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent
SHAPE = (21, 512, 512)
SECONDS_TARGET = 10.0
SPEEDUP_TARGET = 20.0


def make_volume(n: int, seed: int = 42) -> np.ndarray:
    """N touching nuclei ~9 px across in x/y and ~2-3 slices in z, plus speckle."""
    from skimage.segmentation import expand_labels

    rng = np.random.default_rng(seed)
    seeds = np.zeros(SHAPE, np.uint32)
    seeds[tuple(rng.integers(0, s, n) for s in SHAPE)] = np.arange(1, n + 1)
    lab = expand_labels(seeds, distance=5.5, spacing=(4.0, 1.0, 1.0)).astype(np.uint32)
    speckle = tuple(rng.integers(0, s, n * 20) for s in SHAPE)
    lab[speckle] = rng.integers(1, n + 1, n * 20)
    return lab


def thesis_loop(lab: np.ndarray, labels: np.ndarray, min_area: int = 20) -> np.ndarray:
    """Per label, per slice: area check, 3x3 mean filter > 1/2, dilation minus mask (thesis 2.7)."""
    out = np.zeros(lab.shape, np.uint8)
    kernel = np.ones((3, 3), np.float32) / 9
    for label in labels:
        for z in range(lab.shape[0]):
            mask = lab[z] == label
            if not mask.any() or mask.sum() < min_area:
                continue
            smooth = ndi.convolve(mask.astype(np.float32), kernel, mode="nearest") > 0.5
            edge = ndi.binary_dilation(smooth) & ~smooth
            out[z][smooth] = 2
            out[z][edge] = 1
    return out


def roundtrip(seed: int = 0) -> list[dict]:
    """Instance recovery from the prepared target of a synthetic spheroid, inner vs outer edges."""
    from pipeline.config.synth import SynthConfig
    from pipeline.evaluate.matching import matching
    from pipeline.groundtruth.prepare import prepare_target
    from pipeline.segment.instances import label_nuclei
    from pipeline.synth import generate

    truth = generate(SynthConfig(shape=(21, 256, 256), n_timepoints=1, seed=seed)).labels[0]
    rows = []
    for mode, include_edge in (("inner", True), ("outer", False)):
        for edge_z in ("contacts", "none"):
            sem, inst = prepare_target(truth, min_area=0, smooth="none", edge_mode=mode, edge_z=edge_z)
            pred = label_nuclei(sem, include_edge=include_edge, erode_xy=0, min_seed_size=1, min_size=0, voxel_size=(5.0, 1.24, 1.24))
            m = matching(inst, pred, thresh=0.5)
            lost = int(np.count_nonzero(np.unique(inst))) - int(np.count_nonzero(np.unique(inst[sem == 2])))
            balance = np.bincount(sem.ravel(), minlength=3) / sem.size
            rows.append({"edge_mode": mode, "edge_z": edge_z, "f1_iou50": float(m.f1), "precision": float(m.precision), "recall": float(m.recall), "nuclei_without_core": lost, "n_nuclei": int(np.count_nonzero(np.unique(inst))), "balance": balance.round(4).tolist()})
    return rows


def main(argv: list[str] | None = None) -> int:
    from pipeline.groundtruth.prepare import prepare_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuclei", type=int, default=1000)
    parser.add_argument("--loop-labels", type=int, default=100, help="labels the thesis loop runs on (extrapolated to all)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--roundtrip", action="store_true", help="also measure instance recovery from the target (inner vs outer edges)")
    args = parser.parse_args(argv)

    lab = make_volume(args.nuclei)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        sem, inst = prepare_target(lab)
        times.append(time.perf_counter() - start)
    vec = min(times)
    ids = np.unique(lab)
    ids = ids[ids > 0]
    subset = ids[: args.loop_labels]
    start = time.perf_counter()
    thesis_loop(lab, subset)
    loop = (time.perf_counter() - start) * len(ids) / len(subset)
    balance = np.bincount(sem.ravel(), minlength=3) / sem.size
    result = {
        "shape": list(SHAPE),
        "nuclei": int(len(ids)),
        "nuclei_out": int(np.count_nonzero(np.unique(inst))),
        "vectorised_s": round(vec, 3),
        "vectorised_all_s": [round(t, 3) for t in times],
        "thesis_loop_s_extrapolated": round(loop, 1),
        "thesis_loop_labels_timed": int(len(subset)),
        "speedup": round(loop / vec, 1),
        "class_balance": {"background": float(balance[0]), "edge": float(balance[1]), "nucleus": float(balance[2])},
    }
    print(f"volume {SHAPE}, {len(ids)} nuclei ({result['nuclei_out']} after cleaning)")
    print(f"  prepare_target (vectorised): {vec:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"  thesis loop (extrapolated from {len(subset)} labels): {loop:8.1f} s")
    print(f"  speed-up: {loop / vec:.0f}x")
    print(f"  class balance: background {balance[0]:.1%} / edge {balance[1]:.1%} / nucleus {balance[2]:.1%}  (thesis: ~93% / 1% / 6%)")
    if args.roundtrip:
        result["roundtrip"] = roundtrip()
        print("  instance recovery from the target (synthetic spheroid, label_nuclei seeded watershed):")
        for row in result["roundtrip"]:
            print(f"    {row['edge_mode']:<5} edge_z={row['edge_z']:<8} F1@0.5 {row['f1_iou50']:.3f}  P {row['precision']:.3f}  R {row['recall']:.3f}  nuclei without core {row['nuclei_without_core']}/{row['n_nuclei']}  balance {row['balance']}")
    ok = vec < SECONDS_TARGET and loop / vec >= SPEEDUP_TARGET
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "groundtruth.json").write_text(json.dumps(result, indent=1))
    print(f"{'PASS' if ok else 'FAIL'}: {vec:.2f} s (target < {SECONDS_TARGET:.0f} s), {loop / vec:.0f}x the loop (target >= {SPEEDUP_TARGET:.0f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

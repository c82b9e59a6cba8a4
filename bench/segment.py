"""Benchmark the segmentation backends on the same volumes: accuracy, seconds per volume, peak memory.

    python bench/segment.py [--stardist DIR] [--cellpose DIR] [--unet DIR] [--volumes 2] [--tta 8] [--big]

Data sets (none of them seen in training or model selection):

* ``synthetic-heldout``: 21 x 512 x 512 spheroids rendered with the held-out settings of
  ``configs/trainset-unet-heldout-settings.yaml`` (denser, more axial blur, more read noise,
  larger nuclei than any training volume), generator seed 11;
* ``synthetic-varied``: 21 x 512 x 512 spheroids whose settings are drawn from the training
  ranges of ``configs/trainset-unet-varied.yaml`` (density, nucleus size and shape, blur, noise,
  dim cores, uneven staining), generator seed 11: each volume's combination differs from every
  training volume's, none extrapolates beyond them;
* ``synthetic-default``: 21 x 512 x 512 spheroids with the generator's default settings
  (the thesis' data), generator seed 7;
* ``embryo``: the real 8-cell mouse embryo of ``../shared/data/embryo-nuclei-3d``
  (51 x 120 x 122 at 2.18 x 1 x 1 um; nuclei about 34 um along z for 16-17 um in y and x,
  drawn out by the axial blur: ``--diameter 33.9,16.3,16.8``, what a user reads off the
  nuclei, here measured on the truth with the rule of the model card's ``nucleus_diameters_um``,
  :func:`pipeline.groundtruth.sizes.nucleus_sizes`);
* ``ovule``: the real ovule crop 1136 of ``../shared/data/ovule-nuclei-3d`` (voxel size from
  its TIFF; nuclei about round, ~3.5 um: ``--diameter 3.5``).

Each (backend, data set) runs in its own subprocess (its peak RSS is its own) through the
same path as ``spheroid segment`` (:meth:`ModelSegmenter.run`: normalise, resample,
blocks, labels). Reported: seconds per volume (model loading excluded, labelling
included), F1 at IoU 0.5 (StarDist's matching; pooled over the volumes, and per volume
with its median and range), the thesis' Evaluation Score (mean over true nuclei,
:func:`pipeline.evaluate.score.nucleus_scores`), peak RSS, and the U-Net's
speed as a ratio to StarDist's on the same volumes in the same run. ``--big`` also runs
the U-Net on a 64 x 2048 x 2048 stored volume through the block path and reports the
worker's peak RSS (target: < 2 GB, flat in the volume's size). Writes
``bench/results/segment.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = Path(os.environ.get("SPHEROID_SHARED_DATA", REPO.parent / "shared" / "data"))
VOXEL = (5.0, 1.24, 1.24)


def synthetic(kind: str, n: int) -> list[tuple]:
    """``n`` (image, truth, voxel size, diameter) of a synthetic data set."""
    from pipeline.config.base import load_config
    from pipeline.config.groundtruth import GroundTruthConfig
    from pipeline.config.synth import SynthConfig
    from pipeline.groundtruth.builders import draw_settings
    from pipeline.preprocess.resample import resample_image, resample_labels
    from pipeline.synth import generate

    import numpy as np

    out = []
    for i in range(n):
        well = f"G{2 + i}"
        if kind == "synthetic-default":
            config = SynthConfig(shape=(21, 512, 512), n_timepoints=1, seed=7)
            res = generate(config, well=well)
            out.append((res.images[0, 0], res.labels[0], VOXEL, None))
            continue
        source = "trainset-unet-heldout-settings.yaml" if kind == "synthetic-heldout" else "trainset-unet-varied.yaml"
        held = load_config(GroundTruthConfig, REPO / "configs" / source).synth
        rng = np.random.default_rng([11, i])
        settings, _ = draw_settings(held.synth.model_copy(update={"seed": 11}), held.vary, rng)
        shape = (21, 512, 512)
        render = tuple(max(1, int(round(s * t / v))) for s, t, v in zip(shape, VOXEL, settings.voxel_size))
        res = generate(settings.model_copy(update={"shape": render}), well=well)
        image = np.clip(np.rint(resample_image(res.images[0, 0], shape)), 0, 65535).astype(np.uint16)
        out.append((image, resample_labels(res.labels[0], shape), VOXEL, None))
    return out


#: The real samples' nuclei along z, y, x (um): ``nucleus_diameters`` of their truth.
EMBRYO_DIAMETERS = [33.93, 16.32, 16.84]
OVULE_DIAMETER = 3.5  # about round, as the training nuclei (3.20 x 3.10 x 2.86 um measured)


def real(kind: str) -> list[tuple]:
    from pipeline.groundtruth.tiffio import read_tiff

    if kind == "embryo":
        image, _ = read_tiff(DATA / "embryo-nuclei-3d" / "8_cell_stage_raw.tif")
        truth, _ = read_tiff(DATA / "embryo-nuclei-3d" / "8_cell_stage_label.tif")
        return [(image, truth, (2.18, 1.0, 1.0), EMBRYO_DIAMETERS)]
    image, voxel = read_tiff(DATA / "ovule-nuclei-3d" / "1136_mini_raw.tif")
    truth, _ = read_tiff(DATA / "ovule-nuclei-3d" / "1136_mini_label.tif")
    return [(image, truth, voxel, OVULE_DIAMETER)]


def figure(image, truth, labels, path: Path, title: str) -> None:
    """The middle slice: the image and the matching overlay (matched / missed / extra nuclei)."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from pipeline.evaluate import matching
    from pipeline.evaluate.plots import overlay_categories, plot_overlay

    z = int(np.argmax((truth > 0).sum(axis=(1, 2))))
    pairs = matching(truth, labels, thresh=0.5, report_matches=True)
    matched = [(t, p) for (t, p), sc in zip(pairs.matched_pairs, pairs.matched_scores) if sc >= 0.5]
    plot_overlay(overlay_categories(truth[z], labels[z], matched), truth[z], path, title=f"{title}, slice {z}")


def run_case(backend: str, model: str | None, dataset: str, n: int, threads: int, figures: Path | None = None) -> dict:
    """One (backend, data set), in this process (called in a subprocess by :func:`main`)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from pipeline.config.segment import SegmentConfig
    from pipeline.evaluate import matching, pool
    from pipeline.evaluate.score import nucleus_scores
    from pipeline.segment.backends import BACKENDS

    volumes = synthetic(dataset, n) if dataset.startswith("synthetic") else real(dataset)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results, scores, seconds = [], [], []
    segmenter = None
    tta = int(backend.removeprefix("unet+tta")) if backend.startswith("unet+tta") else 1
    backend = "unet" if tta > 1 else backend
    for image, truth, voxel, diameter in volumes:
        config = SegmentConfig(backend=backend, model=model, device="cpu", diameter=diameter, tta=tta)
        if segmenter is None or segmenter.config != config:
            segmenter = BACKENDS[backend](config)
        start = time.perf_counter()
        labels, info = segmenter.run(image, voxel_size=voxel)
        seconds.append(time.perf_counter() - start)
        results.append(matching(truth, labels, thresh=0.5))
        scores.append(nucleus_scores(truth, labels)["evaluation_score"].to_numpy())
        if figures is not None and len(results) == 1:
            figures.mkdir(parents=True, exist_ok=True)
            name = backend + (f"-tta{tta}" if tta > 1 else "")
            figure(image, truth, labels, figures / f"{name}-{dataset}.png", f"{name} on {dataset}: F1@0.5 {results[0].f1:.2f}")
    pooled = pool(results)
    return {
        "backend": backend + (f"+tta{tta}" if tta > 1 else ""), "model": model, "dataset": dataset, "volumes": len(volumes), "shape": list(volumes[0][0].shape),
        "seconds_per_volume": float(np.mean(seconds)), "seconds": seconds,
        "f1": float(pooled.f1), "f1_per_volume": [float(r.f1) for r in results],
        "precision": float(pooled.precision), "recall": float(pooled.recall),
        "n_true": int(pooled.n_true), "n_pred": int(pooled.n_pred),
        "evaluation_score": float(np.mean(np.concatenate(scores))),
        "panoptic_quality": float(pooled.panoptic_quality),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "data_rss_mb": rss_data,
        "threads": threads, "settings": segmenter.settings(),
    }


def run_big(model: str | None, threads: int, workdir: Path) -> dict:
    """The U-Net on a stored 64 x 2048 x 2048 volume through the worker's block path; peak RSS of this process."""
    import torch

    torch.set_num_threads(threads)
    from pipeline.config.segment import SegmentConfig
    from pipeline.config.synth import SynthConfig
    from pipeline.io.ngff import ImageMeta
    from pipeline.io.plate import Plate
    from pipeline.segment.backends import BACKENDS
    from pipeline.segment.stored import segment_stored
    from pipeline.synth import generate

    shape = (64, 2048, 2048)
    store = workdir / "big.zarr"
    if store.exists():
        import shutil

        shutil.rmtree(store)
    plate = Plate.create(str(store))
    field = plate.add_field("A1")
    field.create_image("raw", (1, 1, *shape), "uint16", ImageMeta(channels=("Hoechst",), voxel_size=VOXEL))
    tile = generate(SynthConfig(shape=(32, 512, 512), n_timepoints=1, seed=9), well="A1").images[0, 0]
    array = plate.location.open_array(field.array_path(), mode="r+")
    for z in range(0, 64, 32):
        for y in range(0, 2048, 512):
            for x in range(0, 2048, 512):
                array[0, 0, z : z + 32, y : y + 512, x : x + 512] = tile
    del tile
    config = SegmentConfig(model=model, device="cpu")
    field.create_labels("nuclei", (1, 1, *shape), ImageMeta(channels=("nuclei",), voxel_size=VOXEL), chunk_yx=(256, 256))
    segmenter = BACKENDS["unet"](config)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    info = segment_stored(plate.location, field.array_path(), f"{field.label_path('nuclei')}/0", 0, [0], segmenter, voxel_size=VOXEL, source="big")
    return {
        "shape": list(shape), "seconds": time.perf_counter() - start, "nuclei": info["nuclei"], "blocks": info["blocks"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": rss0, "threads": threads,
    }


def _subprocess(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    import numpy as np

    lines = ["| backend | data | volumes | F1@0.5 pooled (per volume: median, range) | Evaluation Score | s / volume | peak RSS (GB) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        per = r.get("f1_per_volume", [])
        spread = f" ({np.median(per):.3f}, {min(per):.3f}-{max(per):.3f})" if len(per) > 1 else ""
        lines.append(
            f"| {r['backend']} | {r['dataset']} ({'x'.join(map(str, r['shape']))}) | {r['volumes']} | {r['f1']:.3f}{spread} | "
            f"{r['evaluation_score']:.3f} | {r['seconds_per_volume']:.1f} | {r['peak_rss_mb'] / 1024:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet", default=None, help="U-Net model folder (default: the shipped one)")
    parser.add_argument("--stardist", default=None, help="StarDist model folder (trained with spheroid train)")
    parser.add_argument("--cellpose", default=None, help="Cellpose model folder (trained with spheroid train)")
    parser.add_argument("--volumes", type=int, default=2, help="synthetic volumes per data set")
    parser.add_argument("--datasets", nargs="+", default=["synthetic-heldout", "synthetic-varied", "synthetic-default", "embryo", "ovule"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--big", action="store_true", help="also the 64 x 2048 x 2048 block-path memory check (minutes)")
    parser.add_argument("--figures", type=Path, default=None, help="write an overlay of the middle slice per (backend, data set) here")
    parser.add_argument("--tta", type=int, choices=[2, 4, 8, 16], default=None, help="also the U-Net with this many passes of test-time augmentation")
    parser.add_argument("--case", nargs=3, metavar=("BACKEND", "MODEL", "DATASET"), help=argparse.SUPPRESS)
    parser.add_argument("--big-case", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        backend, model, dataset = args.case
        print(json.dumps(run_case(backend, None if model == "-" else model, dataset, args.volumes, args.threads, args.figures)))
        return
    if args.big_case:
        workdir = REPO / "bench" / "results" / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(run_big(None if args.big_case == "-" else args.big_case, args.threads, workdir)))
        return
    from machine import cpu_scaling

    models = {"unet": args.unet or "-", f"unet+tta{args.tta}": (args.unet or "-") if args.tta else None, "stardist": args.stardist, "cellpose": args.cellpose}
    rows = []
    scaling = cpu_scaling()
    for dataset in args.datasets:
        for backend, model in models.items():
            if model is None:
                continue
            extra = ["--figures", str(args.figures)] if args.figures else []
            row = _subprocess(["--case", backend, model, dataset, "--volumes", str(args.volumes), "--threads", str(args.threads), *extra])
            rows.append(row)
            print(f"{backend:12s} {dataset:18s} F1 {row['f1']:.3f}  ES {row['evaluation_score']:.3f}  {row['seconds_per_volume']:.1f} s/volume  "
                  f"peak {row['peak_rss_mb'] / 1024:.2f} GB", flush=True)
    result = {"cpu_scaling": scaling, "rows": rows}
    speed = {}
    for dataset in args.datasets:
        u = next((r for r in rows if r["dataset"] == dataset and r["backend"] == "unet"), None)
        s = next((r for r in rows if r["dataset"] == dataset and r["backend"] == "stardist"), None)
        if u and s:
            speed[dataset] = s["seconds_per_volume"] / u["seconds_per_volume"]
    result["unet_speedup_over_stardist"] = speed
    if args.big:
        result["big"] = _subprocess(["--big-case", models["unet"], "--threads", str(args.threads)])
        print(f"64x2048x2048 through blocks: {result['big']['seconds']:.0f} s, peak RSS {result['big']['peak_rss_mb'] / 1024:.2f} GB "
              f"({result['big']['blocks']['count']} blocks)", flush=True)
    print(table(rows))
    for dataset, ratio in speed.items():
        print(f"{dataset}: U-Net {ratio:.1f}x faster than StarDist (target >= 3x) -> {'PASS' if ratio >= 3 else 'FAIL'}")
    for r in rows:
        if r["backend"] == "unet" and r["shape"] == [21, 512, 512]:
            print(f"{r['dataset']}: U-Net {r['seconds_per_volume']:.1f} s per 21x512x512 volume (target <= 10 s) -> {'PASS' if r['seconds_per_volume'] <= 10 else 'FAIL'}")
    print(f"CPU scaling probe: {scaling:.2f} (2.0 = two idle cores)")
    out = HERE / "results" / "segment.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

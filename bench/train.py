"""Benchmark U-Net training throughput (voxels/s) and peak memory, per model size and device.

    python bench/train.py [--steps 6] [--warmup 2] [--batch 2] [--patch 16 64 64] [--threads N] [--sizes tiny small default thesis]

Each (size, device) case runs in its own subprocess, so its peak memory is its own:
a training step is patch sampling + augmentation + forward + loss (IoU, thesis
weights) + backward + Adam, exactly as :func:`pipeline.train.loop.train` does it,
on a synthetic in-memory volume. Reported per case: seconds per step, training
voxels per second (batch x patch voxels / step time), inference voxels per second
(sliding-window :func:`predict_volume` on one 21 x 128 x 128 volume), peak RSS of the
process (CPU) and peak allocated GPU memory (CUDA), and each case's throughput as a
ratio to the smallest model on the same device, measured in the same run (the
machine is shared and noisy: ratios are more telling than absolute numbers).
Writes ``bench/results/train.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SIZES = {
    "tiny": {"features": [8, 16], "pool": [[1, 2, 2]], "norm": "group"},
    "small": {"features": [12, 24, 48], "pool": [[1, 2, 2], [2, 2, 2]], "norm": "group"},
    "default": {"features": [16, 32, 64], "pool": [[1, 2, 2], [2, 2, 2]], "norm": "group"},  # the shipped model
    "thesis": {"features": [64, 128, 256], "pool": [[1, 2, 2], [2, 2, 2]]},
}


def run_case(size: str, device: str, steps: int, warmup: int, batch: int, patch: list[int], threads: int | None) -> dict:
    """One case, in this process (called in a subprocess by :func:`main`)."""
    import numpy as np
    import torch

    from pipeline.config.train import AugmentConfig, LossTerm, UNetConfig
    from pipeline.segment.unet.card import build_model
    from pipeline.segment.unet.network import count_parameters
    from pipeline.segment.unet.predict import predict_volume
    from pipeline.train.augment import augment
    from pipeline.train.data import Volume
    from pipeline.train.losses import CombinedLoss
    from pipeline.train.sampling import PatchSampler

    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(42)
    torch.manual_seed(0)
    shape = (21, 128, 128)
    sem = rng.integers(0, 3, size=shape).astype(np.uint8)
    vol = Volume("bench", rng.normal(size=(1, *shape)).astype(np.float32), sem, (sem > 0).astype(np.uint32), shape, (5.0, 1.24, 1.24), "synthetic", "train", "Hoechst")
    vol.centres = {c: np.flatnonzero(sem.ravel() == c) for c in (1, 2)}
    sampler = PatchSampler([vol], patch)
    dev = torch.device(device)
    model = build_model(UNetConfig(**SIZES[size])).to(dev)
    loss_fn = CombinedLoss([LossTerm(name="iou", class_weights=[1.0, 2.0, 1.5])], 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    use_amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        images, targets = [], []
        for _ in range(batch):
            image, target = augment(*sampler.sample(rng)[:2], rng, AugmentConfig())
            images.append(image)
            targets.append(target)
        x, y = torch.from_numpy(np.stack(images)).to(dev), torch.from_numpy(np.stack(targets)).to(dev)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
            logits = model(x)
        loss, _ = loss_fn(logits.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss)

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    predict_volume(model, vol.image, tile=patch, overlap=0.25, device=dev)
    infer_s = time.perf_counter() - t0
    voxels = batch * int(np.prod(patch))
    out = {
        "size": size,
        "device": device,
        "features": SIZES[size]["features"],
        "parameters": count_parameters(model),
        "batch": batch,
        "patch": list(patch),
        "threads": torch.get_num_threads(),
        "step_s": round(step_s, 4),
        "train_voxels_per_s": round(voxels / step_s),
        "infer_voxels_per_s": round(int(np.prod(shape)) / infer_s),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1),
    }
    if dev.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--patch", type=int, nargs=3, default=[16, 64, 64])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "default", "thesis"], choices=list(SIZES))
    parser.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda when available)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        size, device = args.case.split(":")
        print(json.dumps(run_case(size, device, args.steps, args.warmup, args.batch, args.patch, args.threads)))
        return 0

    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    results = []
    for device in devices:
        for size in args.sizes:
            cmd = [sys.executable, __file__, "--case", f"{size}:{device}", "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch), "--patch", *map(str, args.patch)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.stderr.write(done.stderr)
                return 1
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        base = next(r for r in results if r["device"] == device)
        for r in results:
            if r["device"] == device:
                r["train_ratio_to_" + base["size"]] = round(r["train_voxels_per_s"] / base["train_voxels_per_s"], 3)
    header = f"{'size':<8} {'device':<6} {'params':>9} {'s/step':>8} {'train vox/s':>12} {'infer vox/s':>12} {'peak RSS MB':>12} {'GPU MB':>8}"
    lines = [header] + [
        f"{r['size']:<8} {r['device']:<6} {r['parameters']:>9} {r['step_s']:>8.3f} {r['train_voxels_per_s']:>12} {r['infer_voxels_per_s']:>12} {r['peak_rss_mb']:>12} {r.get('peak_gpu_mb', '-'):>8}"
        for r in results
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    out = HERE / "results" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"batch": args.batch, "patch": args.patch, "steps": args.steps, "warmup": args.warmup, "torch": torch.__version__}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

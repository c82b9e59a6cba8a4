"""The same small run on a local cluster and with Dask workers as SLURM jobs: SLURM's overhead and
the cost of each stage per volume.

    python bench/scale.py [--wells 2] [--timepoints 3] [--shape 21 256 256] [--configs local-1,slurm-1,local-2,slurm-2]

Makes a synthetic experiment (``spheroid synth``: wells x time points of 3 channels x Z x Y x X,
uint16) and runs the stages as a user would, each a ``spheroid`` command (convert, preprocess,
segment with the shipped U-Net, cellcycle, track), once per cluster configuration on a fresh store:

* ``local-N``: a LocalCluster of N single-threaded worker processes;
* ``slurm-N``: N SLURM worker jobs of one core each (dask-jobqueue, the dev SLURM of
  ``deploy/dev-slurm/up.sh``), submitted by the command and gone when it ends, as in a campaign.

For every stage it reports the command's wall time, the stage's own time (what the command
prints: from the plan to the last volume written, without Python's start-up), and the cost per
volume in worker-seconds (stage time x workers / time points; a time point is one 3-channel
volume: the unit ``docs/SCALING.md`` counts in). SLURM's overhead is the difference between
``slurm-N`` and ``local-N`` for the same stage: submitting the worker jobs, waiting for them to
start and connect, and the jobs' own start-up. The configurations run one after another in the
order given (each SLURM one next to its local twin, as the host's speed drifts).

PASS when every configuration wrote the same labels and tables (bit for bit) as the first;
writes ``bench/results/scale.json``. Needs a SLURM controller for the ``slurm-*`` configurations
(they are left out, saying so, without one). The host is shared and noisy: read the per-volume
costs from ``local-1`` and the overhead as a few seconds per stage, not to the decimal.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_scaling  # bench/machine.py
from scale_parts import SPHEROID, STAGES, classify_cost, s3_requests, scheduler_load, segment_split, stage_command

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOG = logging.getLogger("bench.scale")
PARTITION = os.environ.get("SPHEROID_SLURM_PARTITION", "debug")


def cluster_yaml(kind: str, workers: int, folder: Path) -> Path:
    """A ClusterConfig file for ``local`` or ``slurm`` with ``workers`` single-core workers."""
    path = folder / f"{kind}-{workers}.yaml"
    if kind == "local":
        path.write_text(f"kind: local\nn_workers: {workers}\nthreads_per_worker: 1\n")
    else:
        path.write_text(
            "kind: slurm\n"
            f"slurm:\n  queue: {PARTITION}\n  jobs: {workers}\n  cores: 1\n  processes: 1\n  memory: 3GB\n"
            f"  walltime: '01:00:00'\n  interface: lo\n  python: {sys.executable}\n  adapt: false\n"
            f"  log_directory: {folder / 'slurm-logs'}\n"
        )
    return path


def slurm_reason() -> str | None:
    """Why the SLURM configurations cannot run here (``None`` when they can)."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo)"
    probe = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%a"], capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "up":
        return f"no controller answers for partition {PARTITION}"
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return "dask-jobqueue is not installed"
    return None


def run_config(name: str, cluster: Path, raw: Path, folder: Path, timepoints: int, volumes: int, fields: int) -> dict:
    """Every stage on a fresh store with ``cluster``; wall and stage seconds per stage."""
    store = folder / f"{name}.zarr"
    workers = int(name.split("-")[1])
    out = {"workers": workers, "stages": {}}
    for stage in STAGES:
        args = [*SPHEROID, "-q"]
        if stage != "track":
            args += ["--cluster", str(cluster)]
        start = time.perf_counter()
        proc = subprocess.Popen([*args, *stage_command(stage, store, raw)], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = peak_rss(proc)
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{name} {stage} failed:\n{stderr[-3000:]}")
        own = re.findall(r"in ([0-9.]+) s\b|\(([0-9.]+) s\)", stdout)  # "... in 7.9 s", track: "... (1.9 s)"
        own = [a or b for a, b in own]
        seconds = float(own[-1]) if own else wall
        units = {"convert": timepoints, "preprocess": volumes, "segment": timepoints, "cellcycle": timepoints, "track": fields}[stage]
        per = (workers if stage != "track" else 1) * seconds / timepoints
        out["stages"][stage] = {"wall_s": wall, "stage_s": seconds, "tasks": units, "worker_s_per_timepoint": per, **peak}
        out["stages"][stage]["worker_cpu_s_per_timepoint"] = peak["children_cpu_s"] / timepoints
        LOG.info(
            "%-8s %-10s wall %6.1f s, stage %6.1f s, %.2f worker-s per time point (local workers' CPU %.2f s); peak RSS: command %.0f MB, a local worker %.0f MB",
            name, stage, wall, seconds, per, peak["children_cpu_s"] / timepoints, peak["command_peak_mb"], peak["worker_peak_mb"],
        )
    out["store"] = str(store)
    return out


def peak_rss(proc: subprocess.Popen, every: float = 0.1) -> dict[str, float]:
    """Until ``proc`` ends: the peak resident memory of the command's own process and of the
    largest of its child processes (a local cluster's workers; SLURM workers run elsewhere), and
    the CPU seconds its child processes used (as last seen: up to ``every`` s short of the end).
    CPU time, unlike wall time, does not grow when other programs share the cores."""
    import psutil

    command = worker = 0
    cpu: dict[int, float] = {}
    try:
        root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return {"command_peak_mb": 0.0, "worker_peak_mb": 0.0, "children_cpu_s": 0.0}
    while proc.poll() is None:
        try:
            command = max(command, root.memory_info().rss)
            for child in root.children(recursive=True):
                try:
                    worker = max(worker, child.memory_info().rss)
                    times = child.cpu_times()
                    cpu[child.pid] = times.user + times.system
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            break
        time.sleep(every)
    return {"command_peak_mb": command / 1e6, "worker_peak_mb": worker / 1e6, "children_cpu_s": sum(cpu.values())}


def store_bytes(store: Path, timepoints: int) -> dict[str, float]:
    """Stored megabytes per time point of each image of a local store (and files per time point)."""
    from pipeline.io.plate import Plate

    groups = {"raw": ("0", "done"), "preprocessed": ("preprocessed",), "labels": ("labels/nuclei",), "tables": ("tables",)}
    out: dict[str, float] = {}
    files = 0
    for fld in Plate.open(str(store)).fields():
        for name, subs in groups.items():
            paths = [p for sub in subs if (store / fld.path / sub).exists() for p in (store / fld.path / sub).rglob("*") if p.is_file()]
            out[name] = out.get(name, 0.0) + sum(p.stat().st_size for p in paths) / 1e6 / timepoints
            files += len(paths)
    out["files"] = files / timepoints
    return out


def same_outputs(a: Path, b: Path) -> bool:
    from pipeline.io.plate import Plate
    from pipeline.io.tables import read_table

    for fa, fb in zip(Plate.open(str(a)).fields(), Plate.open(str(b)).fields()):
        if not np.array_equal(fa.labels("nuclei")[:], fb.labels("nuclei")[:]):
            return False
        if not all(read_table(fa, t).equals(read_table(fb, t)) for t in ("nuclei", "tracks")):
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wells", type=int, default=2)
    parser.add_argument("--timepoints", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(21, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--configs", default="local-1,slurm-1,local-2,slurm-2")
    parser.add_argument("--keep", type=Path, default=None, help="Work in this folder and keep it (default: a temporary one).")
    parser.add_argument("--scheduler", type=int, default=0, metavar="N", help="Also time N no-op stage tasks through one local scheduler.")
    parser.add_argument("--classify", type=int, default=0, metavar="ROWS", help="Also time the cell-cycle fit and call over ROWS nuclei.")
    parser.add_argument("--s3", action="store_true", help="Also count each stage's requests to an S3 server (moto) per time point.")
    parser.add_argument("--split", action="store_true", help="Also split one volume's segmentation into the U-Net's forward pass and the rest (1 thread).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("distributed", "werkzeug", "botocore", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING if noisy != "werkzeug" else logging.INFO)

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="spheroid-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    wells = ",".join(f"B{i + 2}" for i in range(args.wells))
    synth = subprocess.run([*SPHEROID, "-q", "synth", "d", "--timepoints", str(args.timepoints), "--shape", *map(str, args.shape), "--wells", wells], cwd=folder, capture_output=True, text=True)
    if synth.returncode != 0:
        raise SystemExit(synth.stderr)
    raw = folder / "d" / "raw"
    timepoints = args.wells * args.timepoints
    volumes = 3 * timepoints

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    reason = slurm_reason()
    if reason and any(c.startswith("slurm") for c in configs):
        LOG.info("leaving out the SLURM configurations: %s", reason)
        configs = [c for c in configs if not c.startswith("slurm")]
    load_before = os.getloadavg()
    probe_before = cpu_scaling()
    results = {}
    for name in configs:
        kind, workers = name.split("-")
        results[name] = run_config(name, cluster_yaml(kind, int(workers), folder), raw, folder, timepoints, volumes, args.wells)
    probe_after = cpu_scaling()
    split = segment_split(Path(results[configs[0]]["store"])) if args.split else None
    load = scheduler_load(args.scheduler) if args.scheduler else None
    requests = s3_requests(raw, folder, timepoints) if args.s3 else None
    classify = classify_cost(Path(results[configs[0]]["store"]), args.classify) if args.classify else None
    sizes = store_bytes(Path(results[configs[0]]["store"]), timepoints)

    first = configs[0]
    identical = all(same_outputs(Path(results[first]["store"]), Path(results[c]["store"])) for c in configs[1:])
    overhead = {}
    for name in configs:
        kind, workers = name.split("-")
        twin = f"local-{workers}"
        if kind == "slurm" and twin in results:
            overhead[name] = {s: results[name]["stages"][s]["wall_s"] - results[twin]["stages"][s]["wall_s"] for s in STAGES if s != "track"}

    print(f"\n{args.wells} well(s) x {args.timepoints} time point(s) of 3 x {' x '.join(map(str, args.shape))} uint16 ({timepoints} time points, {volumes} volumes)")
    print(f"CPU probe (2 processes vs 1): {probe_before:.2f}x before, {probe_after:.2f}x after; load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    header = f"{'stage':<11}" + "".join(f"{c:>22}" for c in configs)
    print("wall s (stage s) per configuration")
    print(header)
    for stage in STAGES:
        print(f"{stage:<11}" + "".join(f"{results[c]['stages'][stage]['wall_s']:>13.1f} ({results[c]['stages'][stage]['stage_s']:5.1f})" for c in configs))
    print("\nworker-seconds per time point (stage time x workers / time points; track: seconds per time point)")
    print(header)
    for stage in STAGES:
        print(f"{stage:<11}" + "".join(f"{results[c]['stages'][stage]['worker_s_per_timepoint']:>22.2f}" for c in configs))
    print("\nCPU seconds per time point used by the local workers (not the SLURM ones; track: the command's children, if any)")
    print(header)
    for stage in STAGES:
        print(f"{stage:<11}" + "".join(f"{results[c]['stages'][stage]['worker_cpu_s_per_timepoint']:>22.2f}" for c in configs))
    print("\npeak RSS of a local worker process, MB")
    print(header)
    for stage in STAGES:
        print(f"{stage:<11}" + "".join(f"{results[c]['stages'][stage]['worker_peak_mb']:>22.0f}" for c in configs))
    for name, by_stage in overhead.items():
        print(f"\nSLURM overhead {name} vs local-{name.split('-')[1]} (wall s): " + ", ".join(f"{s} {v:+.1f}" for s, v in by_stage.items())
              + f"; total {sum(by_stage.values()):+.1f} s")
    if split:
        print(f"\nsegmentation of one time point, 1 CPU thread: normalise {split['normalize_s']:.2f} s, "
              f"U-Net forward {split['forward_s']:.1f} s, instances {split['instances_s']:.1f} s ({split['voxels'] / 1e6:.1f} M voxels)")
    if load:
        print(f"\nscheduler: {load['tasks']} no-op stage tasks in {load['seconds']:.1f} s ({load['tasks_per_s']:.0f} tasks/s on 2 workers), "
              f"client + scheduler {load['client_and_scheduler_cpu_ms_per_task']:.2f} CPU-ms per task, memory +{load['client_and_scheduler_growth_mb']:.0f} MB while held")
    if classify:
        print(f"\ncell-cycle classify over {classify['rows']:,} nuclei (client side): fit {classify['fit_s']:.1f} s, "
              f"call {classify['apply_s']:.1f} s, table {classify['table_mb']:.0f} MB")
    if requests:
        print("\nS3 requests per time point (one worker; a time point = 3 volumes):")
        for stage, by_method in requests.items():
            print(f"  {stage:<11}" + ", ".join(f"{m} {n:.1f}" for m, n in by_method.items()))
    print("\nstored MB per time point: " + ", ".join(f"{k} {v:.2f}" for k, v in sizes.items()))
    verdict = "PASS" if identical else "FAIL"
    print(f"\n{verdict}: labels and tables of {', '.join(configs[1:]) or 'no other configuration'} {'equal' if identical else 'DIFFER from'} {first}'s bit for bit")

    (HERE / "results").mkdir(exist_ok=True)
    record = {
        "benchmark": "scale",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(), "cpu_probe": [probe_before, probe_after]},
        "data": {"wells": args.wells, "timepoints": args.timepoints, "shape": list(args.shape), "timepoints_total": timepoints, "volumes": volumes},
        "configs": results,
        "slurm_overhead_s": overhead,
        "segment_split_s": split,
        "scheduler_load": load,
        "classify": classify,
        "s3_requests_per_timepoint": requests,
        "stored_mb_per_timepoint": sizes,
        "identical": identical,
        "verdict": verdict,
    }
    (HERE / "results" / "scale.json").write_text(json.dumps(record, indent=2))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

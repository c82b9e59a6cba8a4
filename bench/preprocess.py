"""Benchmark the preprocessing stage: Dask with 1 and 2 workers against the bare chain in a loop.

    python bench/preprocess.py [--timepoints 8] [--shape 21 512 512] [--rounds 3] [--store DIR]

Makes a demo plate (3 channels x T time points of 21 x 512 x 512 uint16; a synthetic
spheroid from ``pipeline.synth`` when that module is available, else Gaussian nuclei on
noise with bright specks), then measures in the same run, with the thesis chain of
``configs/preprocess.yaml`` (threshold, gamma, CLAHE, median, top-hat, normalisation):

* ``loop``: the bare chain (:func:`~pipeline.preprocess.chain.apply_chain`) on every
  volume, already in memory, in a plain loop (OpenCV on one thread);
* ``loop_io``: the worker's own function (read from Zarr, chain, write, read back, mark
  done) in a plain loop: the Dask path minus Dask;
* ``dask_1`` / ``dask_2``: :func:`pipeline.runner.run_tasks` with
  :func:`~pipeline.preprocess.runner.process_volume` on a LocalCluster of 1 and 2
  single-threaded worker processes, timed from submission to the last result once the
  workers have imported their libraries (cluster start-up and one whole
  ``run_preprocess`` call with 2 workers are reported beside it).

The variants run in interleaved rounds (``--rounds``) and the best round of each counts,
so a burst of load from other programs does not fall on one variant only.

Targets: 2 workers >= 1.7x one worker; the Dask path per worker within 15 % of the plain
loop (``dask_1 / loop >= 0.85``). Writes ``bench/results/preprocess.json`` with the machine
load and a probe of how much parallel CPU the machine gave (2 processes of pure Python
against 1: ~2.0 when idle), prints a PASS/FAIL line and exits 1 on FAIL. The machine may
be shared: compare ratios from one run, and judge the 2-worker figure against the probe.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOG = logging.getLogger("bench.preprocess")
SPEEDUP_TARGET = 1.7
EFFICIENCY_TARGET = 0.85


def demo_data(timepoints: int, shape: tuple[int, int, int], seed: int = 42) -> tuple[np.ndarray, str]:
    """``(t, c, z, y, x)`` uint16 demo data and where it came from."""
    try:
        from pipeline.synth import SynthConfig, generate

        result = generate(SynthConfig(n_timepoints=timepoints, shape=shape, seed=seed))
        return np.asarray(result.images, dtype=np.uint16), "pipeline.synth"
    except ImportError:
        pass
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    data = np.empty((timepoints, 3) + tuple(shape), np.uint16)
    n = int(np.prod(shape) * 0.07 / 400)  # ~7 % of voxels in nuclei of ~400 voxels
    for t in range(timepoints):
        for c in range(3):
            vol = np.zeros(shape, np.float32)
            vol[tuple(rng.integers(0, s, n) for s in shape)] = rng.lognormal(0, 0.35, n)
            vol = ndi.gaussian_filter(vol, (0.8, 3.0, 3.0))
            vol *= 4000 / max(vol.max(), 1e-6)
            vol += 150 + rng.normal(0, 30, shape)
            vol[tuple(rng.integers(0, s, 150) for s in shape)] = 9000
            data[t, c] = np.clip(np.round(vol), 0, 65535)
    return data, "gaussian blobs"


def make_plate(url: str, data: np.ndarray):
    from pipeline.io.ngff import ImageMeta
    from pipeline.io.plate import Plate
    from pipeline.io.volumes import write_volume

    plate = Plate.create(url, name="bench", overwrite=True)
    field = plate.add_field("B10", 0)
    field.create_image("raw", data.shape, "uint16", ImageMeta(channels=("Hoechst", "Cy3", "GFP")))
    for t in range(data.shape[0]):
        for c in range(data.shape[1]):
            write_volume(plate.location, field.array_path(), t, c, data[t, c])
    field.mark_complete()
    return plate


def prepared_tasks(url: str, config):
    """Plan a fresh run (output recreated) and return ``(plate, tasks)``."""
    from pipeline.io.plate import Plate
    from pipeline.preprocess.runner import plan

    plate = Plate.open(url, mode="r+")
    plans = plan(plate, config, overwrite=True)
    for fp in plans:
        fp.field.create_image(
            config.output, fp.shape, fp.dtype, fp.meta, chunk_yx=fp.chunk_yx, overwrite=True, compression_level=config.compression_level
        )
    return plate, [task for fp in plans for task in fp.tasks]


def _warm() -> bool:
    import cv2  # noqa: F401
    import scipy.ndimage  # noqa: F401

    from pipeline.preprocess import runner  # noqa: F401

    return True


def _spin(n: int) -> float:
    start = time.perf_counter()
    x = 0
    for i in range(n):
        x += i * i
    return time.perf_counter() - start


def cpu_scaling(n: int = 5_000_000) -> float:
    """How much faster 2 processes finish 2 units of pure-Python work than 1 process does 1 each, twice.

    2.0 on an idle 2-core machine; near 1.0 when other programs (or CPU quotas of other
    cgroups) leave us one core. The 2-worker target can only be judged when this is ~2.
    """
    from multiprocessing import get_context

    with get_context("spawn").Pool(2) as pool:
        one = min(pool.apply(_spin, (n,)) for _ in range(2))
        two = max(pool.map(_spin, [n, n]))
    return 2 * one / two


def time_loop(data: np.ndarray, config) -> float:
    from pipeline.preprocess.chain import apply_chain
    import cv2

    cv2.setNumThreads(1)
    channels = ("Hoechst", "Cy3", "GFP")
    apply_chain(data[0, 0], config.chain_for(channels[0]))  # warm caches (gamma table)
    start = time.perf_counter()
    for t in range(data.shape[0]):
        for c in range(data.shape[1]):
            apply_chain(data[t, c], config.chain_for(channels[c]))
    return time.perf_counter() - start


def time_loop_io(url: str, config) -> float:
    from pipeline.preprocess.runner import process_volume

    plate, tasks = prepared_tasks(url, config)
    start = time.perf_counter()
    for task in tasks:
        process_volume(task, plate.location)
    return time.perf_counter() - start


def time_dask(url: str, config, workers: int) -> dict:
    """Steady-state throughput of ``run_tasks`` on a fresh LocalCluster (start-up timed apart)."""
    from pipeline.cluster import open_client
    from pipeline.config.cluster import ClusterConfig
    from pipeline.preprocess.runner import process_volume
    from pipeline.runner import run_tasks

    cluster = ClusterConfig(n_workers=workers, threads_per_worker=1, processes=True, memory_limit="4GB")
    plate, tasks = prepared_tasks(url, config)
    t0 = time.perf_counter()
    with open_client(cluster) as client:
        startup = time.perf_counter() - t0
        client.run(_warm)
        start = time.perf_counter()
        results = run_tasks(client, process_volume, tasks, desc=f"dask x{workers}", progress=False, location=plate.location)
        steady = time.perf_counter() - start
    return {
        "seconds": steady,
        "volumes_per_s": len(tasks) / steady,
        "cluster_start_s": startup,
        "chain_s_in_workers": float(sum(r["seconds"] for r in results)),
    }


def time_stage(url: str, config, workers: int) -> dict:
    """The whole ``run_preprocess`` call (cluster start, planning, attributes included)."""
    from pipeline.config.cluster import ClusterConfig
    from pipeline.io.plate import Plate
    from pipeline.preprocess.runner import run_preprocess

    cluster = ClusterConfig(n_workers=workers, threads_per_worker=1, processes=True, memory_limit="4GB")
    start = time.perf_counter()
    summary = run_preprocess(Plate.open(url, mode="r+"), config.model_copy(update={"cluster": cluster}), overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    return {"workers": workers, "seconds": seconds, "volumes_per_s": summary["volumes"] / seconds}


def best(runs: list[dict]) -> dict:
    """The fastest of several rounds, with every round's rate beside it."""
    top = dict(max(runs, key=lambda r: r["volumes_per_s"]))
    top["rounds_volumes_per_s"] = [round(r["volumes_per_s"], 3) for r in runs]
    return top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timepoints", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(21, 512, 512))
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "preprocess.yaml")
    parser.add_argument("--store", type=Path, default=None, help="Folder for the demo plate (a temporary one by default).")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; the best of each variant counts.")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "preprocess.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    import distributed  # noqa: F401  (configures its loggers on import; quieten them after)

    for noisy in ("distributed", "pipeline"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from pipeline.config.base import load_config
    from pipeline.config.preprocess import PreprocessConfig

    config = load_config(PreprocessConfig, args.config)
    load_before = os.getloadavg()
    scaling_before = cpu_scaling()
    LOG.info("CPU available to 2 processes: %.2fx one (load %.1f)", scaling_before, load_before[0])
    t0 = time.perf_counter()
    data, source = demo_data(args.timepoints, tuple(args.shape))
    LOG.info("demo data %s from %s in %.1f s", data.shape, source, time.perf_counter() - t0)
    n = data.shape[0] * data.shape[1]
    runs: dict[str, list[dict]] = {"loop": [], "loop_io": [], "dask_1": [], "dask_2": []}
    with tempfile.TemporaryDirectory(dir=args.store) as tmp:
        url = str(Path(tmp) / "bench.zarr")
        make_plate(url, data)
        for r in range(args.rounds):  # interleaved rounds: load changes hit every variant alike
            seconds = time_loop(data, config)
            runs["loop"].append({"seconds": seconds, "volumes_per_s": n / seconds})
            seconds = time_loop_io(url, config)
            runs["loop_io"].append({"seconds": seconds, "volumes_per_s": n / seconds})
            for workers in (1, 2):
                runs[f"dask_{workers}"].append(time_dask(url, config, workers))
            LOG.info(
                "round %d: loop %.2f  loop_io %.2f  dask x1 %.2f  dask x2 %.2f volumes/s  (load %.1f)",
                r + 1,
                *(runs[k][-1]["volumes_per_s"] for k in ("loop", "loop_io", "dask_1", "dask_2")),
                os.getloadavg()[0],
            )
        stage = time_stage(url, config, 2)
        LOG.info("run_preprocess, 2 workers, end to end: %.1f s (%.2f volumes/s)", stage["seconds"], stage["volumes_per_s"])
    loop, loop_io, dask = best(runs["loop"]), best(runs["loop_io"]), {1: best(runs["dask_1"]), 2: best(runs["dask_2"])}
    scaling_after = cpu_scaling()
    speedup = dask[2]["volumes_per_s"] / dask[1]["volumes_per_s"]
    efficiency = dask[1]["volumes_per_s"] / loop["volumes_per_s"]
    efficiency_2 = dask[2]["volumes_per_s"] / 2 / loop["volumes_per_s"]
    efficiency_io = dask[1]["volumes_per_s"] / loop_io["volumes_per_s"]
    ok = speedup >= SPEEDUP_TARGET and efficiency >= EFFICIENCY_TARGET
    result = {
        "benchmark": "preprocess",
        "data": {"shape": list(data.shape), "dtype": "uint16", "source": source, "volumes": n},
        "chain": [s.step for s in config.chain if s.enabled],
        "rounds": args.rounds,
        "loop": loop,
        "loop_io": loop_io,
        "dask_1": dask[1],
        "dask_2": dask[2],
        "run_preprocess_2_workers": stage,
        "speedup_2_vs_1": speedup,
        "dask_1_vs_loop": efficiency,
        "dask_2_per_worker_vs_loop": efficiency_2,
        "dask_1_vs_loop_io": efficiency_io,
        "targets": {"speedup_2_vs_1": SPEEDUP_TARGET, "dask_1_vs_loop": EFFICIENCY_TARGET},
        "pass": ok,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_scaling_2_processes": [round(scaling_before, 2), round(scaling_after, 2)],
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    LOG.info(
        "%s: 2 workers %.2fx one (target >= %.1f); dask 1 worker %.0f %% of the bare-chain loop (target >= %.0f %%), "
        "%.0f %% of the same loop with Zarr I/O; 2 workers per worker %.0f %%; load %s -> %s; "
        "CPU for 2 processes %.2fx -> %.2fx one; wrote %s",
        "PASS" if ok else "FAIL",
        speedup,
        SPEEDUP_TARGET,
        100 * efficiency,
        100 * EFFICIENCY_TARGET,
        100 * efficiency_io,
        100 * efficiency_2,
        result["machine"]["load_before"],
        result["machine"]["load_after"],
        scaling_before,
        scaling_after,
        args.out,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Measurements of ``bench/scale.py`` beyond the stage runs: one scheduler's load, the classify
step over many nuclei, each stage's requests to an object store, the segmentation's split into
the U-Net's forward pass and the rest. Imported by ``bench/scale.py`` (run that)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SPHEROID = [sys.executable, "-c", "from pipeline.cli.main import main; main()"]
STAGES = ("convert", "preprocess", "segment", "cellcycle", "track")


def stage_command(stage: str, store: Path | str, raw: Path) -> list[str]:
    """The command line of ``stage`` on ``store`` (convert reads ``raw``)."""
    if stage == "convert":
        return ["convert", str(raw), "--out", str(store)]
    return [stage, str(store)]


def _noop(task, location) -> dict:
    return {"field": task.field, "t": task.t}


def scheduler_load(n: int) -> dict[str, float]:
    """``n`` tasks of one stage's shape (a segmentation task and the store's location, returning
    a small dict) through :func:`pipeline.runner.run_tasks` on a local cluster of 2 workers, as a
    stage submits them: seconds from submission to the last result, tasks per second, and the
    growth of this process's memory while they were held (client and scheduler both live here)."""
    import psutil

    from pipeline.cluster import open_client
    from pipeline.config.cluster import ClusterConfig
    from pipeline.io.location import Location
    from pipeline.runner import run_tasks
    from pipeline.segment.runner import SegmentTask

    tasks = [SegmentTask(f"B{2 + i // 300}/0", f"B/{2 + i // 300}/0/0", f"B/{2 + i // 300}/0/labels/nuclei/0", i % 300, 0, (5.0, 1.24, 1.24)) for i in range(n)]
    location = Location("/scratch/campaign.zarr")
    me = psutil.Process()
    with open_client(ClusterConfig(n_workers=2, threads_per_worker=1)) as client:
        run_tasks(client, _noop, tasks[:200], desc="warm-up", progress=False, location=location)
        before = me.memory_info().rss
        peak = [before]

        def sample(i, result):
            if i % 1000 == 0:
                peak.append(me.memory_info().rss)

        start, cpu = time.perf_counter(), time.process_time()
        run_tasks(client, _noop, tasks, desc="scheduler", progress=False, location=location, on_result=sample)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"tasks": n, "seconds": seconds, "tasks_per_s": n / seconds, "client_and_scheduler_cpu_ms_per_task": 1e3 * cpu / n,
            "client_and_scheduler_growth_mb": (max(peak) - before) / 1e6}


def classify_cost(store: Path, rows: int) -> dict[str, float]:
    """The classify step at ``rows`` nuclei: the measured nuclei of ``store`` repeated (with a
    little noise, so that the thresholds see distinct values) into one table of ``rows`` rows, then
    what ``spheroid cellcycle`` does on its client: the phase model fitted over all of them and
    applied. Seconds of each and the table's memory."""
    from pipeline.cellcycle.model import apply_phase_model, fit_phase_model
    from pipeline.io.tables import read_parts
    from pipeline.config.cellcycle import CellcycleConfig
    from pipeline.io.plate import Plate

    import pandas as pd

    parts = pd.concat([read_parts(f, "nuclei") for f in Plate.open(str(store)).fields()], ignore_index=True)
    table = parts.iloc[np.resize(np.arange(len(parts)), rows)].reset_index(drop=True)
    rng = np.random.default_rng(0)
    for column in [c for c in table.columns if c.endswith(("_mean", "_median", "_integrated"))]:
        table[column] = table[column] * rng.uniform(0.97, 1.03, rows)
    config = CellcycleConfig()
    roles = config.channels.model_copy(update={k: (v.lower() if isinstance(v, str) else v) for k, v in config.channels.model_dump().items()})
    config = config.model_copy(update={"channels": roles})
    start = time.perf_counter()
    model = fit_phase_model(table, config)
    fitted = time.perf_counter()
    apply_phase_model(table, model)
    applied = time.perf_counter()
    return {"rows": rows, "fit_s": fitted - start, "apply_s": applied - fitted, "table_mb": table.memory_usage(deep=True).sum() / 1e6}


def s3_requests(raw: Path, folder: Path, timepoints: int) -> dict[str, dict[str, float]]:
    """Requests per time point that each stage makes to an object store: the stages run with a
    local cluster of one worker against a real S3 server on 127.0.0.1 (moto; every request it
    serves is counted by HTTP method)."""
    import collections

    import boto3
    from moto.server import ThreadedMotoServer

    counts: collections.Counter = collections.Counter()

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = re.search(r'"(GET|PUT|HEAD|POST|DELETE) ', record.getMessage())
            if match:
                counts[match.group(1)] += 1

    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addHandler(Count())
    werkzeug.propagate = False
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        keys = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket="bench")
        env = {**os.environ, **keys}
        store = "s3://bench/exp.zarr"
        out = {}
        for stage in STAGES:
            counts.clear()
            command = stage_command(stage, store, raw)  # type: ignore[arg-type]
            workers = [] if stage == "track" else ["-w", "1"]
            result = subprocess.run([*SPHEROID, "-q", *command, *workers, "--storage-option", f"endpoint_url={endpoint}"], cwd=folder, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                raise SystemExit(f"s3 {stage} failed:\n{result.stderr[-3000:]}")
            out[stage] = {method: n / timepoints for method, n in sorted(counts.items())}
            out[stage]["total"] = sum(counts.values()) / timepoints
        return out
    finally:
        server.stop()


def segment_split(store: Path, repeat: int = 2) -> dict[str, float]:
    """CPU seconds of one time point's segmentation on one CPU thread, split into the U-Net's forward
    pass (what a GPU takes over) and the rest (normalisation, watershed into instances: CPU work
    on any node), measured in this process on the first volume of ``store``; best of ``repeat``."""
    import torch

    from pipeline.io.plate import Plate
    from pipeline.segment.instances import label_with
    from pipeline.segment.unet.apply import inference_tile
    from pipeline.segment.unet.card import default_model_path, load_model
    from pipeline.segment.unet.predict import predict_volume

    torch.set_num_threads(1)
    fld = Plate.open(str(store)).fields()[0]
    meta = fld.meta()
    volume = np.asarray(fld.image()[0, list(meta.channels).index("Hoechst")])
    model, card = load_model(default_model_path())
    best = {"normalize_s": np.inf, "forward_s": np.inf, "instances_s": np.inf}
    clock = time.process_time  # CPU seconds of this (single-threaded) process: not inflated by other load
    for _ in range(repeat):
        t0 = clock()
        normed = card.normalize(volume)[None]
        t1 = clock()
        probs = predict_volume(model, normed, tile=inference_tile(card, normed.shape[1:]), overlap=0.25, device="cpu")
        t2 = clock()
        label_with(probs, card.labeling, meta.voxel_size)
        t3 = clock()
        for key, value in zip(best, (t1 - t0, t2 - t1, t3 - t2)):
            best[key] = min(best[key], value)
    best["voxels"] = float(volume.size)
    return best

"""deploy/slurm/train.sbatch outside SLURM: SIGUSR1 reaches the trainer, which checkpoints; a rerun resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.groundtruth.trainset import TrainingSet
from pipeline.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "slurm" / "train.sbatch"


@pytest.fixture
def job_env(tmp_path):
    venv = Path(sys.prefix)
    if not (venv / "bin" / "activate").is_file() or not (venv / "bin" / "spheroid").is_file():
        pytest.skip(f"{venv} is not a virtual environment with the spheroid command")
    return {**os.environ, "SPHEROID_VENV": str(venv), "SPHEROID_SIF": str(tmp_path / "none.sif"), "SPHEROID_REPO": str(REPO)}


@pytest.mark.slow
def test_sbatch_checkpoints_on_usr1_and_resumes(tmp_path, job_env):
    rng = np.random.default_rng(42)
    ts = TrainingSet.create(tmp_path / "ts")
    for i, split in enumerate(["train", "val"]):
        sem = np.zeros((8, 32, 32), np.uint8)
        sem[2:6, 8:20, 8:20] = 2
        inst = (sem == 2).astype(np.uint32)
        image = (sem * 100 + rng.integers(0, 20, sem.shape)).astype(np.uint16)
        ts.add(image, inst, sem, id=f"i{i}", voxel_size=(5.0, 1.24, 1.24), channel="Hoechst", source="synthetic", split=split)
    config = {
        "model": {"features": [4, 8]},
        "sampling": {"patch_size": [8, 32, 32], "batch_size": 1},
        "validation": {"every": 10_000},
        "max_steps": 100_000,
        "checkpoint_every": 10_000,
        "device": "cpu",
    }
    cfg = tmp_path / "train.yaml"
    cfg.write_text("# model: pipeline.config.train:TrainConfig\n" + yaml.safe_dump(config))
    out = tmp_path / "run"
    cmd = ["bash", str(SCRIPT), str(ts.root), str(out), str(cfg)]
    proc = subprocess.Popen(cmd, env=job_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.yaml").exists():  # written once the trainer is set up
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the trainer did not start"
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGUSR1)  # what SLURM does 120 s before the time limit
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "USR1: asking spheroid train to checkpoint" in output and "checkpoint saved; run this script again" in output
    step = load_checkpoint(out / "checkpoint.pt")["loop"]["step"]
    assert 0 <= step < 100_000

    # the rerun (a requeued job) resumes from the checkpoint and finishes
    done = subprocess.run(cmd + ["--", "--max-steps", str(step + 2)], env=job_env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"trained {step + 2} steps" in done.stdout
    assert load_checkpoint(out / "checkpoint.pt")["loop"]["step"] == step + 2
    assert (out / "model" / "model.json").is_file()

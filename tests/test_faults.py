"""Faults a run survives: a worker process killed mid-stage, and the whole run killed (SIGKILL).

The other faults of issue 16 are tested where their code lives: a full disk mid-write
(``test_user_errors.py::test_full_disk_is_one_line_and_marks_nothing_wrong``), a denied write on
S3 in the middle of a stage (``test_s3_run.py``), a worker job cancelled on SLURM
(``test_slurm.py``), and a damaged chunk of a finished volume found on read
(``test_chunks.py::test_damaged_chunks_of_a_finished_volume_are_caught_on_read``,
``test_user_errors.py``: preprocess on a flipped byte or a lost chunk).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipeline.io.plate import Plate
from pipeline.io.tables import read_table
from pipeline.io.verify import images_of

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SPHEROID = [sys.executable, "-c", "from pipeline.cli.main import main; main()"]
PIPELINE = ["bash", str(REPO / "deploy/slurm/pipeline.sbatch"), "d/raw", "s.zarr"]
"""The stages one by one (the RAW STORE form)."""
RUN = ["bash", str(REPO / "deploy/slurm/pipeline.sbatch"), "experiment.yaml"]
"""``spheroid run`` of an experiment file (the form for experiments with a plate layout)."""
EXPERIMENT = """# model: pipeline.config.experiment:ExperimentConfig
name: faults
store: s.zarr
raw: {inputs: [d/raw]}
plate: {B2: {control: true}, C3: {condition: other}}
cluster: {n_workers: 2}
"""


def pipeline_env() -> dict:
    """pipeline.sbatch run without SLURM: this virtual environment, a local two-worker cluster."""
    return {**os.environ, "SPHEROID_VENV": sys.prefix, "SPHEROID_REPO": str(REPO), "SPHEROID_CLUSTER": str(REPO / "configs/cluster-local.yaml")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The experiment run undisturbed by deploy/slurm/pipeline.sbatch (convert ... track)."""
    root = tmp_path_factory.mktemp("faults")
    assert subprocess.run([*SPHEROID, "-q", "synth", "d", "--timepoints", "4", "--shape", "8", "96", "96", "--wells", "B2,C3"], cwd=root).returncode == 0
    result = subprocess.run(PIPELINE, cwd=root, capture_output=True, text=True, env=pipeline_env(), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warning" not in result.stderr, result.stderr[-3000:]  # e.g. zarr's about tables/ in `spheroid info`
    return root


def done_count(store: Path, image: str, label: bool) -> int:
    try:
        return int(sum(f.done(image, label=label).sum() for f in Plate.open(str(store)).fields()))
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def wait_until(predicate, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"the run ended or timed out before {what}")


def finished_chunks(store: Path) -> dict[str, int]:
    """Every chunk file of every volume marked done, with its modification time."""
    out = {}
    for fld in Plate.open(str(store)).fields():
        for name, is_label in images_of(fld):
            array = store / (fld.label_path(name) if is_label else fld.image_path(name)) / "0" / "c"
            for t, c in np.argwhere(fld.done(name, label=is_label)):
                folder = array / str(t) if is_label else array / str(t) / str(c)  # labels are t, z, y, x
                out.update({str(p.relative_to(store)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()})
    return out


def assert_same_outputs(a: Path, b: Path) -> None:
    for fa, fb in zip(Plate.open(str(a)).fields(), Plate.open(str(b)).fields()):
        for name in ("raw", "preprocessed"):
            assert fb.is_complete(name)
            np.testing.assert_array_equal(fa.image(name)[:], fb.image(name)[:])
        assert fb.is_complete("nuclei", label=True)
        np.testing.assert_array_equal(fa.labels("nuclei")[:], fb.labels("nuclei")[:])
        for table in ("nuclei", "tracks"):
            assert read_table(fa, table).equals(read_table(fb, table)), (str(fa), table)


def test_a_worker_killed_mid_stage_is_replaced_and_the_outputs_are_unchanged(reference, tmp_path):
    """kill -9 of one worker process of the local cluster while segment runs: the nanny starts a
    new one, the lost volumes are computed again, the stage ends normally, the labels equal an
    undisturbed run's."""
    store = tmp_path / "s.zarr"
    shutil.copytree(reference / "s.zarr", store)
    for fld in Plate.open(str(store)).fields():
        shutil.rmtree(store / fld.path / "labels")
    proc = subprocess.Popen([*SPHEROID, "-q", "segment", str(store), "-w", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: done_count(store, "nuclei", True) >= 1, proc, "the first volume was segmented")
        workers = [p for p in psutil.Process(proc.pid).children() if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in workers]
        os.kill(workers[0].pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not workers[0].is_running()
    assert proc.returncode == 0, stderr[-3000:]
    assert done_count(store, "nuclei", True) == 8
    for fa, fb in zip(Plate.open(str(reference / "s.zarr")).fields(), Plate.open(str(store)).fields()):
        assert fb.is_complete("nuclei", label=True)
        np.testing.assert_array_equal(fa.labels("nuclei")[:], fb.labels("nuclei")[:])


def test_the_whole_run_killed_and_rerun_redoes_nothing_finished(reference, tmp_path):
    """deploy/slurm/pipeline.sbatch EXPERIMENT.yaml (`spheroid run`) killed with SIGKILL (every
    process of the run at once) in the middle of segmentation, then run again: no volume finished
    before the kill is written again, the store verifies clean, every image, label and table
    equals the undisturbed run's (made stage by stage, the RAW STORE form), and the report is there."""
    shutil.copytree(reference / "d", tmp_path / "d")
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT)
    store = tmp_path / "s.zarr"
    env = {k: v for k, v in pipeline_env().items() if k != "SPHEROID_CLUSTER"}  # the experiment's cluster
    proc = subprocess.Popen(RUN, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        wait_until(lambda: done_count(store, "nuclei", True) >= 2, proc, "two volumes were segmented")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30  # the killed run's processes are gone
    while time.monotonic() < deadline and any(p.info["cmdline"] and str(store) in " ".join(p.info["cmdline"]) for p in psutil.process_iter(["cmdline"])):
        time.sleep(0.1)
    segmented = done_count(store, "nuclei", True)
    assert 2 <= segmented < 8
    kept = finished_chunks(store)

    result = subprocess.run(RUN, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already done: convert, preprocess" in result.stdout and "ran: segment" in result.stdout, result.stdout[-3000:]
    assert f"segmented {8 - segmented} volume(s) in" in result.stderr, result.stderr[-3000:]  # -v: the stage's own log line
    assert (store / "report/index.html").is_file()
    after = finished_chunks(store)
    assert kept and {k: after.get(k) for k in kept} == kept  # nothing finished was written again
    verify = subprocess.run([*SPHEROID, "verify", str(store)], capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert_same_outputs(reference / "s.zarr", store)

"""The pipeline on a real SLURM controller, workers as SLURM jobs through dask-jobqueue.

``deploy/dev-slurm/up.sh`` brings up a single-node SLURM on this machine (``.ci/run`` runs it);
these tests skip, saying why, where no controller answers. Each compares a run on SLURM with a
run on a local cluster, bit for bit, and stops workers or the driver job mid-stage as a site's
scheduler would (``scancel``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.io.plate import Plate

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SPHEROID = [sys.executable, "-c", "from pipeline.cli.main import main; main()"]
PARTITION = os.environ.get("SPHEROID_SLURM_PARTITION", "debug")


def _controller() -> str | None:
    """Why SLURM cannot be used here, or ``None`` when a controller answers."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) installed; deploy/dev-slurm/up.sh brings one up"
    probe = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%a %T"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0 or not probe.stdout.strip():
        return f"no SLURM controller answers for partition {PARTITION!r} ({probe.stderr.strip()[:200]}); run deploy/dev-slurm/up.sh"
    if not probe.stdout.split()[0] == "up":
        return f"partition {PARTITION} is {probe.stdout.strip()}"
    return None


@pytest.fixture(scope="module")
def slurm():
    pytest.importorskip("dask_jobqueue")
    reason = _controller()
    if reason:
        pytest.skip(reason)
    yield
    subprocess.run(["scancel", "--name=dask-worker"], capture_output=True)


def spheroid(*args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*SPHEROID, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def cluster_file(path: Path, jobs: int = 2, adapt: bool = True) -> Path:
    path.write_text(
        "# model: pipeline.config.cluster:ClusterConfig\n"
        "kind: slurm\n"
        "slurm:\n"
        f"  queue: {PARTITION}\n"
        f"  jobs: {jobs}\n"
        "  cores: 1\n"
        "  processes: 1\n"
        "  memory: 3GB\n"
        "  walltime: '00:30:00'\n"
        "  interface: lo\n"
        f"  python: {sys.executable}\n"
        f"  adapt: {'true' if adapt else 'false'}\n"
    )
    return path


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """A small synthetic experiment converted locally, and its local reference run."""
    root = tmp_path_factory.mktemp("slurm-exp")
    assert spheroid("-q", "synth", "d", "--timepoints", "6", "--shape", "10", "128", "128", "--wells", "B10,C4", cwd=root).returncode == 0
    for name in ("local.zarr",):
        for stage in (("convert", "d/raw", "--out", name), ("preprocess", name), ("segment", name)):
            result = spheroid("-q", *stage, "-w", "2", cwd=root)
            assert result.returncode == 0, result.stderr[-2000:]
    return root


def finished_label_chunks(store: Path) -> dict[str, int]:
    """Chunk files of the label volumes marked done, with their modification times."""
    out = {}
    for fld in Plate.open(str(store)).fields():
        for t in np.flatnonzero(fld.done("nuclei", label=True)[:, 0]):
            folder = store / fld.path / "labels/nuclei/0/c" / str(t)
            out.update({str(p.relative_to(store)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()})
    return out


def assert_same(a: Path, b: Path, image: str) -> None:
    pa, pb = Plate.open(str(a)), Plate.open(str(b))
    for fa, fb in zip(pa.fields(), pb.fields()):
        assert str(fa) == str(fb)
        if image == "nuclei":
            assert fb.is_complete("nuclei", label=True)
            np.testing.assert_array_equal(fa.labels("nuclei")[:], fb.labels("nuclei")[:])
        else:
            assert fb.is_complete(image)
            np.testing.assert_array_equal(fa.image(image)[:], fb.image(image)[:])


def test_convert_preprocess_segment_with_slurm_workers(slurm, experiment, tmp_path):
    """The three stages with their workers as SLURM jobs equal the local run bit for bit."""
    config = cluster_file(tmp_path / "slurm.yaml")
    store = tmp_path / "s.zarr"
    for stage in (("convert", experiment / "d/raw", "--out", store), ("preprocess", store), ("segment", store)):
        result = spheroid("--cluster", config, "-q", *stage, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    for image in ("raw", "preprocessed", "nuclei"):
        assert_same(experiment / "local.zarr", store, image)


def _wait_for(predicate, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _done(store: Path, label: bool = True) -> int:
    try:
        return int(sum(f.done("nuclei", label=label).sum() for f in Plate.open(str(store)).fields()))
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def _jobs(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1] == "RUNNING"]


def test_a_cancelled_worker_job_is_replaced_and_the_outputs_are_unchanged(slurm, experiment, tmp_path):
    """scancel of a worker job mid-stage: the adaptive cluster submits a replacement, the lost
    volumes are computed again, and the labels equal the local run's."""
    config = cluster_file(tmp_path / "slurm.yaml", jobs=2, adapt=True)
    store = tmp_path / "s.zarr"
    shutil.copytree(experiment / "local.zarr", store)
    shutil.rmtree(store / "B/10/0/labels")
    shutil.rmtree(store / "C/4/0/labels")
    proc = subprocess.Popen([*SPHEROID, "--cluster", str(config), "-q", "segment", str(store)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _done(store) >= 1 or proc.poll() is not None, what="the first segmented volume")
        assert proc.poll() is None, "the stage ended before a worker could be cancelled"
        running = _jobs("dask-worker")
        assert running, "no worker job running"
        subprocess.run(["scancel", running[0]], check=True)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert _done(store) == 12
    assert_same(experiment / "local.zarr", store, "nuclei")


def test_a_cancelled_driver_job_resubmitted_redoes_no_finished_volume(slurm, experiment, tmp_path):
    """The driver job (holding the scheduler) cancelled mid-stage, then submitted again: it resumes,
    no volume finished before is rewritten, and the result equals the local run's."""
    config = cluster_file(tmp_path / "slurm.yaml", jobs=1, adapt=False)
    store = tmp_path / "s.zarr"
    shutil.copytree(experiment / "local.zarr", store)
    shutil.rmtree(store / "B/10/0/labels")
    shutil.rmtree(store / "C/4/0/labels")
    script = tmp_path / "driver.sbatch"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f"#SBATCH --job-name=spheroid-driver-test\n#SBATCH --partition={PARTITION}\n#SBATCH --cpus-per-task=1\n#SBATCH --mem=2G\n"
        f"#SBATCH --output={tmp_path}/driver-%j.out\n"
        f"exec {' '.join(SPHEROID[:2])} '{SPHEROID[2]}' --cluster {config} -v segment {store}\n"
    )
    first = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True).stdout.strip()
    _wait_for(lambda: _done(store) >= 3, what="three segmented volumes")
    subprocess.run(["scancel", first], check=True)
    _wait_for(lambda: not _jobs("spheroid-driver-test") and not _jobs("dask-worker"), what="the driver and its workers to end")
    log = (tmp_path / f"driver-{first}.out").read_text()
    assert "terminated: finished volumes are kept" in log, log[-3000:]
    kept = finished_label_chunks(store)
    done_before = _done(store)
    assert 3 <= done_before < 12
    second = subprocess.run(["sbatch", "--parsable", "--wait", str(script)], capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, (tmp_path / f"driver-{second.stdout.strip()}.out").read_text()[-3000:]
    assert _done(store) == 12
    after = finished_label_chunks(store)
    assert kept and all(after[k] == v for k, v in kept.items())  # finished volumes not rewritten
    log = (tmp_path / f"driver-{second.stdout.strip()}.out").read_text()
    assert f"segmented {12 - done_before} volume(s) ({done_before} already done)" in log, log[-3000:]
    assert_same(experiment / "local.zarr", store, "nuclei")

"""The container image, run: the smallest end-to-end pipeline inside it, on a bind-mounted folder.

``containers/build.sh`` builds the image (``.ci/run`` does it before the tests, and skips the build
when nothing it is made from changed). These tests skip, saying why, without podman or without an
up-to-date image. Inside, spheroid runs as the image's unprivileged user (uid 1000) with no network;
the outputs are checked on the host, against the same commands run on the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.io.plate import Plate

pytestmark = [pytest.mark.container, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "containers" / "build.sh"
SPHEROID = [sys.executable, "-c", "from pipeline.cli.main import main; main()"]
STAGES = (
    ("synth", "d", "--timepoints", "2", "--shape", "8", "64", "64", "--wells", "B2,C3"),
    ("convert", "d/raw", "--out", "s.zarr", "-w", "2"),
    ("preprocess", "s.zarr", "-w", "2"),
    ("segment", "s.zarr", "-w", "2"),
)


def podman_env() -> dict:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / "containers" / "containers.conf"))}


@pytest.fixture(scope="module")
def image() -> str:
    """The tag of the up-to-date image (skips without podman or without the image)."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman buildah runc; then containers/build.sh)")
    tag = subprocess.run([str(BUILD), "--print-tag"], capture_output=True, text=True, check=True).stdout.strip()
    check = subprocess.run([str(BUILD), "--check"], capture_output=True, text=True, env=podman_env(), timeout=300)
    if check.returncode != 0:
        pytest.skip(f"no up-to-date image {tag}: {check.stderr.strip().splitlines()[-1] if check.stderr.strip() else 'run containers/build.sh'}")
    return tag


def in_container(image: str, folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``spheroid ARGS`` in the image (its entry point), ``folder`` mounted as the working folder."""
    return subprocess.run(
        ["podman", "run", "--rm", "--network", "none", "--volume", f"{folder}:/data", image, "-q", *args],
        capture_output=True, text=True, env=podman_env(), timeout=600,
    )


def test_the_pipeline_runs_in_the_image_on_a_mounted_folder(image, tmp_path):
    """synth -> convert -> preprocess -> segment inside the image, as uid 1000, writing to a
    host folder: every stage complete, files owned by the unprivileged user, `spheroid verify`
    clean on the host, and every image and label equal to the same commands run on the host."""
    inside = tmp_path / "inside"
    inside.mkdir()
    os.chown(inside, 1000, 1000) if os.geteuid() == 0 else inside.chmod(0o777)
    assert in_container(image, inside, "--version").stdout.strip() == "spheroid, version 0.1.0"
    whoami = subprocess.run(["podman", "run", "--rm", "--entrypoint", "id", image, "-u"], capture_output=True, text=True, env=podman_env())
    assert whoami.stdout.strip() == "1000"
    for stage in STAGES:
        result = in_container(image, inside, *stage)
        assert result.returncode == 0, (stage, result.stderr[-3000:])
    owners = {p.stat().st_uid for p in (inside / "s.zarr").rglob("*")}
    assert owners == {1000}

    host = tmp_path / "host"
    host.mkdir()
    for stage in STAGES:
        result = subprocess.run([*SPHEROID, "-q", *stage], cwd=host, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (stage, result.stderr[-3000:])
    verify = subprocess.run([*SPHEROID, "verify", str(inside / "s.zarr")], capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    ours, theirs = Plate.open(str(host / "s.zarr")), Plate.open(str(inside / "s.zarr"))
    assert [str(f) for f in ours.fields()] == [str(f) for f in theirs.fields()] == ["B2/0", "C3/0"]
    for a, b in zip(ours.fields(), theirs.fields()):
        for name in ("raw", "preprocessed"):
            assert b.is_complete(name)
            np.testing.assert_array_equal(a.image(name)[:], b.image(name)[:])
        assert b.is_complete("nuclei", label=True)
        np.testing.assert_array_equal(a.labels("nuclei")[:], b.labels("nuclei")[:])
        assert b.labels("nuclei")[:].max() > 0


@pytest.mark.slurm
def test_slurm_workers_run_in_the_image(image, tmp_path):
    """The image as the Dask workers' python on the dev SLURM (as `apptainer exec ... python` is on
    a site; here podman, the same image): segment with its worker job running inside the image,
    the driver outside, and the labels equal a local run's."""
    from test_slurm import PARTITION, _controller

    reason = _controller()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("dask_jobqueue")
    for stage in STAGES:
        result = subprocess.run([*SPHEROID, "-q", *stage], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (stage, result.stderr[-3000:])
    shutil.copytree(tmp_path / "s.zarr", tmp_path / "w.zarr")
    for fld in Plate.open(str(tmp_path / "w.zarr")).fields():
        shutil.rmtree(tmp_path / "w.zarr" / fld.path / "labels")
    # as apptainer exec does, the worker sees the folder at the same path and starts in the job's folder
    python = f"podman run --rm --network host --user 0 --env 'DASK_*' --volume {tmp_path}:{tmp_path} --workdir {tmp_path} --entrypoint python {image}"
    (tmp_path / "cluster.yaml").write_text(
        "kind: slurm\n"
        f"slurm:\n  queue: {PARTITION}\n  jobs: 1\n  cores: 1\n  processes: 1\n  memory: 3GB\n  walltime: '00:20:00'\n"
        f"  interface: lo\n  log_directory: {tmp_path / 'logs'}\n  python: \"{python}\"\n"
    )
    result = subprocess.run(
        [*SPHEROID, "-v", "--cluster", "cluster.yaml", "segment", "w.zarr"], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=podman_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"--entrypoint python {image} -m distributed.cli.dask_worker" in result.stderr  # the job script, logged with -v
    for a, b in zip(Plate.open(str(tmp_path / "s.zarr")).fields(), Plate.open(str(tmp_path / "w.zarr")).fields()):
        assert b.is_complete("nuclei", label=True)
        np.testing.assert_array_equal(a.labels("nuclei")[:], b.labels("nuclei")[:])

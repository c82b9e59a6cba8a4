"""A campaign as SLURM job arrays on the dev SLURM (deploy/slurm/array.sh): layout, one task per
part of the wells with a local cluster in its allocation, the cell-cycle thresholds fitted over all
wells, tracking as a second array, the report; the store equals a local run of the same stages,
and the classify job measures no volume again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.io.plate import Plate
from pipeline.io.tables import read_table

from test_slurm import PARTITION, _controller  # noqa: F401 - the same controller probe

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SPHEROID = [sys.executable, "-c", "from pipeline.cli.main import main; main()"]
STAGES = (("convert", "d/raw", "--out", "local.zarr"), ("preprocess", "local.zarr"), ("segment", "local.zarr"), ("cellcycle", "local.zarr"))


def wait_for_jobs(ids: list[str], logs: Path, timeout: float = 900) -> None:
    """Until none of ``ids`` is queued; fails (cancelling them) when one can never start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T %r"], capture_output=True, text=True).stdout
        if not out.strip():
            return
        if "DependencyNeverSatisfied" in out:
            subprocess.run(["scancel", *ids], capture_output=True)
            raise AssertionError(f"a job failed, its dependants can never run:\n{out}\n{read_logs(logs)[-4000:]}")
        time.sleep(1)
    subprocess.run(["scancel", *ids], capture_output=True)
    raise AssertionError(f"jobs {ids} still queued after {timeout} s")


def read_logs(folder: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text()}" for p in sorted(folder.glob("*.out")))


def test_job_arrays_fill_the_store_as_one_run_would(tmp_path):
    reason = _controller()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "SPHEROID_VENV": sys.prefix}
    assert subprocess.run([*SPHEROID, "-q", "synth", "d", "--timepoints", "3", "--shape", "8", "64", "64", "--wells", "B2,B3,C4"], cwd=tmp_path).returncode == 0
    logs = tmp_path / "logs"
    logs.mkdir()
    submitted = subprocess.run(
        [str(REPO / "deploy/slurm/array.sh"), "d/raw", str(tmp_path / "s.zarr"), "2",
         f"--partition={PARTITION}", "--cpus-per-task=1", "--mem=2G", "--time=00:20:00", f"--output={logs}/%x-%j.out"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    ids = [w.rstrip(",") for w in submitted.stdout.split() if w.rstrip(",").isdigit()]
    assert len(ids) == 5, submitted.stdout
    # the local reference meanwhile (the array's tasks wait for the layout job)
    for stage in STAGES:
        result = subprocess.run([*SPHEROID, "-q", *stage, "-w", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    assert subprocess.run([*SPHEROID, "-q", "track", "local.zarr"], cwd=tmp_path).returncode == 0
    wait_for_jobs(ids, logs)

    text = read_logs(logs)
    logs_of = lambda name: [p.read_text() for p in sorted(logs.glob(f"spheroid-{name}-*.out"))]  # noqa: E731
    parts, tracks, classify = logs_of("part"), logs_of("track"), logs_of("classify")
    assert len(parts) == len(tracks) == 2 and len(classify) == 1, text[-4000:]
    assert all("done (part)" in log for log in parts) and all("done (track)" in log for log in tracks), text[-4000:]
    # part 0 of 2 holds two of the three wells, part 1 the third, for segmentation and tracking alike
    counts = lambda logs, word: sorted(int(next(line for line in log.splitlines() if line.startswith(word)).split()[1]) for log in logs)  # noqa: E731
    assert counts(parts, "segmented ") == [3, 6] and counts(tracks, "tracked ") == [1, 2], text[-4000:]
    assert "measured 0 time point(s) (9 already done)" in classify[0] and "done (classify)" in classify[0], classify[0][-4000:]
    assert "done (report)" in logs_of("report")[0] and (tmp_path / "s.zarr/report/index.html").is_file()

    ours, theirs = Plate.open(str(tmp_path / "local.zarr")), Plate.open(str(tmp_path / "s.zarr"))
    assert [str(f) for f in theirs.fields()] == ["B2/0", "B3/0", "C4/0"]
    for a, b in zip(ours.fields(), theirs.fields()):
        for name in ("raw", "preprocessed"):
            np.testing.assert_array_equal(a.image(name)[:], b.image(name)[:])
        np.testing.assert_array_equal(a.labels("nuclei")[:], b.labels("nuclei")[:])
        for table in ("nuclei", "tracks"):  # thresholds fitted over all wells, as in one run
            assert read_table(a, table).equals(read_table(b, table)), (str(a), table)

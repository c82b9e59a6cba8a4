"""The README's first command (``spheroid demo``) and ``spheroid info``, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.io.plate import Plate

SPHEROID = [sys.executable, "-c", "from pipeline.cli.main import main; main()"]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path):
    """The demo on a smaller plate (the README runs the same command with its defaults)."""
    (tmp_path / "small.yaml").write_text(
        "# model: pipeline.config.demo:DemoConfig\n"
        "synth: {shape: [10, 64, 64], n_timepoints: 2, wells: [B2, C2, C3], seed: 0, arrest_depth_um: null,\n"
        "        drug: {name: arrestin, ec50: 1.0, doses: {C2: 0.5, C3: 5.0}}}\n"
        "evaluate_wells: [B2]\n"
        "cluster: {n_workers: 2}\n"
    )
    command = [*SPHEROID, "-q", "demo", "--out", "d", "-c", "small.yaml"]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.startswith("demo done in ") and "3 wells x 2 time points" in first.stdout, first.stdout
    assert "arrestin / g1_fraction: no EC50 (too few doses)" in first.stdout  # two doses: flagged, not fitted
    summary = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert summary["evaluation"]["true_nuclei"] > 0 and 0 < summary["evaluation"]["f1"] <= 1
    assert summary["ran"] == ["convert", "preprocess", "segment", "evaluate", "cellcycle", "track", "report"]
    assert (tmp_path / "d" / "plate.zarr" / "report" / "index.html").is_file() and (tmp_path / "d" / "experiment.yaml").is_file()
    plate = Plate.open(str(tmp_path / "d" / "plate.zarr"))
    for field in plate.fields():
        assert field.is_complete() and field.is_complete("preprocessed") and field.is_complete("nuclei", label=True)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "d" / "plate.zarr").rglob("c/*") if p.is_file()}
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # resumed: no volume rewritten
    assert json.loads((tmp_path / "d" / "demo.json").read_text())["ran"] == []  # every stage done: skipped
    info = subprocess.run([*SPHEROID, "info", "d/plate.zarr", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert [f["field"] for f in described["fields"]] == ["B2/0", "C2/0", "C3/0"]
    assert {"convert", "preprocess", "segment", "cellcycle", "track"} <= set(described["stages"])
    # other settings in the same folder: refused in one line naming the way out; --overwrite recomputes
    (tmp_path / "small.yaml").write_text((tmp_path / "small.yaml").read_text().replace("seed: 0", "seed: 1"))
    refused = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 1 and "pass --overwrite" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
    redone = subprocess.run([*command, "--overwrite"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert redone.returncode == 0, redone.stderr[-3000:]
    assert json.loads((tmp_path / "d" / "demo.json").read_text())["ran"] == summary["ran"]


def test_info_shows_each_image_and_its_progress(tmp_path):
    from pipeline.io.ngff import ImageMeta
    from pipeline.io.volumes import write_volume

    import numpy as np

    plate = Plate.create(str(tmp_path / "p.zarr"), name="exp1")
    field = plate.add_field("C3")
    field.create_image("raw", (2, 2, 3, 16, 16), "uint16", ImageMeta(channels=("Hoechst", "GFP")))
    for t in range(2):
        for c in range(2):
            write_volume(plate.location, field.array_path(), t, c, np.full((3, 16, 16), t + c, np.uint16))
    field.mark_complete()
    field.create_labels("nuclei", (2, 1, 3, 16, 16), ImageMeta(channels=("nuclei",)))
    write_volume(plate.location, f"{field.label_path('nuclei')}/0", 0, 0, np.zeros((3, 16, 16), np.uint32))
    result = subprocess.run([*SPHEROID, "info", str(tmp_path / "p.zarr")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"plate exp1 at {tmp_path / 'p.zarr'}" and lines[1] == "  field C3/0"
    assert lines[2].split() == ["raw", "(2,", "2,", "3,", "16,", "16)", "uint16", "complete"]
    assert lines[3].split() == ["labels/nuclei", "(2,", "3,", "16,", "16)", "uint32", "1/2", "volumes"]  # t, z, y, x

"""``spheroid run``: one experiment file through every stage, resuming, part runs, bad layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config.synth import DrugResponse, PhaseDurations, SynthConfig

WELLS = {"B2": 0.0, "C2": 0.5, "C3": 5.0}


def write_plate(folder: Path) -> None:
    """A tiny synthetic plate: one control well and a drug at two doses, 3 time points."""
    from pipeline.synth import generate, write_export

    config = SynthConfig(
        shape=(10, 64, 64), n_timepoints=3, wells=list(WELLS), seed=2, phases=PhaseDurations(early_g1=1, g1=2, g1_s=1, s_g2_m=2),
        arrest_depth_um=None, drug=DrugResponse(ec50=1.0, doses={w: d for w, d in WELLS.items() if d > 0}),
    )
    for well in WELLS:
        write_export(generate(config, well=well), folder, layout="files", write_config=False)


def experiment(folder: Path, **changes) -> Path:
    document = {
        "name": "tiny screen",
        "store": "plate.zarr",
        "raw": {"inputs": ["example/raw"]},
        "plate": {"B2": {"control": True}, "C2": {"drug": "d", "dose": 0.5, "unit": "uM"}, "C3": {"drug": "d", "dose": 5.0, "unit": "uM"}},
        "ground_truth": {"folder": "example/truth", "wells": ["B2"]},
        "cluster": {"n_workers": 2, "memory_limit": "3GB"},
        **changes,
    }
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def plate_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    write_plate(folder / "example")
    return folder


def test_bad_layout_fails_in_one_line_before_any_work(plate_folder, tmp_path):
    shutil.copytree(plate_folder / "example", tmp_path / "example")
    plate = {"B2": {"control": True}, "C2": {"drug": "d", "dose": 0.5, "unit": "uM"}, "C3": {"drug": "d", "dose": 5.0, "unit": "uM"}, "D9": {"control": True}}
    path = experiment(tmp_path, plate=plate)
    result = CliRunner().invoke(cli, ["-q", "run", str(path)])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {path}: key 'plate.D9': no raw files for well D9 (the inputs hold B2, C2, C3)"
    assert not (tmp_path / "plate.zarr").exists()
    path = experiment(tmp_path, channels={"nuclear": "DAPI"})
    result = CliRunner().invoke(cli, ["-q", "run", str(path), "--dry-run"])
    assert result.exit_code == 1 and "key 'channels.nuclear': no channel 'DAPI'" in result.output
    for wrong in ("Foo", 7):  # a channel of a combination for segmentation, by name or index
        path = experiment(tmp_path, segment={"channel": ["Hoechst", wrong]})
        result = CliRunner().invoke(cli, ["-q", "run", str(path)])
        assert result.exit_code == 1 and f"key 'segment.channel': no channel {wrong!r} in the inputs" in result.output
        assert not (tmp_path / "plate.zarr").exists()


@pytest.mark.slow
def test_run_resume_parts_and_provenance(plate_folder, dask_client):
    from pipeline.config.experiment import load_experiment
    from pipeline.experiment.run import run_experiment
    from pipeline.io.plate import Plate
    from pipeline.io.tables import read_table

    path = experiment(plate_folder)
    dry = CliRunner().invoke(cli, ["-q", "run", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "wells: 3 (3 field(s)); 3 time point(s)" in dry.output and "d 0.5 uM: C2" in dry.output
    assert dry.output.count("to do") == 7 and "left: about" in dry.output and not (plate_folder / "plate.zarr").exists()

    config = load_experiment(path)
    first = run_experiment(config, source=str(path), progress=False, client=dask_client, stop="segment")
    assert first.ran == ["convert", "preprocess", "segment"]
    second = run_experiment(config, source=str(path), progress=False, client=dask_client)
    assert second.skipped == ["convert", "preprocess", "segment"] and second.ran == ["evaluate", "cellcycle", "track", "report"]
    report = Path(second.report)
    assert report.is_file() and report.parent == plate_folder / "plate.zarr" / "report"
    assert set(pd.read_csv(report.parent / "wells.csv")["condition"]) == {"control", "d 0.5 uM", "d 5 uM"}

    # every output records the experiment file, the versions and the model
    plate = Plate.open(str(plate_folder / "plate.zarr"))
    fld = plate.field("C2")
    records = [
        plate.records()["convert"], fld.attrs("preprocessed")["provenance"], fld.attrs("nuclei", label=True)["provenance"],
        read_table(fld, "nuclei").attrs["spheroid"], read_table(fld, "tracks").attrs["spheroid"],
        json.loads((report.parent / "provenance.json").read_text()),
        json.loads((plate_folder / "plate.zarr" / "evaluation" / "summary.json").read_text())["provenance"],
    ]
    for record in records:
        assert record["experiment"]["file"] == str(path.resolve()) and len(record["experiment"]["sha256"]) == 64
        assert record["segmentation_model"]["backend"] == "unet" and "libraries" in record
    assert "Segmentation against the ground truth" in report.read_text()

    again = CliRunner().invoke(cli, ["-q", "run", str(path), "--dry-run"])
    assert again.output.count("done: skipped") == 7
    third = run_experiment(config, source=str(path), progress=False, client=dask_client)
    assert third.ran == [] and len(third.skipped) == 7
    shutil.rmtree(report.parent)  # a lost report: only the report runs again
    assert run_experiment(config, source=str(path), progress=False, client=dask_client).ran == ["report"]
    part = run_experiment(config, source=str(path), progress=False, client=dask_client, start="track")
    assert part.ran == ["track", "report"]

    with pytest.raises(Exception, match="comes after"):
        run_experiment(config, source=str(path), start="report", stop="track")

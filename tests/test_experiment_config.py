"""The experiment file: layout checks (one line naming the key), paths, stage configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config.experiment import ExperimentConfig, load_experiment
from pipeline.errors import ConfigError

BASE = {"store": "exp.zarr", "raw": {"inputs": ["raw/"]}}
GOOD = {
    "B2": {"control": True},
    "C2": {"drug": "palbo", "dose": 0.1, "unit": "uM", "replicate": 1},
    "C3": {"drug": "palbo", "dose": 1, "unit": "uM", "replicate": 1},
}


def load(tmp_path: Path, **document) -> ExperimentConfig:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({**BASE, **document}))
    return load_experiment(path)


@pytest.mark.parametrize(
    "plate,key,words",
    [
        ({"B2": {"control": True}, "C2": {"drug": "palbo", "dose": 0.1}}, "plate.C2", "no unit"),
        ({"B2": {"control": True}, "C2": {"drug": "palbo", "dose": 1, "unit": "uM"}, "C3": {"drug": "palbo", "dose": 1, "unit": "uM"}}, "plate", "single dose"),
        ({"C2": {"drug": "palbo", "dose": 0.1, "unit": "uM"}, "C3": {"drug": "palbo", "dose": 1, "unit": "uM"}}, "plate", "no control well"),
        ({"B2": {"control": True}, "C2": {"drug": "palbo", "dose": 0.1, "unit": "uM"}, "C3": {"drug": "palbo", "dose": 1, "unit": "nM"}}, "plate", "one unit per drug"),
        ({"B2": {"control": True}, "C2": {"drug": "palbo"}}, "plate.C2", "no dose"),
        ({"B2": {"control": True, "drug": "palbo", "dose": 1, "unit": "uM"}}, "plate.B2", "controls take no drug dose"),
        ({"B02": {"control": True}, "B2": {"control": True}}, "plate", "same well"),
        ({"Q": {"control": True}}, "plate", "row letter"),
        ({"B2": {"control": True, "dosage": 1}}, "plate.B2.dosage", "unknown key"),
    ],
)
def test_bad_layout_is_one_line_naming_the_key(tmp_path, plate, key, words):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, plate=plate)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "experiment.yaml")) and f"key '{key}'" in message and words in message


def test_paths_are_relative_to_the_file_and_roles_reach_the_stages(tmp_path):
    config = load(tmp_path, plate=GOOD, channels={"nuclear": "DAPI", "red": "mCherry", "green": "mVenus", "dead": "DRAQ7"},
                  voxel_size=[2.0, 0.5, 0.5], time_step_s=900, cluster={"n_workers": 3}, raw={"inputs": ["raw/"], "pattern": "{well}-{t}-{channel}.tif"})
    assert config.store == str(tmp_path / "exp.zarr") and config.raw.inputs == [str(tmp_path / "raw")]
    convert = config.stage_config("convert")
    assert convert.voxel_size == (2.0, 0.5, 0.5) and convert.time_step == 900 and convert.pattern == "{well}-{t}-{channel}.tif"
    assert config.stage_config("segment").channel == "DAPI"
    assert config.stage_config("cellcycle").channels.dead == "DRAQ7"
    assert all(config.stage_config(s).cluster.n_workers == 3 for s in ("convert", "preprocess", "segment", "cellcycle", "evaluate"))
    rows = config.conditions(["B2", "C2", "C3", "D9"])
    assert rows["B2"] == {"condition": "control", "drug": None, "dose": 0.0, "unit": None, "control": True, "replicate": None}
    assert rows["C3"]["condition"] == "palbo 1 uM" and rows["D9"]["condition"] == "D9" and not rows["D9"]["control"]


def test_a_stage_section_may_not_contradict_the_roles(tmp_path):
    with pytest.raises(ConfigError, match="segment.channel 'Cy3' differs from channels.nuclear"):
        load(tmp_path, segment={"channel": "Cy3"})
    with pytest.raises(ConfigError, match="convert.voxel_size differs"):
        load(tmp_path, voxel_size=[5, 1, 1], convert={"voxel_size": [4, 1, 1]})


def test_segmentation_may_combine_channels_beside_the_nuclear_role(tmp_path):
    config = load(tmp_path, channels={"nuclear": "DAPI", "red": "Cy3", "green": "GFP"}, segment={"channel": ["DAPI", "Cy3"], "combine": "max"})
    seg = config.stage_config("segment")
    assert seg.channel == ["DAPI", "Cy3"] and seg.combine == "max"
    assert config.stage_config("cellcycle").channels.nuclear == "DAPI"


def test_the_shipped_example_and_the_demo_document_validate():
    from pipeline.config.demo import DEMO_DOSES, DemoConfig
    from pipeline.demo import experiment_document

    repo = Path(__file__).resolve().parents[1]
    load_experiment(repo / "configs" / "experiment.yaml")
    demo = DemoConfig()
    config = ExperimentConfig.model_validate(experiment_document(demo))
    doses = sorted({w.dose for w in config.plate.values() if w.drug})
    assert doses == list(DEMO_DOSES) and sum(w.control for w in config.plate.values()) == 3
    for well, layout in config.plate.items():
        assert (layout.dose or 0.0) == demo.synth.drug.dose(well)

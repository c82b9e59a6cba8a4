"""The README's "Train your own model" script runs as written on the shared ovule samples.

The script is read from README.md (so this test fails when the README drifts) and run with
bash in a fresh folder that sees the repository's ``configs/`` and shipped models as the
README's working directory (the repository root) does; ``DATA`` and ``STEPS`` are set as
the README says (``STEPS=20``: the whole route in a few minutes on two cores).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def readme_script() -> str:
    blocks = re.findall(r"```bash\n(.*?)\n```", (REPO / "README.md").read_text(), flags=re.S)
    found = [b for b in blocks if b.startswith("DATA=${DATA:-")]
    assert len(found) == 1, "README.md: the 'Train your own model' script (a bash block starting DATA=${DATA:-...) is missing"
    return found[0]


def test_script_names_every_step():
    script = readme_script()
    for step in ("spheroid groundtruth", "spheroid trainset", "spheroid train -c configs/train-unet-cpu.yaml", "--init-from", "spheroid segment", "spheroid evaluate"):
        assert step in script
    assert (REPO / "configs" / "train-unet-cpu.yaml").is_file()
    from click.testing import CliRunner

    from pipeline.cli.main import cli

    helped = " ".join(CliRunner().invoke(cli, ["train", "--help"]).output.split())  # --help alone leads there too
    assert "configs/train-unet-cpu.yaml" in helped and "spheroid trainset add" in helped


def test_readme_training_script_runs_as_written(shared_data, tmp_path):
    data = shared_data / "ovule-nuclei-3d"
    if not all((data / f"{n}_mini_{k}.tif").is_file() for n in (1135, 1136, 1137) for k in ("raw", "label")):
        pytest.skip(f"ovule crops not found under {data}")
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "pipeline" / "data").mkdir(parents=True)
    (tmp_path / "pipeline" / "data" / "models").symlink_to(REPO / "pipeline" / "data" / "models")
    (tmp_path / "path.sh").write_text(readme_script() + "\n")
    env = {**os.environ, "DATA": str(data), "STEPS": "20", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(["bash", "path.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr and ".evaluate-" not in run.stdout + run.stderr  # no temporary paths

    # the training set: ids from the file names, one train and one val volume
    manifest = json.loads((tmp_path / "ts" / "manifest.json").read_text())
    assert [(i["id"], i["split"]) for i in manifest["items"]] == [("1135_mini", "train"), ("1136_mini", "val")]
    # a model at the training set's voxel size, with its card in plain words and its learning curve
    mine = tmp_path / "runs" / "mine"
    card = json.loads((mine / "model" / "model.json").read_text())
    assert card["voxel_size"] == pytest.approx([0.284, 0.127, 0.127], abs=0.002) and card["training"]["steps"] == 20
    text = (mine / "model" / "MODEL.md").read_text()
    assert "0.284 x 0.127 x 0.127 um" in text and f"on {card['metrics']['best']['n_true']} nuclei" in text
    assert (mine / "learning_curve.png").stat().st_size > 10_000 and "trained 20 steps" in run.stdout
    # fine-tuned from the shipped model, which the new card names
    tuned = json.loads((tmp_path / "runs" / "tuned" / "model" / "model.json").read_text())
    assert tuned["training"]["init_from"]["name"] == "unet-default" and (tmp_path / "runs" / "tuned" / "model" / "MODEL.md").is_file()
    # labels of the unseen crop, scored against its label TIFF
    pred = tifffile.imread(tmp_path / "pred.tif")
    assert pred.shape == (100, 100, 100) and pred.dtype == np.uint32
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n_true"] == int(np.unique(tifffile.imread(data / "1137_mini_label.tif")).size - 1)

"""The Python API: config handling, and the README's script run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline import api
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def readme_script() -> str:
    blocks = re.findall(r"```python\n(.*?)\n```", (REPO / "README.md").read_text(), flags=re.S)
    script = next(b for b in blocks if "from pipeline import api" in b)
    return script + "\n"


def test_configs_from_models_dicts_and_files(tmp_path):
    assert api.load(api.SegmentConfig, None) == api.SegmentConfig()
    assert api.load(api.SegmentConfig, {"channel": "DAPI"}).channel == "DAPI"
    (tmp_path / "s.yaml").write_text("channel: DAPI\n")
    assert api.load(api.SegmentConfig, tmp_path / "s.yaml").channel == "DAPI"
    with pytest.raises(ConfigError, match=r"<dict>: key 'chanel': unknown key"):
        api.load(api.SegmentConfig, {"chanel": "DAPI"})
    with pytest.raises(ConfigError, match="single dose"):
        api.load(api.ExperimentConfig, {"store": "x.zarr", "raw": {"inputs": ["r"]}, "plate": {
            "B2": {"control": True}, "B3": {"drug": "a", "dose": 1, "unit": "uM"}}})


@pytest.mark.slow
def test_readme_script_runs_as_written(tmp_path):
    from pipeline.config.synth import PhaseDurations, SynthConfig
    from pipeline.synth import generate, write_export

    script = readme_script()
    wells = sorted(set(re.findall(r'"([A-H][0-9]{1,2})"', script)))
    assert wells == ["B2", "B3", "B4"]
    config = SynthConfig(shape=(10, 64, 64), n_timepoints=2, wells=wells, seed=1, phases=PhaseDurations(early_g1=1, g1=2, g1_s=1, s_g2_m=2), arrest_depth_um=None)
    for well in wells:  # the folder of files the script converts: raw/{well}_T{t}_{channel}.tif
        write_export(generate(config, well=well), tmp_path, layout="files", write_config=False)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^\d+ nuclei; report: .*screen\.zarr/report/index\.html$", done.stdout.strip())
    wells_table = pd.read_csv(tmp_path / "screen.zarr" / "report" / "wells.csv")
    assert list(wells_table["well"]) == wells and list(wells_table["control"]) == [True, False, False]
    assert (tmp_path / "screen.zarr" / "B" / "2" / "0" / "tables" / "tracks.parquet").is_file()

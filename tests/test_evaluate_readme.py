"""The README's scoring commands run as written, on a real ovule crop and a store made from it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from scipy import ndimage as ndi

from pipeline.cli.main import cli

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)\n```", (REPO / "README.md").read_text(), flags=re.S)
    block = next(b for b in blocks if "spheroid evaluate --truth truth.tif" in b)
    return [line for line in block.splitlines() if line.startswith("spheroid evaluate")]


@pytest.mark.slow
def test_readme_scoring_commands_run(shared_data, tmp_path, monkeypatch):
    from pipeline.io.ngff import ImageMeta
    from pipeline.io.plate import Plate
    from pipeline.io.volumes import write_volume

    folder = shared_data / "ovule-nuclei-3d"
    if not (folder / "1135_mini_label.tif").is_file():
        pytest.skip(f"no ovule crop under {folder}")
    truth = tifffile.imread(folder / "1135_mini_label.tif").astype(np.uint16)
    raw = tifffile.imread(folder / "1135_mini_raw.tif")
    pred = ndi.grey_erosion(truth, size=3)
    monkeypatch.chdir(tmp_path)
    for name, data in (("truth.tif", truth), ("pred.tif", pred), ("raw.tif", raw)):
        tifffile.imwrite(name, data, photometric="minisblack")
    for side, data in (("gt", truth), ("pred", pred)):
        Path(side).mkdir()
        tifffile.imwrite(f"{side}/1135.tif", data, photometric="minisblack")
    plate = Plate.create("exp1.zarr")
    field = plate.add_field("B10", 0)
    field.create_image("raw", (1, 1, *raw.shape), raw.dtype, ImageMeta(channels=("Hoechst",)), chunk_yx=(100, 100))
    write_volume(plate.location, field.array_path(), 0, 0, raw)
    for name, data in (("nuclei", pred), ("corrected", truth)):
        field.create_labels(name, (1, 1, *truth.shape), ImageMeta(channels=(name,)), chunk_yx=(100, 100))
        write_volume(plate.location, field.label_path(name) + "/0", 0, 0, data.astype(np.uint32))

    commands = readme_commands()
    assert len(commands) == 4
    summaries = []
    for i, line in enumerate(commands):
        args = shlex.split(line)[1:]
        out = f"eval{i}"
        args[args.index("eval/")] = out
        result = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
        assert result.exit_code == 0, (line, result.output)
        summaries.append(json.loads((Path(out) / "summary.json").read_text()))
        assert (Path(out) / "overlay.png").is_file()
    # the same pair every time: the same figures whichever route
    assert all(s["matching"] == summaries[0]["matching"] for s in summaries)
    assert 0 < summaries[0]["matching"]["0.5"]["tp"] < summaries[0]["n_true"]

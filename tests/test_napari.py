"""A field of a store opened in a real napari with napari-ome-zarr, as the README says.

napari runs in a subprocess under Xvfb (offscreen Qt has no OpenGL here). The test checks
that the image channels and the nuclei labels come in with the same dimensions and scale (so
the time and z sliders move both), that the labels are not empty at the last time point, and
keeps a screenshot (``NAPARI_SCREENSHOT`` names where; it is looked at by a person once).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPHEROID = [sys.executable, "-c", "from pipeline.cli.main import main; main()"]

VIEWER_SCRIPT = r"""
import json, sys
import numpy as np
import napari

viewer = napari.Viewer(show=True)
viewer.open(sys.argv[1], plugin="napari-ome-zarr")
layers = []
for layer in viewer.layers:
    data = layer.data[0] if layer.multiscale else layer.data
    layers.append({"kind": type(layer).__name__, "name": layer.name, "shape": list(data.shape), "scale": [float(s) for s in layer.scale]})
last = viewer.dims.range[0].stop
viewer.dims.set_point(0, last)
labels = [l for l in viewer.layers if type(l).__name__ == "Labels"]
data = labels[0].data[0] if labels[0].multiscale else labels[0].data
nonzero_last = int(np.count_nonzero(np.asarray(data[-1])))
viewer.dims.set_point(1, viewer.dims.range[1].stop / 2)
for layer in viewer.layers:  # the labels alone (napari-ome-zarr opens them hidden): are they drawn in colour?
    layer.visible = layer in labels
alone = viewer.screenshot(canvas_only=True)
coloured = int((alone[..., :3].max(axis=-1) > 40).sum())
for layer in viewer.layers:  # then everything, the labels as outlines, for a person to look at
    layer.visible = True
for layer in labels:
    layer.contour, layer.opacity = 1, 1.0
viewer.screenshot(sys.argv[2], canvas_only=True)
print(json.dumps({"layers": layers, "nonzero_last": nonzero_last, "ndim": viewer.dims.ndim, "coloured_pixels": coloured}))
viewer.close()
"""


@pytest.fixture(scope="module")
def napari_env():
    pytest.importorskip("napari")
    pytest.importorskip("napari_ome_zarr")
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run not installed (Debian's xvfb; .ci/run installs it)")


def test_demo_field_opens_in_napari_with_aligned_labels(napari_env, tmp_path):
    for args in (("synth", "d", "--timepoints", "3", "--shape", "10", "96", "96"), ("convert", "d/raw", "--out", "s.zarr"), ("segment", "s.zarr")):
        result = subprocess.run([*SPHEROID, "-q", *args, "-w", "1"] if args[0] != "synth" else [*SPHEROID, "-q", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    (tmp_path / "view.py").write_text(VIEWER_SCRIPT)
    shot = Path(os.environ.get("NAPARI_SCREENSHOT", tmp_path / "napari.png"))
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "NAPARI_CONFIG": str(tmp_path / "napari-settings.yaml")}
    result = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", sys.executable, "view.py", "s.zarr/B/10/0", str(shot)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    images = [layer for layer in report["layers"] if layer["kind"] == "Image"]
    labels = [layer for layer in report["layers"] if layer["kind"] == "Labels"]
    assert [layer["name"].split(": ")[-1] for layer in images] == ["Hoechst", "Cy3", "GFP"]
    assert len(labels) == 1 and report["ndim"] == 4
    for layer in images + labels:
        assert layer["shape"] == [3, 10, 96, 96], layer
        assert layer["scale"] == pytest.approx([1800.0, 5.0, 1.24, 1.24]), layer
    assert report["nonzero_last"] > 0  # the overlay is there at the last time point, not only at t=0
    assert report["coloured_pixels"] > 1000  # and drawn in colour (a partial label colour list draws them black)
    assert shot.is_file() and shot.stat().st_size > 10_000

"""The biologist's path (issue 18) as a user walks it, command by command, in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

SPHEROID = [sys.executable, "-c", "from pipeline.cli.main import main; main()"]


def spheroid(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``spheroid ARGS`` as a user would, in ``cwd``."""
    return subprocess.run(
        [*SPHEROID, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_single_channel_tiff_segments_with_a_mapped_channel(tmp_path, rng):
    """convert names an unnamed channel c0: segment says what to do, and --channel c0 feeds it to the model."""
    image = rng.integers(0, 200, (8, 64, 64)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "A1.tif", image, imagej=True, resolution=(1 / 1.24, 1 / 1.24), metadata={"spacing": 5.0, "unit": "um", "axes": "ZYX"})
    assert spheroid("-q", "convert", "A1.tif", "--out", "s.zarr", cwd=tmp_path).returncode == 0
    refused = spheroid("-q", "segment", "s.zarr", "--workers", "1", cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    message = refused.stderr
    assert "<defaults>" not in message and "no channel 'Hoechst' (channels: c0)" in message
    assert "pass --channel c0" in message and "model's Hoechst input" in message and "--channels Hoechst" in message
    mapped = spheroid("-v", "segment", "s.zarr", "--channel", "c0", "--workers", "1", cwd=tmp_path)
    assert mapped.returncode == 0, mapped.stderr
    assert "channel(s) ['c0'] fed to model 'unet-default' (trained on ['Hoechst'])" in mapped.stderr
    assert "segmented 1 volume(s)" in mapped.stdout

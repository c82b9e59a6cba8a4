"""The segmentation stage over a store: labels written, resumable, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config.segment import SegmentConfig
from pipeline.config.train import UNetConfig
from pipeline.errors import ConfigError, InputError, StoreError
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline.io.volumes import write_volume
from pipeline.segment.runner import run_segment
from pipeline.segment.unet.card import ModelCard, build_model, save_model

SHAPE = (2, 2, 6, 32, 32)


@pytest.fixture
def tiny_model(tmp_path):
    """A tiny U-Net with zeroed weights and a head biased to background: real weights, known output."""
    torch.manual_seed(0)
    arch = UNetConfig(features=[2, 4], pool=[[1, 2, 2]])
    model = build_model(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        head = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)][-1]
        head.bias.copy_(torch.tensor([1.0, -5.0, -5.0]))
    card = ModelCard(
        name="tiny",
        architecture=arch,
        voxel_size=[5.0, 1.24, 1.24],
        channels=["Hoechst"],
        patch_size=[6, 32, 32],
        tile=[6, 32, 32],
    )
    return save_model(model, card, tmp_path / "tiny")


def _plate(tmp_path, rng, channels=("Hoechst", "Cy3")):
    plate = Plate.create(str(tmp_path / "p.zarr"))
    field = plate.add_field("B10")
    field.create_image("raw", SHAPE, "uint16", ImageMeta(channels=channels))
    for t in range(SHAPE[0]):
        for c in range(SHAPE[1]):
            write_volume(plate.location, field.array_path(), t, c, rng.integers(0, 1000, SHAPE[2:], dtype=np.uint16))
    field.mark_complete()
    return plate


def test_segment_writes_labels_and_resumes(tmp_path, rng, tiny_model, dask_client):
    plate = _plate(tmp_path, rng)
    config = SegmentConfig(model=str(tiny_model))
    summary = run_segment(plate, config, client=dask_client, progress=False)
    assert summary["volumes"] == 2 and summary["skipped"] == 0
    field = Plate.open(str(tmp_path / "p.zarr"), mode="r+").field("B10")
    labels = field.labels("nuclei")
    assert labels.shape == (2, 1, *SHAPE[2:]) and labels.dtype == np.uint32
    assert field.is_complete("nuclei", label=True)
    assert field.attrs("nuclei", label=True)["model_name"] == "tiny"
    again = run_segment(plate, config, client=dask_client, progress=False)
    assert again["volumes"] == 0 and again["skipped"] == 2
    # an interrupted run: one time point not done -> only that one is redone
    field.plate.group[f"{field.label_path('nuclei')}/done"][1, 0] = 0
    third = run_segment(Plate.open(str(tmp_path / "p.zarr"), mode="r+"), config, client=dask_client, progress=False)
    assert third["volumes"] == 1 and third["skipped"] == 1


def test_segment_rejects_missing_channel_and_voxel_mismatch(tmp_path, rng, tiny_model):
    plate = _plate(tmp_path, rng, channels=("DAPI", "Cy3"))
    with pytest.raises(ConfigError, match="no channel 'Hoechst'"):
        run_segment(plate, SegmentConfig(model=str(tiny_model)), progress=False)
    plate2 = Plate.create(str(tmp_path / "q.zarr"))
    field = plate2.add_field("A1")
    field.create_image("raw", (1, 1, 4, 16, 16), "uint16", ImageMeta(channels=("Hoechst",), voxel_size=(1.0, 0.2, 0.2)))
    write_volume(plate2.location, field.array_path(), 0, 0, np.zeros((4, 16, 16), np.uint16))
    field.mark_complete()
    with pytest.raises(InputError, match="voxel size"):
        run_segment(plate2, SegmentConfig(model=str(tiny_model)), progress=False)


def test_segment_needs_complete_input(tmp_path, tiny_model):
    plate = Plate.create(str(tmp_path / "p.zarr"))
    field = plate.add_field("A1")
    field.create_image("raw", (1, 1, 4, 16, 16), "uint16", ImageMeta(channels=("Hoechst",)))
    with pytest.raises(StoreError, match="no complete 'raw'"):
        run_segment(plate, SegmentConfig(model=str(tiny_model)), progress=False)


def test_segment_cli_missing_model(tmp_path, rng):
    _plate(tmp_path, rng)
    result = CliRunner().invoke(cli, ["-q", "segment", str(tmp_path / "p.zarr"), "--model", str(tmp_path / "nomodel")])
    assert result.exit_code == 1
    assert "nomodel: model folder not found" in result.output and result.output.count("\n") == 1


def test_inference_tile_covers_the_stack():
    from pipeline.segment.unet.apply import inference_tile

    card = ModelCard(
        name="t", architecture=UNetConfig(features=[2, 4], pool=[[1, 2, 2]]), voxel_size=[5.0, 1.24, 1.24],
        channels=["Hoechst"], patch_size=[16, 64, 64], tile=[16, 128, 128],
    )
    assert inference_tile(card, (21, 512, 512)) == (21, 256, 256)
    assert inference_tile(card, (60, 100, 1000)) == (32, 128, 256)
    assert inference_tile(card, (8, 64, 64)) == (16, 128, 128)

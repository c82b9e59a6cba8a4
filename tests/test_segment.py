"""The segmentation stage over a store: labels written, resumable, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config.segment import SegmentConfig
from pipeline.config.train import UNetConfig
from pipeline.errors import ConfigError, InputError, StoreError
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline.io.tables import part_name, read_table
from pipeline.measure import measure_regions
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
    assert labels.shape == (2, *SHAPE[2:]) and labels.dtype == np.uint32  # t, z, y, x
    assert field.is_complete("nuclei", label=True)
    assert field.attrs("nuclei", label=True)["model_name"] == "tiny"
    again = run_segment(plate, config, client=dask_client, progress=False)
    assert again["volumes"] == 0 and again["skipped"] == 2
    # an interrupted run: one time point not done -> only that one is redone
    field.plate.group[f"{field.label_path('nuclei')}/done"][1, 0] = 0
    third = run_segment(Plate.open(str(tmp_path / "p.zarr"), mode="r+"), config, client=dask_client, progress=False)
    assert third["volumes"] == 1 and third["skipped"] == 1


def test_segment_rejects_missing_channel_and_resamples_other_voxel_sizes(tmp_path, rng, tiny_model, dask_client):
    plate = _plate(tmp_path, rng, channels=("DAPI", "Cy3"))
    with pytest.raises(InputError, match=r"no channel 'Hoechst' \(channels: DAPI, Cy3\); pass --channel NAME or INDEX for the nuclear channel"):
        run_segment(plate, SegmentConfig(model=str(tiny_model)), progress=False)
    with pytest.raises(InputError, match=r"channel index 2 out of range: the data has 2 channel\(s\) \(DAPI, Cy3\)"):
        run_segment(plate, SegmentConfig(model=str(tiny_model), channel=2), progress=False)
    # another channel name is mapped onto the model's input
    assert run_segment(plate, SegmentConfig(model=str(tiny_model), channel="DAPI"), client=dask_client, progress=False)["volumes"] == 2
    plate2 = Plate.create(str(tmp_path / "q.zarr"))
    field = plate2.add_field("A1")
    field.create_image("raw", (1, 1, 4, 16, 16), "uint16", ImageMeta(channels=("Hoechst",), voxel_size=(1.0, 0.2, 0.2)))
    write_volume(plate2.location, field.array_path(), 0, 0, rng.integers(0, 1000, (4, 16, 16), dtype=np.uint16))
    field.mark_complete()
    summary = run_segment(plate2, SegmentConfig(model=str(tiny_model)), client=dask_client, progress=False)
    assert summary["volumes"] == 1
    assert Plate.open(str(tmp_path / "q.zarr")).field("A1").labels("nuclei").shape == (1, 4, 16, 16)


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
    from pipeline.segment.unet.apply import inference_tile, tile_count

    card = ModelCard(
        name="t", architecture=UNetConfig(features=[2, 4], pool=[[1, 2, 2]]), voxel_size=[5.0, 1.24, 1.24],
        channels=["Hoechst"], patch_size=[16, 64, 64], tile=[16, 128, 128],
    )
    assert inference_tile(card, (21, 512, 512), 0.125, (1, 2, 2)) == (21, 188, 188)
    assert inference_tile(card, (21, 256, 256), 0.125, (1, 2, 2)) == (21, 256, 256)
    assert inference_tile(card, (8, 64, 64), 0.125, (1, 2, 2)) == (8, 64, 64)
    for shape in [(21, 512, 512), (60, 100, 1000), (7, 300, 257)]:
        tile = inference_tile(card, shape, 0.125, (2, 4, 4))
        assert all(t % d == 0 and t <= m for t, d, m in zip(tile, (2, 4, 4), (32, 256, 256)))
        assert all(tile_count(s, t, 0.125) == tile_count(s, m - m % d, 0.125) for s, t, m, d in zip(shape, tile, (32, 256, 256), (2, 4, 4)))


@pytest.fixture(scope="module")
def spheroid_plate(tmp_path_factory):
    """A small synthetic FUCCI spheroid (2 time points) in a store, at the default model's voxel size."""
    from pipeline.config.synth import SynthConfig
    from pipeline.synth import generate

    result = generate(SynthConfig(shape=(10, 96, 96), n_timepoints=2, seed=3), well="B10", progress=False)
    url = str(tmp_path_factory.mktemp("seg") / "s.zarr")
    plate = Plate.create(url)
    field = plate.add_field("B10")
    field.create_image("raw", result.images.shape, "uint16", result.image_meta)
    for t in range(result.images.shape[0]):
        for c in range(result.images.shape[1]):
            write_volume(plate.location, field.array_path(), t, c, result.images[t, c])
    field.mark_complete()
    return url, result


def test_stage_labels_equal_the_segmenter_on_each_volume(spheroid_plate, dask_client):
    """The stage's labels are, volume for volume, what the shipped model gives in this process:
    with the series' normalisation by default (stored with the labels), with each volume's own on request."""
    from pipeline.segment.backends import get_segmenter
    from pipeline.segment.inputs import plan_series
    from pipeline.segment.runner import SERIES_KEY

    url, result = spheroid_plate
    config = SegmentConfig(normalize="volume")
    summary = run_segment(Plate.open(url, mode="r+"), config, client=dask_client, progress=False, overwrite=True)
    assert summary["volumes"] == 2 and summary["nuclei"] > 20
    field = Plate.open(url).field("B10")
    segmenter = get_segmenter(config)
    for t in range(2):
        expected = segmenter.predict(result.images[t, 0], voxel_size=result.voxel_size)
        np.testing.assert_array_equal(field.label_volume("nuclei", t), expected)
    assert SERIES_KEY not in field.attrs("nuclei", label=True)

    config = SegmentConfig()
    assert config.normalize == "series"
    summary = run_segment(Plate.open(url, mode="r+"), config, client=dask_client, progress=False, overwrite=True)
    norm = segmenter.card.normalization
    plan = plan_series([[result.images[0, 0]], [result.images[1, 0]]], low=norm.low, high=norm.high, clip=norm.clip)
    field = Plate.open(url).field("B10")
    assert field.attrs("nuclei", label=True)[SERIES_KEY] == plan.to_dict()
    for t in range(2):
        expected, _ = segmenter.run(result.images[t, 0], voxel_size=result.voxel_size, plan=plan)
        np.testing.assert_array_equal(field.label_volume("nuclei", t), expected)
    attrs = field.attrs("nuclei", label=True)
    assert attrs["settings"]["input"] == "raw" and attrs["settings"]["channel"] == "Hoechst"
    assert attrs["provenance"]["signature"] == attrs["signature"]
    # the per-nucleus table beside the labels: every nucleus of every time point, every channel
    table = read_table(field, "nuclei-objects")
    assert list(table.t.unique()) == [0, 1] and summary["nuclei"] == len(table)
    for t in range(2):
        labels = field.label_volume("nuclei", t)
        expected = measure_regions(labels, result.images[t], channels=["hoechst", "cy3", "gfp"], voxel_size=result.voxel_size)
        got = table[table.t == t].reset_index(drop=True)
        assert list(got.label) == list(expected.label)
        for column in ("centroid_z", "centroid_y", "centroid_x", "volume", "voxels", "bbox_z0", "bbox_y1", "bbox_x1", "hoechst_mean", "gfp_integrated"):
            np.testing.assert_allclose(got[column], expected[column], rtol=1e-5, err_msg=column)


def test_objects_table_resumes_without_segmenting_again(spheroid_plate, dask_client):
    """A labelled time point whose part table is missing (stopped between the two) is measured, not segmented."""
    url, _ = spheroid_plate
    plate = Plate.open(url, mode="r+")
    run_segment(plate, SegmentConfig(), client=dask_client, progress=False, overwrite=True)
    field = plate.field("B10")
    whole = read_table(field, "nuclei-objects")
    fs, _ = plate.location.filesystem()
    fs.rm(fs._strip_protocol(field.table_url(part_name("nuclei-objects", 1))))
    fs.rm(fs._strip_protocol(field.table_url("nuclei-objects")))
    labels_before = field.label_volume("nuclei", 1)
    summary = run_segment(Plate.open(url, mode="r+"), SegmentConfig(), client=dask_client, progress=False)
    assert summary["volumes"] == 0 and summary["skipped"] == 1
    field = Plate.open(url).field("B10")
    np.testing.assert_array_equal(field.label_volume("nuclei", 1), labels_before)
    pd.testing.assert_frame_equal(read_table(field, "nuclei-objects"), whole)


def test_other_settings_are_refused_unless_overwrite(spheroid_plate, dask_client):
    """A rerun or a resumed run with another input, channel or model never mixes time points made
    differently, nor renames what made them: refused, or recomputed whole with --overwrite."""
    url, _ = spheroid_plate
    plate = Plate.open(url, mode="r+")
    run_segment(plate, SegmentConfig(), client=dask_client, progress=False, overwrite=True)
    field = plate.field("B10")
    field.plate.group[f"{field.label_path('nuclei')}/done"][1, 0] = 0  # as if stopped before t=1
    field.update_attrs("nuclei", label=True, complete=False)
    before = field.attrs("nuclei", label=True)
    with pytest.raises(StoreError, match=r"labels/nuclei: was made with other settings \(overlap: 0.125 -> 0.5.*\); pass --overwrite"):
        run_segment(Plate.open(url, mode="r+"), SegmentConfig(overlap=0.5), client=dask_client, progress=False)
    # a change nested in the backend's description is named too (not "settings: ... -> ...")
    with pytest.raises(StoreError, match=r"\(settings\.diameter_um: None -> \[20\.0, 10\.0, 10\.0\]\)"):
        run_segment(Plate.open(url, mode="r+"), SegmentConfig(diameter=[20, 10, 10]), client=dask_client, progress=False)
    with pytest.raises(StoreError, match=r"\(settings\.tta: 1 -> 8\); pass --overwrite"):  # test-time augmentation changes the labels too
        run_segment(Plate.open(url, mode="r+"), SegmentConfig(tta=8), client=dask_client, progress=False)
    assert Plate.open(url).field("B10").attrs("nuclei", label=True) == before  # records unchanged
    assert not Plate.open(url).field("B10").done("nuclei", label=True)[1, 0]
    redone = run_segment(Plate.open(url, mode="r+"), SegmentConfig(overlap=0.5), client=dask_client, progress=False, overwrite=True)
    assert redone["volumes"] == 2
    assert Plate.open(url).field("B10").attrs("nuclei", label=True)["settings"]["overlap"] == 0.5


def test_series_normalisation_ignores_bright_outliers_of_one_time_point(tmp_path, dask_client):
    """Bright objects appearing at a later time point (dying, saturated nuclei) lift that volume's
    percentiles: per volume, the other nuclei's labels change with them; per series, they do not."""
    from pipeline.config.synth import SynthConfig
    from pipeline.synth import generate

    result = generate(SynthConfig(shape=(10, 96, 96), n_timepoints=1, seed=3), well="B10", progress=False)
    first = result.images[0, 0]
    later = first.copy()
    later[:, :6, :6] = np.iinfo(np.uint16).max  # a saturated corner: 0.4 % of the voxels, away from the spheroid
    labels = {}
    for mode in ("volume", "series"):
        url = str(tmp_path / f"{mode}.zarr")
        plate = Plate.create(url)
        field = plate.add_field("B10")
        field.create_image("raw", (2, 1, *first.shape), "uint16", ImageMeta(channels=("Hoechst",), voxel_size=result.voxel_size))
        for t, volume in enumerate((first, later)):
            write_volume(plate.location, field.array_path(), t, 0, volume)
        field.mark_complete()
        run_segment(plate, SegmentConfig(normalize=mode), client=dask_client, progress=False)
        stored = Plate.open(url).field("B10")
        # beyond the network's reach from the corner; ids may be renumbered by nuclei found there
        labels[mode] = [stored.label_volume("nuclei", t)[:, 40:, 40:] for t in range(2)]
    assert not np.array_equal(labels["volume"][0] > 0, labels["volume"][1] > 0)
    np.testing.assert_array_equal(labels["series"][0] > 0, labels["series"][1] > 0)
    assert len(np.unique(labels["series"][0])) == len(np.unique(labels["series"][1])) > 20


def test_resumed_run_normalises_with_the_stored_series_values(spheroid_plate, dask_client):
    """The series' normalisation is found once and stored; a resumed run uses the stored values."""
    from pipeline.segment.runner import SERIES_KEY

    url, _ = spheroid_plate
    config = SegmentConfig()
    run_segment(Plate.open(url, mode="r+"), config, client=dask_client, progress=False, overwrite=True)
    field = Plate.open(url, mode="r+").field("B10")
    stored = field.attrs("nuclei", label=True)[SERIES_KEY]
    assert stored["high"] > stored["low"] and stored["channel_ranges"] == []
    assert len(np.unique(field.label_volume("nuclei", 1))) > 20
    # other stored values (everything maps to ~0: no nucleus), one time point to redo: they are used
    field.update_attrs("nuclei", label=True, **{SERIES_KEY: {**stored, "low": 0.0, "high": 1e9}})
    field.plate.group[f"{field.label_path('nuclei')}/done"][1, 0] = 0
    again = run_segment(Plate.open(url, mode="r+"), config, client=dask_client, progress=False)
    assert again["volumes"] == 1 and again["skipped"] == 1
    field = Plate.open(url).field("B10")
    assert field.attrs("nuclei", label=True)[SERIES_KEY]["high"] == 1e9
    assert not field.label_volume("nuclei", 1).any() and field.label_volume("nuclei", 0).any()


def test_segment_cli_normalize_option(tmp_path, rng, tiny_model):
    _plate(tmp_path, rng)
    url = str(tmp_path / "p.zarr")
    result = CliRunner().invoke(cli, ["-q", "segment", url, "--model", str(tiny_model), "--normalize", "volume", "--workers", "1"])
    assert result.exit_code == 0, result.output
    from pipeline.segment.runner import SERIES_KEY

    attrs = Plate.open(url).field("B10").attrs("nuclei", label=True)
    assert attrs["settings"]["normalize"] == "volume" and SERIES_KEY not in attrs
    result = CliRunner().invoke(cli, ["-q", "segment", url, "--model", str(tiny_model), "--normalize", "sometimes"])
    assert result.exit_code != 0 and "sometimes" in result.output


def test_damaged_chunk_is_named_in_one_line_before_any_volume_is_done(tmp_path, rng, tiny_model, dask_client):
    """A chunk failing its checksum stops the series' normalisation with the damaged volume named."""
    plate = _plate(tmp_path, rng)
    chunk = tmp_path / "p.zarr" / "B" / "10" / "0" / "0" / "c" / "1" / "0" / "0" / "0" / "0"
    assert chunk.is_file()
    chunk.write_bytes(chunk.read_bytes()[:10])
    with pytest.raises(StoreError, match=r"volume t=1 c=0 is damaged: .*checksum"):
        run_segment(plate, SegmentConfig(model=str(tiny_model)), client=dask_client, progress=False)
    field = Plate.open(str(tmp_path / "p.zarr")).field("B10")
    assert not np.asarray(field.done("nuclei", label=True)).any()

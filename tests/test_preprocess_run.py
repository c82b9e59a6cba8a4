"""The distributed preprocessing stage: identical to the one-process chain, resumable, blocks
without seams, clear errors before any work, and the ``preprocess`` / ``preview`` commands."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config.cluster import ClusterConfig
from pipeline.config.preprocess import (
    ClaheStep,
    GammaStep,
    MedianStep,
    NormalizeStep,
    PreprocessConfig,
    ThresholdStep,
    TophatStep,
    default_chain,
)
from pipeline.errors import ConfigError, InputError, StoreError
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline.io.volumes import write_volume
from pipeline.preprocess.blocks import process_volume_blocks
from pipeline.preprocess.chain import apply_chain
from pipeline.preprocess.runner import run_preprocess
from test_preprocess_steps import blobs

THREADS = ClusterConfig(n_workers=2, threads_per_worker=1, processes=False, memory_limit="2GB")


def make_plate(url: str, *, shape=(2, 3, 6, 64, 80), chunk_yx=(32, 48), dtype="uint16", seed=42, complete=True):
    """A one-field plate of synthetic nuclei with bright specks; returns ``(plate, data)``."""
    rng = np.random.default_rng(seed)
    plate = Plate.create(url, name="demo")
    field = plate.add_field("B10", 0)
    field.create_image("raw", shape, dtype, ImageMeta(channels=("Hoechst", "Cy3", "GFP")[: shape[1]]), chunk_yx=chunk_yx)
    data = np.stack([np.stack([blobs(rng, shape[2:]) for _ in range(shape[1])]) for _ in range(shape[0])]).astype(dtype)
    for t in range(shape[0]):
        for c in range(shape[1]):
            if complete or (t, c) != (shape[0] - 1, shape[1] - 1):
                write_volume(plate.location, field.array_path(), t, c, data[t, c])
    if complete:
        field.mark_complete()
    return plate, data


def expected(data: np.ndarray, config: PreprocessConfig, channels=("Hoechst", "Cy3", "GFP")) -> np.ndarray:
    return np.stack([np.stack([apply_chain(data[t, c], config.chain_for(channels[c])) for c in range(data.shape[1])]) for t in range(data.shape[0])])


def mem(tmp_path, name="p") -> str:
    return f"memory://{tmp_path.name}-{name}"


# -- the distributed run ---------------------------------------------------------------------------
def test_distributed_equals_single_process(tmp_path, dask_client):
    url = str(tmp_path / "p.zarr")
    _, data = make_plate(url)
    cy3 = [ThresholdStep(mode="percentile", value=30), GammaStep(gamma=1.3), MedianStep(size=5), NormalizeStep(low=0.5, high=99)]
    config = PreprocessConfig(channels={"Cy3": cy3})
    summary = run_preprocess(Plate.open(url, mode="r+"), config, progress=False, client=dask_client)
    assert summary["volumes"] == 6 and summary["skipped"] == 0

    plate = Plate.open(url)
    field = plate.field("B10")
    out = field.image("preprocessed")
    assert out.dtype == np.float32 and out.shape == data.shape and out.chunks == field.image().chunks
    stored = field.stored_image("preprocessed")  # the integers before `normalize`, plus its map per volume
    assert stored.dtype == np.uint16 and field.attrs("preprocessed")["stored"] == {"as": "normalized", "dtype": "uint16", "array": "normalization"}
    codec = stored.metadata.codecs[-2]  # then the chunk's checksum
    assert type(stored.metadata.codecs[-1]).__name__ == "Crc32cCodec"
    assert codec.cname.value == config.compression == "lz4" and codec.clevel == config.compression_level == 1
    np.testing.assert_array_equal(out[:], expected(data, config))  # float32, bit for bit
    np.testing.assert_array_equal(out[1, 2], expected(data, config)[1, 2])
    np.testing.assert_array_equal(out[:, 1, 2:], expected(data, config)[:, 1, 2:])
    assert field.is_complete("preprocessed")
    attrs = field.attrs("preprocessed")
    assert attrs["dtype"] == "float32" and attrs["source"] == "raw"
    assert [s["step"] for s in attrs["chains"]["Hoechst"]] == ["threshold", "gamma", "clahe", "median", "tophat", "normalize"]
    assert [s["step"] for s in attrs["chains"]["Cy3"]] == ["threshold", "gamma", "median", "normalize"]
    assert attrs["chains"]["Cy3"][1]["params"] == {"gamma": 1.3}
    assert attrs["chains"]["Hoechst"][2]["library"] == "opencv-python-headless"
    assert attrs["provenance"]["libraries"]["opencv-python-headless"] != "not installed"
    assert plate.records()["preprocess"]["config"]["channels"]["Cy3"][1]["gamma"] == 1.3
    assert field.meta("preprocessed").channels == ("Hoechst", "Cy3", "GFP")
    np.testing.assert_array_equal(field.image()[:], data)  # raw untouched


def test_rerun_skips_done_volumes_and_resumes(tmp_path, dask_client):
    url = str(tmp_path / "p.zarr")
    _, data = make_plate(url)
    config = PreprocessConfig()
    run_preprocess(Plate.open(url, mode="r+"), config, progress=False, client=dask_client)
    plate = Plate.open(url, mode="r+")
    field = plate.field("B10")
    out = plate.location.open_array(field.array_path("preprocessed"), mode="r+")
    done = plate.location.open_array(field.array_path("preprocessed").rsplit("/", 1)[0] + "/done", mode="r+")
    out[0, 0] = 7  # a done volume changed behind our back: must be left alone
    out[1, 2] = 0  # an interrupted volume: written partly, not marked done
    done[1, 2] = 0
    field.update_attrs("preprocessed", complete=False)

    summary = run_preprocess(Plate.open(url, mode="r+"), config, progress=False, client=dask_client)
    assert summary["volumes"] == 1 and summary["skipped"] == 5
    exp = expected(data, config)
    assert (out[0, 0] == 7).all()
    np.testing.assert_array_equal(Plate.open(url).field("B10").image("preprocessed")[1, 2], exp[1, 2])
    assert Plate.open(url).field("B10").is_complete("preprocessed")

    again = run_preprocess(Plate.open(url, mode="r+"), config, progress=False)  # nothing to do: no cluster
    assert again["volumes"] == 0 and again["skipped"] == 6
    redo = run_preprocess(Plate.open(url, mode="r+"), config, overwrite=True, progress=False, client=dask_client)
    assert redo["volumes"] == 6
    np.testing.assert_array_equal(Plate.open(url).field("B10").image("preprocessed")[:], exp)


def test_changed_chain_needs_overwrite(tmp_path):
    """In-process workers: a memory:// store is only visible to this process."""
    url = mem(tmp_path)
    _, data = make_plate(url, shape=(1, 2, 4, 32, 32))
    run_preprocess(Plate.open(url, mode="r+"), PreprocessConfig(cluster=THREADS), progress=False)
    other = PreprocessConfig(chain=[GammaStep(gamma=0.5), NormalizeStep()], cluster=THREADS)
    with pytest.raises(StoreError, match="another chain.*--overwrite"):
        run_preprocess(Plate.open(url, mode="r+"), other, progress=False)
    run_preprocess(Plate.open(url, mode="r+"), other, overwrite=True, progress=False)
    np.testing.assert_array_equal(Plate.open(url).field("B10").image("preprocessed")[:], expected(data, other))


def test_without_normalisation_output_stays_uint16(tmp_path, dask_client):
    url = str(tmp_path / "p.zarr")
    _, data = make_plate(url, shape=(1, 3, 4, 32, 40))
    config = PreprocessConfig(chain=[s.model_copy(update={"enabled": s.step != "normalize"}) for s in default_chain()])
    run_preprocess(Plate.open(url, mode="r+"), config, progress=False, client=dask_client)
    field = Plate.open(url).field("B10")
    out = field.image("preprocessed")[:]
    assert out.dtype == np.uint16 and field.attrs("preprocessed")["dtype"] == "uint16"
    np.testing.assert_array_equal(out, expected(data, config))
    assert out.max() > 20000  # CLAHE spreads over the 16-bit range: no 8-bit cut


def test_workers_are_tuned(dask_client):
    import cv2

    from pipeline.preprocess.runner import tune_worker

    dask_client.run(tune_worker)
    assert set(dask_client.run(cv2.getNumThreads).values()) == {1}


# -- blocks with a halo -------------------------------------------------------------------------
BLOCK_CASES = [
    ("thesis chain split in z", default_chain(), (2, 0, 0)),
    (
        "local chain split in y and x",
        [ThresholdStep(mode="percentile", value=20), GammaStep(), MedianStep(size=5), TophatStep(radius=3), NormalizeStep()],
        (0, 24, 20),
    ),
    (
        "3d filters split in every axis",
        [ThresholdStep(), MedianStep(mode="3d", size=3, size_z=3), TophatStep(mode="3d", radius=2, radius_z=1), NormalizeStep()],
        (4, 30, 36),
    ),
]


@pytest.mark.parametrize("name,chain,block_shape", BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_blocks_equal_whole_volume(tmp_path, dask_client, name, chain, block_shape):
    url = str(tmp_path / "p.zarr")
    plate, data = make_plate(url, shape=(1, 1, 9, 70, 90), chunk_yx=(32, 48))
    field = plate.field("B10")
    config = PreprocessConfig(chain=chain)
    field.create_image("preprocessed", data.shape, np.float32, field.meta(), chunk_yx=(32, 48))
    info = process_volume_blocks(dask_client, plate.location, field.array_path(), field.array_path("preprocessed"), 0, 0, chain, block_shape)
    assert info["blocks"] > 1
    got = field.image("preprocessed")[0, 0]
    np.testing.assert_array_equal(got, apply_chain(data[0, 0], config.chain))
    assert field.done("preprocessed")[0, 0]


def test_block_mode_through_the_stage(tmp_path, dask_client):
    url = str(tmp_path / "p.zarr")
    _, data = make_plate(url, shape=(2, 2, 6, 40, 48), chunk_yx=(16, 16))
    config = PreprocessConfig(block_shape=(2, 0, 0))
    summary = run_preprocess(Plate.open(url, mode="r+"), config, progress=False, client=dask_client)
    assert summary["volumes"] == 4
    field = Plate.open(url).field("B10")
    np.testing.assert_array_equal(field.image("preprocessed")[:], expected(data, config))
    assert field.attrs("preprocessed")["block_shape"] == [2, 0, 0]
    assert field.stored_image("preprocessed").dtype == np.float32  # blocks share one histogram: stored as floats
    with pytest.raises(StoreError, match=r"stored as float32\); pass --overwrite"):  # whole volumes would store integers
        run_preprocess(Plate.open(url, mode="r+"), PreprocessConfig(), progress=False, client=dask_client)


# -- bad input: clear errors before any work ---------------------------------------------------------
def test_missing_or_incomplete_raw(tmp_path):
    url = mem(tmp_path, "empty")
    plate = Plate.create(url)
    with pytest.raises(StoreError, match="no fields"):
        run_preprocess(plate, PreprocessConfig(cluster=THREADS), progress=False)
    plate.add_field("B10")
    with pytest.raises(StoreError, match="field B10/0 has no 'raw' image"):
        run_preprocess(plate, PreprocessConfig(cluster=THREADS), progress=False)
    url2 = mem(tmp_path, "partial")
    plate2, _ = make_plate(url2, shape=(1, 2, 2, 16, 16), complete=False)
    with pytest.raises(StoreError, match=r"incomplete \(1/2 volumes written\)"):
        run_preprocess(plate2, PreprocessConfig(cluster=THREADS), progress=False)
    assert not plate2.field("B10").has_image("preprocessed")


def test_channel_missing_from_store(tmp_path):
    url = mem(tmp_path)
    plate, _ = make_plate(url, shape=(1, 2, 2, 16, 16))
    config = PreprocessConfig(channels={"DAPI": [GammaStep()]}, cluster=THREADS)
    with pytest.raises(ConfigError, match=r"pre\.yaml: key 'channels\.DAPI': the store has no channel 'DAPI'.*Hoechst, Cy3"):
        run_preprocess(plate, config, progress=False, source="pre.yaml")
    assert not plate.field("B10").has_image("preprocessed")


def test_block_shape_that_would_cut_clahe_tiles(tmp_path):
    url = mem(tmp_path)
    plate, _ = make_plate(url, shape=(1, 1, 4, 32, 32))
    for chain, shape in (([ClaheStep()], (0, 16, 0)), ([ClaheStep(mode="3d")], (2, 0, 0))):
        with pytest.raises(ConfigError, match="block_shape.*clahe.*must be 0"):
            run_preprocess(plate, PreprocessConfig(chain=chain, block_shape=shape, cluster=THREADS), progress=False)
    assert not plate.field("B10").has_image("preprocessed")


def test_float_raw_rejected(tmp_path):
    url = mem(tmp_path)
    plate = Plate.create(url)
    field = plate.add_field("B10")
    field.create_image("raw", (1, 1, 2, 8, 8), "float32", ImageMeta(channels=("Hoechst",)))
    write_volume(plate.location, field.array_path(), 0, 0, np.ones((2, 8, 8), np.float32))
    field.mark_complete()
    with pytest.raises(InputError, match="float32; preprocessing needs uint8 or uint16"):
        run_preprocess(plate, PreprocessConfig(cluster=THREADS), progress=False)


# -- commands -----------------------------------------------------------------------------------
def test_preprocess_command(tmp_path):
    url = str(tmp_path / "p.zarr")
    _, data = make_plate(url, shape=(1, 3, 4, 32, 40))
    cfg = tmp_path / "pre.yaml"
    cfg.write_text("chain:\n  - {step: gamma, gamma: 0.7}\n  - {step: median, size: 3}\n  - {step: normalize}\n")
    result = CliRunner().invoke(cli, ["-q", "preprocess", url, "-c", str(cfg), "-w", "1", "--field", "B10/0"])
    assert result.exit_code == 0, result.output
    assert "preprocessed 3 volume(s)" in result.output
    from pipeline.config.base import load_config

    np.testing.assert_array_equal(Plate.open(url).field("B10").image("preprocessed")[:], expected(data, load_config(PreprocessConfig, cfg)))
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels:\n  Draq7: [{step: gamma}]\n")
    result = CliRunner().invoke(cli, ["preprocess", url, "-c", str(bad)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: ") and "bad.yaml" in result.output and "Draq7" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_preview_command(tmp_path):
    from matplotlib.image import imread

    url = str(tmp_path / "p.zarr")
    make_plate(url, shape=(2, 3, 5, 48, 64))
    png = tmp_path / "prev.png"
    result = CliRunner().invoke(cli, ["preview", url, "--field", "B10/0", "--t", "1", "--z", "2", "--out", str(png)])
    assert result.exit_code == 0, result.output
    img = imread(png)
    assert img.ndim == 3 and img.shape[1] > img.shape[0] > 300  # 3 rows x 7 columns
    result = CliRunner().invoke(cli, ["preview", url, "--z", "9", "--out", str(png)])
    assert result.exit_code == 1 and "--z 9" in result.output and "0..4" in result.output


def test_preview_panels_follow_chain(tmp_path):
    from pipeline.preprocess.preview import preview_panels, row_limits

    url = mem(tmp_path)
    plate, data = make_plate(url, shape=(1, 2, 4, 32, 32))
    config = PreprocessConfig(chain=[GammaStep(gamma=0.5), MedianStep(enabled=False), NormalizeStep()])
    rows = preview_panels(plate.field("B10"), config, 0, 1)
    assert [r[0] for r in rows] == ["Hoechst", "Cy3"]
    labels = [p[0].splitlines()[0] for p in rows[1][1]]
    assert labels == ["raw", "gamma", "normalize"]
    np.testing.assert_array_equal(rows[1][1][0][1], data[0, 1, 1])
    np.testing.assert_array_equal(rows[1][1][2][1], apply_chain(data[0, 1], config.chain)[1])
    lo, hi = row_limits(rows[0][1])
    assert 0 <= lo < hi


def test_real_fucci_section(shared_data):
    """A real FUCCI spheroid section (uint8, 1.24 um/px) through the thesis chain."""
    import tifffile

    path = shared_data / "fucci-spheroid-sections-2d" / "ExpL_793b_RM_J_D16_10000_1.tif"
    if not path.exists():
        pytest.skip(f"{path} not found")
    image = tifffile.imread(path)  # C, Y, X uint8
    nuclei = np.ascontiguousarray(image[0, None, 256:768, 256:768])
    out = apply_chain(nuclei, default_chain())
    assert out.dtype == np.float32 and out.shape == nuclei.shape
    lo, hi = np.percentile(out, [1, 99.8])
    assert abs(lo) < 1e-6 and abs(hi - 1) < 1e-3
    specks = [s for s in default_chain() if s.step == "tophat"][0]
    from pipeline.preprocess.steps import tophat_subtract

    opened = tophat_subtract(nuclei, radius=specks.radius)
    assert (opened <= nuclei).all() and opened.mean() < nuclei.mean()

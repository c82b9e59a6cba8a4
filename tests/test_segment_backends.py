"""StarDist and Cellpose: trained on a training set with `spheroid train`, then segmenting a store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config.groundtruth import SynthSetConfig
from pipeline.config.segment import SegmentConfig
from pipeline.config.synth import SynthConfig
from pipeline.errors import ConfigError, InputError, MissingDependencyError, require
from pipeline.groundtruth.builders import build_from_synth
from pipeline.groundtruth.trainset import TrainingSet
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline.io.volumes import write_volume
from pipeline.segment.backends import BACKENDS, Segmenter, get_segmenter
from pipeline.segment.runner import run_segment

SHAPE = (8, 48, 48)
VOXEL = (5.0, 1.24, 1.24)

CONFIGS = {
    "stardist": {
        "stardist": {"patch_size": [8, 32, 32], "steps_per_epoch": 2, "n_rays": 16, "unet_n_filter_base": 8, "batch_size": 2,
                     "nms_thresholds": [0.4], "threshold_iterations": 2},
    },
    "cellpose": {
        "cellpose": {"bsize": 32, "steps_per_epoch": 1, "batch_size": 4, "cellprob_thresholds": [0.0], "ortho_slices": True},
    },
}


@pytest.fixture(scope="module")
def trainset(tmp_path_factory):
    ts = TrainingSet.create(tmp_path_factory.mktemp("ts") / "set")
    config = SynthSetConfig(synth=SynthConfig(shape=SHAPE, n_timepoints=1, n_nuclei=25, seed=3), wells={"B2": "train", "B3": "train", "B4": "val"})
    build_from_synth(ts, config, progress=False)
    return ts.root


@pytest.fixture
def plate(tmp_path):
    from pipeline.synth import generate

    synth = generate(SynthConfig(shape=SHAPE, n_timepoints=1, n_nuclei=25, seed=4), well="C2")
    plate = Plate.create(str(tmp_path / "p.zarr"))
    field = plate.add_field("C2")
    field.create_image("raw", (1, 1, *SHAPE), "uint16", ImageMeta(channels=("Hoechst",), voxel_size=VOXEL))
    write_volume(plate.location, field.array_path(), 0, 0, synth.images[0, 0])
    field.mark_complete()
    return plate


def train_with_cli(backend, trainset, tmp_path) -> str:
    config = {"backend": backend, "name": f"tiny-{backend}", "max_steps": 2, "threads": 2, "validation": {"max_volumes": 1}, **CONFIGS[backend]}
    path = tmp_path / f"train-{backend}.yaml"
    path.write_text("# model: pipeline.config.train:TrainConfig\n" + yaml.safe_dump(config))
    out = tmp_path / f"run-{backend}"
    result = CliRunner().invoke(cli, ["-q", "train", "-c", str(path), "--trainset", str(trainset), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return str(out / "model")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["stardist", "cellpose"])
def test_train_then_segment_a_store(backend, trainset, plate, tmp_path, dask_client):
    model = train_with_cli(backend, trainset, tmp_path)
    card = json.loads((tmp_path / f"run-{backend}" / "model" / "model.json").read_text())
    assert card["format"] == f"spheroid-{backend}" and card["voxel_size"] == list(VOXEL)
    assert card["nucleus_diameter_um"] > 0 and card["channels"] == ["Hoechst"]
    assert np.prod(card["nucleus_diameters_um"]) ** (1 / 3) == pytest.approx(card["nucleus_diameter_um"], rel=1e-3)
    assert card["training"]["steps"] == 2 and card["metrics"]["best"]["n_true"] > 0
    # scored on the val volume's true nuclei as stored (Cellpose renumbers label slices in place:
    # its training must not reach the val volumes' 3D instances)
    from pipeline.config.train import TrainConfig
    from pipeline.train.common import load_split_volumes, unpadded

    _, _, _, val = load_split_volumes(TrainConfig(trainset=str(trainset), validation={"max_volumes": 1}))
    assert card["metrics"]["best"]["n_true"] == sum(len(np.unique(unpadded(v)[1])) - 1 for v in val)
    assert card["normalization"] == {"low": 1.0, "high": 99.8, "clip": False}
    config = SegmentConfig(backend=backend, model=model, device="cpu")
    summary = run_segment(plate, config, client=dask_client, progress=False)
    assert summary["volumes"] == 1
    field = Plate.open(plate.location.url).field("C2")
    labels = field.labels("nuclei")
    assert labels.shape == (1, *SHAPE) and labels.dtype == np.uint32 and field.is_complete("nuclei", label=True)
    described = get_segmenter(config).describe()
    assert described["backend"] == backend and described["model"] == model and len(described["model_sha256"]) == 64
    assert isinstance(get_segmenter(config), Segmenter)
    assert field.attrs("nuclei", label=True)["model_sha256"] == described["model_sha256"]
    from pipeline.train.heldout import evaluate_model

    with pytest.raises(InputError, match=f"test-time augmentation \\(--tta\\) applies to U-Net models, not {backend}"):
        evaluate_model(model, trainset, split="val", tta=8)


@pytest.mark.parametrize("backend", ["stardist", "cellpose"])
def test_a_model_folder_is_required(backend):
    with pytest.raises(ConfigError, match=f"the {backend} backend needs a model folder"):
        BACKENDS[backend](SegmentConfig(backend=backend))


def test_model_of_another_backend_is_named(tmp_path):
    from pipeline.segment.unet.card import default_model_path

    with pytest.raises(InputError, match=r"a 'spheroid-unet' model, not a 'spheroid-stardist' one; pick the backend it was trained with \(--backend unet\)"):
        BACKENDS["stardist"](SegmentConfig(backend="stardist", model=str(default_model_path())))


def test_missing_library_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"pip install 'spheroid\[stardist\]'"):
        require("stardist_not_installed_here", "stardist")


def test_cellpose_training_slices_are_copies():
    """Cellpose renumbers its label slices in place; they must not be views of the volumes."""
    from pipeline.train.cellpose import slices_2d

    rng = np.random.default_rng(0)
    labels = np.zeros((4, 16, 16), np.uint32)
    labels[:, 2:6, 2:6] = 7
    labels[:, 9:13, 9:13] = 9
    image = rng.random((4, 16, 16)).astype(np.float32)
    before = labels.copy()
    images, masks = slices_2d(image, labels, 2.0, ortho=True, min_masks=1)
    assert len(masks) > 4
    for m in masks:
        m[m > 0] = 1  # what Cellpose's renumbering does to a slice
    for i in images:
        i[:] = 0
    assert np.array_equal(labels, before) and image.any()


def test_unet_backend_keeps_its_model_channels_last():
    """Converted once when the worker builds the backend: no layout change per block."""
    from pipeline.segment.backends import BACKENDS
    from pipeline.segment.unet.predict import _is_channels_last

    segmenter = BACKENDS["unet"](SegmentConfig())
    assert _is_channels_last(segmenter.model)
    probs = segmenter.probabilities(np.random.default_rng(0).random((8, 64, 64), dtype=np.float32))
    assert probs.shape == (3, 8, 64, 64) and _is_channels_last(segmenter.model)

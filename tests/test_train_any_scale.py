"""Training at any scale: varied synthetic render settings, items resampled to the model's voxel size,
the centre target, the nucleus diameter in the card, and fine-tuning from a model folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config.groundtruth import SynthSetConfig
from pipeline.config.synth import SynthConfig
from pipeline.config.train import TrainConfig
from pipeline.errors import ConfigError
from pipeline.evaluate import matching
from pipeline.groundtruth.builders import build_from_synth
from pipeline.groundtruth.trainset import TrainingSet
from pipeline.segment.card import read_card_json
from pipeline.segment.instances import label_nuclei
from pipeline.train.data import centre_target, load_volumes, nucleus_diameter
from pipeline.train.loop import train

VOXEL = (5.0, 1.24, 1.24)


@pytest.fixture(scope="module")
def trainset(tmp_path_factory):
    """Two synthetic wells rendered at drawn settings and voxel sizes, resampled to the model's scale,
    and one item stored at another voxel size (2.5 x 0.62 x 0.62 um)."""
    ts = TrainingSet.create(tmp_path_factory.mktemp("ts") / "set")
    config = SynthSetConfig(
        synth=SynthConfig(shape=(8, 48, 48), n_timepoints=1, n_nuclei=20, seed=2), wells={"B2": "train", "B3": "val"},
        resample_to=VOXEL, vary={"packing": [0.2, 0.4], "voxel_size": [[2.5, 7.0], [1.0, 1.5], [1.0, 1.5]], "noise.read_noise": [5, 30]},
    )
    entries = build_from_synth(ts, config, progress=False)
    assert [e["voxel_size"] for e in entries] == [list(VOXEL)] * 2
    drawn = [e["provenance"]["origin"]["drawn"] for e in entries]
    assert drawn[0] != drawn[1] and all(0.2 <= d["packing"] <= 0.4 for d in drawn)
    image, instances, semantic = ts.load(entries[0]["id"])
    assert image.shape == (8, 48, 48) and image.dtype == np.uint16
    # one item at twice the resolution: training resamples it
    fine = [np.repeat(np.repeat(a, 2, axis=1), 2, axis=2) for a in (image, instances, semantic)]
    ts.add(*fine, id="fine", voxel_size=(5.0, 0.62, 0.62), channel="Hoechst", source="synthetic", split="train")
    return ts.root


def test_items_are_resampled_to_the_model_voxel_size(trainset):
    from pipeline.config.train import NormalizationConfig

    ts = TrainingSet.open(trainset)
    vols = {v.id: v for v in load_volumes(ts, "train", normalization=NormalizationConfig(), voxel_size=VOXEL, centre=True)}
    assert vols["fine"].shape == (8, 48, 48) and vols["fine"].voxel_size == VOXEL
    assert set(np.unique(vols["fine"].semantic)) <= {0, 1, 2} and vols["fine"].centre.max() == pytest.approx(1.0, abs=1e-3)
    assert 5 < nucleus_diameter(list(vols.values()), VOXEL) < 16


def test_centre_target_gives_one_seed_per_nucleus():
    from pipeline.synth import generate

    truth = generate(SynthConfig(shape=(12, 96, 96), n_timepoints=1, packing=0.45, contact=0.85, seed=4), well="B2").labels[0]
    centre = centre_target(truth, VOXEL)
    assert centre.max() == pytest.approx(1.0) and (centre[truth == 0] == 0).all()
    probs = np.stack([(truth == 0).astype(np.float32), np.zeros(truth.shape, np.float32), (truth > 0).astype(np.float32), centre])
    labels = label_nuclei(probs, seed_centre=0.8, min_size=0, include_edge=True)
    assert matching(truth, labels, thresh=0.5).f1 > 0.95


@pytest.mark.slow
def test_init_from_keeps_provenance(trainset, tmp_path):
    base = {
        "trainset": str(trainset), "model": {"features": [4, 8], "centre": True}, "sampling": {"patch_size": [8, 32, 32], "batch_size": 2},
        "validation": {"every": 2, "metric": "match_f1", "tune_labeling": False}, "max_steps": 2, "voxel_size": list(VOXEL), "threads": 2,
    }
    first = train(TrainConfig.model_validate({**base, "out": str(tmp_path / "a"), "name": "first"}), progress=False)
    card_a = read_card_json(first.model_dir)
    assert card_a["nucleus_diameter_um"] > 0 and card_a["training"]["cpu_s"] > 0
    assert np.prod(card_a["nucleus_diameters_um"]) ** (1 / 3) == pytest.approx(card_a["nucleus_diameter_um"], rel=1e-3)
    # the architecture comes from the card: the config's is ignored
    second = train(TrainConfig.model_validate({**base, "model": {"features": [8, 16]}, "out": str(tmp_path / "b"), "name": "second",
                                               "init_from": str(first.model_dir)}), progress=False)
    card_b = read_card_json(second.model_dir)
    assert card_b["architecture"]["features"] == [4, 8]
    origin = card_b["training"]["init_from"]
    assert origin["name"] == "first" and len(origin["sha256"]) == 64 and origin["trainset"] == str(trainset)
    # a normalisation the config names replaces the card's: group -> batch, convolutions carried over
    third = train(TrainConfig.model_validate({**base, "model": {"features": [8, 16], "norm": "batch"}, "out": str(tmp_path / "d"),
                                              "name": "third", "init_from": str(first.model_dir)}), progress=False)
    card_d = read_card_json(third.model_dir)
    assert card_d["architecture"]["features"] == [4, 8] and card_d["architecture"]["norm"] == "batch"
    with pytest.raises(ConfigError, match="is a unet model; it cannot start a stardist run"):
        from pipeline.train.stardist import train_stardist

        train_stardist(TrainConfig.model_validate({**base, "backend": "stardist", "out": str(tmp_path / "c"), "init_from": str(first.model_dir)}))


def test_init_state_across_normalisations():
    """Fine-tuning into another normalisation: convolutions and affine parameters are the card's,
    batch normalisation's statistics start afresh; a convolution that does not fit is an error."""
    import torch

    from pipeline.config.train import UNetConfig
    from pipeline.segment.unet.card import build_model
    from pipeline.train.init import load_init_state

    torch.manual_seed(0)
    group = build_model(UNetConfig(features=[4, 8], norm="group"))
    state = group.state_dict()
    batch = build_model(UNetConfig(features=[4, 8], norm="batch"))
    load_init_state(batch, state)
    after = batch.state_dict()
    shared = [k for k in state if k in after]
    assert len(shared) == len(state) and all(torch.equal(after[k], state[k]) for k in shared)
    fresh = [k for k in after if k not in state]
    assert fresh and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in fresh)
    assert all(float(after[k].abs().sum()) == 0 for k in fresh if k.endswith("running_mean"))
    load_init_state(build_model(UNetConfig(features=[4, 8], norm="group")), state)  # same architecture: exact
    with pytest.raises(ConfigError, match="missing or of another shape"):
        load_init_state(build_model(UNetConfig(features=[4, 16], norm="batch")), state)
    # a centre output added: the three class rows of the head carried over, the centre row fresh
    centre = build_model(UNetConfig(features=[4, 8], norm="batch", centre=True))
    load_init_state(centre, state)
    head = centre.state_dict()["head.weight"]
    assert head.shape[0] == 4 and torch.equal(head[:3], state["head.weight"]) and not torch.equal(head[3], torch.zeros_like(head[3]))


def test_fine_tuning_scales_the_voxel_size_by_nucleus_size(trainset):
    """Fine-tuning on nuclei of another size trains where they span the model's voxels (issue 18)."""
    from pipeline.segment.unet.card import ModelCard
    from pipeline.train.data import items_nucleus_diameter
    from pipeline.train.init import scaled_voxel_size

    ts = TrainingSet.open(trainset)
    data_d = items_nucleus_diameter(ts, ("train", "val"))
    assert 5 < data_d < 20
    from pipeline.config.train import UNetConfig

    card = ModelCard(name="m", architecture=UNetConfig(features=[4, 8]), voxel_size=[5.0, 1.24, 1.24], channels=["Hoechst"], patch_size=[8, 32, 32], tile=[8, 32, 32])
    assert scaled_voxel_size(card, ts) == [5.0, 1.24, 1.24]  # no diameter on the card: its voxel size
    near = card.model_copy(update={"nucleus_diameter_um": data_d * 1.1})
    assert scaled_voxel_size(near, ts) == [5.0, 1.24, 1.24]
    big = card.model_copy(update={"nucleus_diameter_um": data_d * 2})
    assert scaled_voxel_size(big, ts) == pytest.approx([2.5, 0.62, 0.62])

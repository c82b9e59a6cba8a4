"""The training loop: the loss goes down, interrupt + resume equals an uninterrupted run, outputs."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage as ndi

from pipeline.config.train import TrainConfig
from pipeline.errors import ConfigError, InputError
from pipeline.groundtruth.trainset import TrainingSet
from pipeline.segment.unet.card import load_model
from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.loop import lr_factor, train

VOXEL = (5.0, 1.24, 1.24)


def synthetic_item(rng: np.random.Generator, shape=(8, 40, 40), n=6):
    """Bright ellipsoid nuclei on a dim noisy background, with instances and semantic target."""
    inst = np.zeros(shape, np.uint32)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for label in range(1, n + 1):
        c = [rng.uniform(2, shape[0] - 2), rng.uniform(6, shape[1] - 6), rng.uniform(6, shape[2] - 6)]
        r = [rng.uniform(1.5, 2.5), rng.uniform(3.5, 5.5), rng.uniform(3.5, 5.5)]
        ball = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
        inst[ball & (inst == 0)] = label
    fg = inst > 0
    sem = np.where(fg, 2, 0).astype(np.uint8)
    sem[ndi.binary_dilation(fg) & ~fg] = 1
    image = ndi.gaussian_filter(fg * 300.0 + 40.0, 0.7) + rng.normal(0, 15, shape)
    return np.clip(image, 0, None).astype(np.uint16), inst, sem


@pytest.fixture(scope="module")
def trainset(tmp_path_factory):
    rng = np.random.default_rng(42)
    ts = TrainingSet.create(tmp_path_factory.mktemp("ts") / "set")
    for i, split in enumerate(["train", "train", "train", "val"]):
        image, inst, sem = synthetic_item(rng)
        ts.add(image, inst, sem, id=f"s{i}", voxel_size=VOXEL, channel="Hoechst", source="synthetic", split=split)
    return ts.root


def tiny_config(trainset, out, **kw) -> TrainConfig:
    base = {
        "trainset": str(trainset),
        "out": str(out),
        "model": {"features": [4, 8]},
        "loss": [{"name": "iou", "class_weights": [1.0, 2.0, 1.5]}, {"name": "ce", "weight": 0.5}],
        "sampling": {"patch_size": [8, 32, 32], "batch_size": 2},
        "optim": {"lr": 1e-2, "schedule": "cosine", "warmup_steps": 2},
        "validation": {"every": 3, "metric": "f1_nucleus"},
        "labeling": {"min_size": 5},
        "max_steps": 6,
        "log_every": 1,
        "checkpoint_every": 100,
        "device": "cpu",
        "seed": 3,
    }
    base.update(kw)
    return TrainConfig.model_validate(base)


@pytest.mark.slow
def test_loss_goes_down(trainset, tmp_path):
    config = tiny_config(trainset, tmp_path, max_steps=60, validation={"every": 60}, optim={"lr": 1e-2, "schedule": "constant"})
    losses = []
    result = train(config, progress=False, on_step=lambda step, rec: losses.append(rec["loss"]))
    assert result.step == 60 and len(losses) == 60
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    # it learnt to find the nuclei of the held-out volume, and to separate them
    assert result.best["f1_nucleus"] > 0.5 and result.best["match_f1"] > 0.5


@pytest.fixture(scope="module")
def uninterrupted(trainset, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    train(tiny_config(trainset, out, log_every=2), progress=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("at", [3, 4], ids=["before-validation", "between-validations"])
def test_resume_after_interrupt_equals_uninterrupted_run(trainset, uninterrupted, tmp_path, at):
    def interrupt(step, record):
        if step == at:
            os.kill(os.getpid(), signal.SIGUSR1)

    part = train(tiny_config(trainset, tmp_path / "part", log_every=2), progress=False, on_step=interrupt)
    assert part.interrupted and part.step == at
    ckpt = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    # interrupted during step 3, its validation is left for the resumed run
    assert ckpt["loop"]["step"] == at and ckpt["loop"]["validated_step"] == (None if at == 3 else 3)
    resumed = train(tiny_config(trainset, tmp_path / "part", log_every=2), progress=False)
    assert not resumed.interrupted and resumed.step == 6

    a = load_checkpoint(uninterrupted / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pid, st in a["optimizer"]["state"].items():
        for name, value in st.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), (pid, name)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6
    assert a["rng"]["numpy"] == b["rng"]["numpy"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(a["loop"]["history"]) == strip(b["loop"]["history"])
    assert a["loop"]["best_step"] == b["loop"]["best_step"]


@pytest.mark.slow
def test_outputs_and_model_card(trainset, tmp_path):
    config = tiny_config(trainset, tmp_path, command="spheroid train -c x.yaml")
    result = train(config, progress=False)
    for name in ("checkpoint.pt", "metrics.csv", "learning_curve.png", "config.yaml", "model/weights.pt", "model/model.json"):
        assert (tmp_path / name).is_file(), name
    model, card = load_model(result.model_dir)
    assert card.voxel_size == list(VOXEL) and card.channels == ["Hoechst"]
    assert card.architecture.features == [4, 8] and card.patch_size == [8, 32, 32]
    assert card.normalization.low == 1.0 and card.normalization.high == 99.8
    assert card.metrics["best_step"] == result.best_step in (3, 6)
    assert card.metrics["final"]["step"] == 6 and "f1_edge" in card.metrics["best"]
    assert {i["id"]: i["split"] for i in card.training["items"]} == {"s0": "train", "s1": "train", "s2": "train", "s3": "val"}
    assert card.training["steps"] == 6 and card.command == "spheroid train -c x.yaml"
    rows = card.metrics["labeling_tuning"]  # thresholds chosen on the val volume after training
    # 2 seed modes x 5 x 4 thresholds x 3 z-trims, then 3 least peaks on the best; the fixture's edges lie outside
    assert len(rows) == 123 and card.labeling.include_edge is False
    assert sorted(r["min_peak"] for r in rows[120:]) == [0.4, 0.5, 0.6]
    assert {r["seeds"] for r in rows} == {"interior", "maxima"} and {r["z_trim"] for r in rows} == {0.0, 0.3, 0.5}
    best = max(rows, key=lambda r: r["match_f1"])
    assert best["match_f1"] == max(r["match_f1"] for r in rows if r["seed_threshold"] == card.labeling.seed_threshold and r["foreground_threshold"] == card.labeling.foreground_threshold)
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert {"kind", "step", "loss", "lr", "f1_nucleus", "f1_edge", "match_f1", "iou_nucleus"} <= set(table.columns)
    assert list(table[table.kind == "val"].step) == [3, 6]


@pytest.mark.slow
def test_early_stopping(trainset, tmp_path):
    # a learning rate too small to change anything: no validation improves on the first
    config = tiny_config(trainset, tmp_path, max_steps=30, optim={"lr": 1e-12}, validation={"every": 2, "patience": 2})
    result = train(config, progress=False)
    assert result.stopped_early and result.step == 6 and result.best_step == 2


@pytest.mark.slow
def test_resume_refuses_other_settings(trainset, tmp_path):
    train(tiny_config(trainset, tmp_path, max_steps=2), progress=False)
    with pytest.raises(ConfigError, match=r"checkpoint\.pt: written with other settings \(model\)"):
        train(tiny_config(trainset, tmp_path, max_steps=4, model={"features": [4, 16]}), progress=False)
    # --no-resume starts afresh
    assert train(tiny_config(trainset, tmp_path, max_steps=2, model={"features": [4, 16]}), resume=False, progress=False).step == 2


def test_bad_settings(trainset, tmp_path):
    with pytest.raises(ConfigError, match="no training set"):
        train(tiny_config(trainset, tmp_path).model_copy(update={"trainset": None}), progress=False)
    with pytest.raises(ConfigError, match=r"patch_size \[8, 31, 32\] must be a multiple"):
        train(tiny_config(trainset, tmp_path, sampling={"patch_size": [8, 31, 32]}), progress=False)
    with pytest.raises(InputError, match=r"no items in split\(s\) train, val of channel 'GFP'"):
        train(tiny_config(trainset, tmp_path, channel="GFP"), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            train(tiny_config(trainset, tmp_path, device="cuda"), progress=False)
    with pytest.raises(InputError, match=r"item 's0' has voxel size .* set resample: true"):
        train(tiny_config(trainset, tmp_path, voxel_size=[2.0, 1.0, 1.0], resample=False), progress=False)


def test_lr_schedule():
    from pipeline.config.train import OptimConfig

    cos = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=10)
    assert lr_factor(0, cos, 100) == pytest.approx(0.1)
    assert lr_factor(10, cos, 100) == pytest.approx(1.0)
    assert lr_factor(100, cos, 100) == pytest.approx(0.01)
    step = OptimConfig(schedule="step", step_every=5, step_gamma=0.5)
    assert [lr_factor(s, step, 100) for s in (0, 4, 5, 12)] == [1, 1, 0.5, 0.25]


def test_cli_train(trainset, tmp_path):
    import yaml
    from click.testing import CliRunner

    from pipeline.cli.main import cli

    cfg = tiny_config(trainset, tmp_path / "ignored").model_dump(mode="json")
    cfg.pop("trainset")
    path = tmp_path / "train.yaml"
    path.write_text("# model: pipeline.config.train:TrainConfig\n" + yaml.safe_dump(cfg))
    out = tmp_path / "run"
    args = ["-q", "train", "-c", str(path), "--trainset", str(trainset), "--out", str(out), "--max-steps", "3", "--device", "cpu"]
    result = CliRunner().invoke(cli, args, obj={})
    assert result.exit_code == 0, result.output
    assert "trained 3 steps" in result.output and (out / "model" / "model.json").is_file()
    card = json.loads((out / "model" / "model.json").read_text())
    assert card["training"]["steps"] == 3 and "--max-steps 3" in card["command"]
    text = (out / "model" / "MODEL.md").read_text()  # the card in plain words, beside model.json
    assert text.startswith(f"# {card['name']}") and "## Where it is known to fail" in text and "--max-steps 3" in text
    # errors are one line naming the problem
    result = CliRunner().invoke(cli, ["train", "-c", str(path), "--out", str(out)], obj={})
    assert result.exit_code == 1 and "error: trainset: no training set given" in result.output
    path.write_text("max_step: 3\n")
    result = CliRunner().invoke(cli, ["train", "-c", str(path)], obj={})
    assert result.exit_code != 0 and "max_step" in result.output and "unknown key" in result.output


def test_heldout_evaluation(trainset, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli.main import cli
    from pipeline.segment.unet.card import load_card
    from pipeline.train.heldout import evaluate_model

    result = train(tiny_config(trainset, tmp_path, max_steps=3), progress=False)
    scored = evaluate_model(result.model_dir, trainset, split="val")
    assert scored["items"] == {"synthetic": ["s3"]}
    # the same numbers as the training run's own validation of that model
    for key in ("f1_edge", "f1_nucleus", "match_f1"):
        assert scored["metrics"]["synthetic"][key] == pytest.approx(result.best[key])
    run = CliRunner().invoke(cli, ["test-model", str(result.model_dir), "--trainset", str(trainset), "--split", "val", "--update-card"], obj={})
    assert run.exit_code == 0, run.output
    assert "val synthetic: F1 background" in run.output and "instances F1@0.5" in run.output
    card = load_card(result.model_dir)
    assert card.metrics["heldout"]["items"] == {"synthetic": ["s3"]} and "f1_nucleus" in card.metrics["heldout"]["metrics"]["synthetic"]
    assert "Held-out synthetic (split `val`" in (result.model_dir / "MODEL.md").read_text()  # rewritten with the card
    run = CliRunner().invoke(cli, ["test-model", str(result.model_dir), "--trainset", str(trainset)], obj={})
    assert run.exit_code == 1 and "no 'test' items" in run.output
    # --tta: the same items through 8 flipped passes, recorded in the result's settings
    flipped = evaluate_model(result.model_dir, trainset, split="val", tta=8)
    assert flipped["settings"]["tta"] == 8 and flipped["metrics"]["synthetic"]["n_true"] == scored["metrics"]["synthetic"]["n_true"]
    run = CliRunner().invoke(cli, ["test-model", str(result.model_dir), "--trainset", str(trainset), "--split", "val", "--tta", "8"], obj={})
    assert run.exit_code == 0 and "instances F1@0.5" in run.output, run.output


def test_cli_voxel_size_from_the_trainset_unless_given(trainset, tmp_path):
    """No voxel size in the config: the training set's; --voxel-size: that one (items resampled to it)."""
    import yaml
    from click.testing import CliRunner

    from pipeline.cli.main import cli

    cfg = tiny_config(trainset, tmp_path / "ignored", validation={"every": 100, "tune_labeling": False}).model_dump(mode="json")
    assert cfg.pop("voxel_size") is None
    path = tmp_path / "train.yaml"
    path.write_text("# model: pipeline.config.train:TrainConfig\n" + yaml.safe_dump({k: v for k, v in cfg.items() if k != "trainset"}))
    base = ["-q", "train", "-c", str(path), "--trainset", str(trainset), "--max-steps", "1"]
    assert CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "a")]).exit_code == 0
    assert json.loads((tmp_path / "a" / "model" / "model.json").read_text())["voxel_size"] == list(VOXEL)
    result = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "b"), "--voxel-size", "5", "0.62", "0.62"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "b" / "model" / "model.json").read_text())
    assert card["voxel_size"] == [5.0, 0.62, 0.62]
    assert {tuple(i["shape"]) for i in card["training"]["items"]} == {(8, 80, 80)}  # resampled to the finer voxels


def test_tune_labeling_command_updates_the_card(trainset, tmp_path):
    """`spheroid tune-labeling` re-chooses a trained model's labelling on a split and records the grid."""
    from click.testing import CliRunner

    from pipeline.cli.main import cli
    from pipeline.segment.unet.card import load_card
    from pipeline.train.heldout import evaluate_model

    result = train(tiny_config(trainset, tmp_path, max_steps=3), progress=False)
    before = load_card(result.model_dir)
    run = CliRunner().invoke(cli, ["tune-labeling", str(result.model_dir), "--trainset", str(trainset)], obj={})
    assert run.exit_code == 0, run.output
    assert run.output.startswith("val (1 volumes): instance F1@0.5") and "z-trim" in run.output and "card updated" in run.output
    card = load_card(result.model_dir)
    tuned = card.metrics["labeling_tuned_on"]
    assert tuned["split"] == "val" and tuned["items"] == ["s3"] and tuned["match_f1"] >= tuned["match_f1_before"]
    rows = card.metrics["labeling_tuning"]
    assert len(rows) == 123 and rows[0]["seeds"] == before.labeling.seeds  # the card's own settings first
    best = max(rows, key=lambda r: r["match_f1"])
    assert card.labeling.seeds == best["seeds"] and card.labeling.seed_threshold == best["seed_threshold"] and card.labeling.z_trim == best["z_trim"]
    assert card.labeling.min_peak == best["min_peak"] and "min peak" in run.output
    assert card.architecture == before.architecture and card.metrics["best_step"] == before.metrics["best_step"]
    # the card's new labelling is what the model now segments with
    assert evaluate_model(result.model_dir, trainset, split="val")["metrics"]["synthetic"]["match_f1"] == pytest.approx(tuned["match_f1"])
    run = CliRunner().invoke(cli, ["tune-labeling", str(result.model_dir), "--trainset", str(trainset), "--split", "test"], obj={})
    assert run.exit_code == 1 and "no 'test' items" in run.output

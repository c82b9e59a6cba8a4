"""The training loop: patches -> augmentation -> Adam steps, validation, checkpoints, the model.

``train(config)`` reads a training set through :class:`TrainingSet`, trains the
U-Net and writes into ``config.out``::

    checkpoint.pt       resumable state (model, optimiser, schedule, scaler, step, RNG states)
    model/              the best model so far: weights.pt + model.json (the artefact)
    metrics.csv         training-loss and validation rows
    learning_curve.png  loss and validation F1 against the step
    config.yaml         the resolved configuration

SIGTERM and SIGUSR1 (sent by SLURM before a time limit) make the loop save a
checkpoint after the current step and return; running the same command again
resumes, and the result equals an uninterrupted run.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pipeline.progress import progress_bar

from pipeline.config.base import save_config
from pipeline.config.train import TrainConfig
from pipeline.errors import ConfigError
from pipeline.groundtruth.trainset import TrainingSet
from pipeline.segment.unet.card import build_model, load_model, save_model
from pipeline.segment.unet.apply import OVERLAP
from pipeline.segment.unet.predict import resolve_device
from pipeline.train.artefact import RESUME_KEYS, make_card, remove_outputs, write_card
from pipeline.train.augment import augment
from pipeline.train.checkpoint import capture_rng, load_checkpoint, make_deterministic, restore_rng, save_checkpoint
from pipeline.train.data import edges_inside_instances, nucleus_size
from pipeline.train.common import load_split_volumes
from pipeline.train.init import apply_init, load_init_state
from pipeline.train.losses import CombinedLoss, centre_loss
from pipeline.train.records import TensorBoard, plot_learning_curve, write_csv
from pipeline.train.result import TrainResult
from pipeline.train.sampling import PatchSampler
from pipeline.train.schedule import lr_factor
from pipeline.train.validate import higher_is_better, tune_labeling, validate

LOG = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL_DIR = "model"


class _StopOnSignal:
    """Turns SIGTERM / SIGUSR1 into a flag the loop checks after each step."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum
        LOG.warning("received %s: saving a checkpoint after this step", signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _batch(sampler: PatchSampler, rng: np.random.Generator, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    images, targets, distances = [], [], []
    for _ in range(config.sampling.batch_size):
        image, target, dist = sampler.sample(rng)
        if dist is None:
            image, target = augment(image, target, rng, config.augment)
        else:
            image, target, dist = augment(image, target, rng, config.augment, extra=dist)
            distances.append(dist)
        images.append(image)
        targets.append(target)
    dist_batch = torch.from_numpy(np.stack(distances)) if distances else None
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets)), dist_batch


def train(
    config: TrainConfig,
    *,
    resume: bool = True,
    progress: bool = True,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train the U-Net as ``config`` describes (see the module docstring for the outputs).

    Parameters
    ----------
    config : TrainConfig
        Resolved configuration; ``config.trainset`` must be set.
    resume : bool
        Continue from ``out/checkpoint.pt`` when it exists (its training settings must match).
        Otherwise earlier outputs in ``out`` are removed first.
    progress : bool
        Show a tqdm bar.
    on_step : callable, optional
        Called as ``on_step(step, record)`` after every optimisation step, before that step's
        validation (tests, monitoring); ``record`` holds the step's loss and loss terms.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Bad settings (no training set, patch not divisible by the pooling, a checkpoint
        written with other settings).
    InputError
        An unusable training set (no train items, voxel sizes that disagree).
    """
    with _StopOnSignal() as stop:
        return _run(config, stop, resume=resume, progress=progress, on_step=on_step)


def _run(
    config: TrainConfig,
    stop: _StopOnSignal,
    *,
    resume: bool,
    progress: bool,
    on_step: Callable[[int, dict[str, Any]], None] | None,
) -> TrainResult:
    """The body of :func:`train`; signals set ``stop.received`` from the start on."""
    if not config.trainset:
        raise ConfigError("trainset: no training set given (set 'trainset' in the config or pass --trainset)")
    out = Path(config.out)
    trainset = TrainingSet.open(config.trainset)
    patch = config.sampling.patch_size
    device = resolve_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' asked for, but torch finds no CUDA device (use cpu or auto)")
    make_deterministic(device, config.deterministic)
    if config.threads:
        torch.set_num_threads(config.threads)
    rng = _seed_everything(config.seed)
    config, init_state, init_record = apply_init(config, trainset)
    model = build_model(config.model).to(device)
    if init_state is not None:
        load_init_state(model, init_state)
    # channels-last 3D: ~30 % faster steps on CPU (oneDNN), the same arithmetic up to rounding
    model = model.to(memory_format=torch.channels_last_3d)
    bad = [p for p, d in zip(patch, model.divisor) if p % d]
    if bad:
        raise ConfigError(f"sampling.patch_size {patch} must be a multiple of the network's pooling {list(model.divisor)} per axis")
    _, voxel_size, train_vols, val_vols = load_split_volumes(config, patch, centre=config.model.centre)
    if not val_vols:
        LOG.warning("%s: no 'val' items: no validation, the last weights become the model", trainset.root)
    size = nucleus_size(train_vols, voxel_size)
    if config.labeling.include_edge is None:
        inner = edges_inside_instances(train_vols)
        LOG.info("edge voxels lie %s the instances: predicted instances %s them", "inside" if inner else "outside", "keep" if inner else "drop")
        config = config.model_copy(update={"labeling": config.labeling.model_copy(update={"include_edge": inner})})

    loss_fn = CombinedLoss(config.loss, config.model.n_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config.optim, config.max_steps))
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    sampler = PatchSampler(train_vols, patch, config.sampling.foreground_fraction, config.sampling.edge_fraction)

    state: dict[str, Any] = {
        "step": 0, "best_value": None, "best_step": None, "best": {}, "bad_validations": 0, "elapsed": 0.0,
        "history": [], "running": [], "validated_step": None,
    }
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        mine = {k: v for k, v in config.model_dump(mode="json").items() if k in RESUME_KEYS}
        try:  # fields added since the checkpoint was written take their defaults
            saved = TrainConfig.model_validate(ckpt["config"]).model_dump(mode="json")
        except ValueError:
            saved = ckpt["config"]
        theirs = {k: v for k, v in saved.items() if k in RESUME_KEYS}
        if mine != theirs:
            diff = sorted(k for k in RESUME_KEYS if mine.get(k) != theirs.get(k))
            raise ConfigError(f"{ckpt_path}: written with other settings ({', '.join(diff)}); use --no-resume or another --out")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        restore_rng(ckpt["rng"], rng)
        state = ckpt["loop"]
        LOG.info("resumed %s at step %d", ckpt_path, state["step"])
    else:
        remove_outputs(out, (CHECKPOINT, MODEL_DIR, "metrics.csv", "learning_curve.png"))
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")

    metric = config.validation.metric
    tile = config.validation.tile or patch
    board = TensorBoard(out / "tensorboard", config.tensorboard)
    summary = {
        "train": train_vols, "val": val_vols, "trainset": trainset, "diameter": size[0] if size else None,
        "diameters": size[1] if size else None, "init_from": init_record,
    }

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_path,
            {
                "config": config.model_dump(mode="json"),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": capture_rng(rng),
                "loop": state,
            },
        )

    def write_model() -> None:
        save_model(model, make_card(config, voxel_size, summary, state, device), out / MODEL_DIR)

    def is_validation_step(step: int) -> bool:
        return step % config.validation.every == 0 or step == config.max_steps

    def run_validation(step: int) -> dict[str, Any]:
        metrics = validate(
            model, val_vols, tile=tile, overlap=config.validation.overlap, device=device, labeling=config.labeling,
            voxel_size=voxel_size, match_threshold=config.validation.match_threshold, loss=loss_fn,
        )
        model.train()
        state["validated_step"] = step
        state["history"].append({"kind": "val", "step": step, **metrics, "time_s": round(state["elapsed"], 2)})
        board.log("val", metrics, step)
        value = metrics[metric]
        best = state["best_value"]
        if best is None or (value > best if higher_is_better(metric) else value < best):
            state.update(best_value=float(value), best_step=step, best=metrics, bad_validations=0)
            write_model()
            LOG.info("step %d: %s %.4f (best so far)", step, metric, value)
        else:
            state["bad_validations"] += 1
            LOG.info("step %d: %s %.4f (best %.4f at step %d)", step, metric, value, best, state["best_step"])
        return metrics

    interrupted = stopped_early = False
    started = time.perf_counter()
    cpu_started = time.process_time()
    elapsed0 = state["elapsed"]
    cpu0 = state.setdefault("cpu_s", 0.0)
    running: list[float] = state.setdefault("running", [])
    model.train()
    step = state["step"]
    if val_vols and step and is_validation_step(step) and state.get("validated_step") != step and stop.received is None:
        run_validation(step)  # the run was interrupted just before this validation
    bar = progress_bar(total=config.max_steps, initial=state["step"], desc="train", unit="step", disable=not progress)
    while state["step"] < config.max_steps:
        if stop.received is not None:  # a signal before the first step
            interrupted = True
            checkpoint()
            break
        images, targets, distances = _batch(sampler, rng, config)
        images, targets = images.to(device).contiguous(memory_format=torch.channels_last_3d), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(images)
        n_cls = config.model.n_classes
        loss, parts = loss_fn(logits[:, :n_cls].float(), targets)
        if distances is not None:
            dist_loss = centre_loss(logits[:, n_cls].float(), distances.to(device))
            loss = loss + config.centre_weight * dist_loss
            parts["centre"] = float(dist_loss.detach())
        if not torch.isfinite(loss):
            raise ConfigError(f"optim.lr: the loss became {float(loss)} at step {state['step'] + 1}; lower the learning rate")
        scaler.scale(loss).backward()
        if config.optim.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        state["step"] += 1
        step = state["step"]
        running.append(float(loss.detach()))
        record = {"loss": running[-1], **parts}
        state["elapsed"] = elapsed0 + time.perf_counter() - started
        state["cpu_s"] = cpu0 + time.process_time() - cpu_started
        if step % config.log_every == 0 or step == config.max_steps:
            row = {"kind": "train", "step": step, "loss": float(np.mean(running)), "lr": scheduler.get_last_lr()[0], "time_s": round(state["elapsed"], 2)}
            state["history"].append(row)
            board.log("train", row, step)
            running.clear()
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        if on_step is not None:
            on_step(step, record)
        if val_vols and is_validation_step(step) and stop.received is None:
            run_validation(step)
            if config.validation.patience and state["bad_validations"] >= config.validation.patience:
                stopped_early = True
        if stop.received is not None:
            interrupted = True
        if interrupted or stopped_early or step % config.checkpoint_every == 0 or step == config.max_steps:
            checkpoint()
        if interrupted or stopped_early:
            break
    bar.close()
    board.close()

    if not interrupted:
        if not val_vols:
            write_model()
        elif (out / MODEL_DIR).exists():
            best_model, _ = load_model(out / MODEL_DIR, device=device)
            if config.validation.tune_labeling:
                tuned, rows = tune_labeling(
                    best_model, val_vols, tile=None, overlap=OVERLAP, precision="auto", device=device, labeling=config.labeling,
                    voxel_size=voxel_size, match_threshold=config.validation.match_threshold,
                )
                config = config.model_copy(update={"labeling": tuned})
                state["labeling_tuning"] = rows
            # the card's metrics are those of the shipped weights with the card's labelling, tiled and
            # computed as `spheroid segment` does (training-time validations stay in "final" and metrics.csv)
            final = validate(
                best_model, val_vols, tile=None, overlap=OVERLAP, precision="auto", device=device, labeling=config.labeling,
                voxel_size=voxel_size, match_threshold=config.validation.match_threshold, loss=loss_fn,
            )
            state["best"] = {**final, "computed_with": "the card's labeling, inference tiles and precision"}
            # the final card (time, final metrics) beside the best weights
            write_card(make_card(config, voxel_size, summary, state, device), out / MODEL_DIR)
    write_csv(state["history"], out / "metrics.csv")
    plot_learning_curve(
        state["history"], out / "learning_curve.png", metric=metric, best_step=state["best_step"] if val_vols else None,
        title=f"{config.name}: learning curve ({state['step']} steps)",
    )
    if interrupted:
        LOG.warning("interrupted at step %d; checkpoint saved to %s: run the same command again to resume", state["step"], ckpt_path)
    elif stopped_early:
        LOG.info("early stop at step %d: no better %s for %d validations", state["step"], metric, config.validation.patience)
    return TrainResult(
        out=out,
        model_dir=out / MODEL_DIR,
        step=state["step"],
        best_step=state["best_step"],
        best=dict(state["best"]),
        interrupted=interrupted,
        stopped_early=stopped_early,
        time_s=float(state["elapsed"]),
        history=list(state["history"]),
    )

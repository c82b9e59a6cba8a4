"""Train StarDist 3D on a training set (``spheroid train`` with ``backend: stardist``).

Same training set, split and voxel-size handling as the U-Net (items resampled to the
model's voxel size, images percentile-normalised with ``normalization``). StarDist's own
training (Keras) runs ``max_steps`` steps in epochs of ``stardist.steps_per_epoch``,
keeping the weights of the best validation loss; the probability and NMS thresholds
are then optimised on the val volumes and the model is scored there with our matching.
The model folder is StarDist's (``config.json``, ``thresholds.json``, ``weights_best.h5``)
plus the card ``model.json``.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np

from pipeline.config.train import TrainConfig
from pipeline.errors import ConfigError
from pipeline.segment.backends.base import package_version
from pipeline.segment.backends.stardist import FILES, WEIGHTS, StarDistCard, import_stardist, limit_tf_threads, n_tiles, quiet
from pipeline.segment.card import CARD_NAME, write_card_json
from pipeline.train.common import card_fields, fresh_folder, load_split_volumes, score, unpadded
from pipeline.train.init import check_backend, init_record

LOG = logging.getLogger(__name__)

MODEL_DIR = "model"


def make_augmenter(config: TrainConfig, seed: int):
    """``augmenter(x, y)`` for StarDist: flips in y/x, 90-degree turns of square patches, intensity."""
    rng = np.random.default_rng(seed)
    aug = config.augment

    def augmenter(x: np.ndarray, y: np.ndarray):
        if aug.flip:
            for axis in (1, 2):
                if rng.random() < 0.5:
                    x, y = np.flip(x, axis), np.flip(y, axis)
        if aug.rotate90 and x.shape[1] == x.shape[2]:
            k = int(rng.integers(4))
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
        x = np.array(x, dtype=np.float32)
        x *= np.float32(rng.uniform(*aug.intensity_scale))
        x += np.float32(rng.uniform(*aug.intensity_shift))
        if aug.noise_std > 0:
            x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(rng.uniform(0, aug.noise_std))
        return x, np.ascontiguousarray(y)

    return augmenter


def train_stardist(config: TrainConfig, *, progress: bool = True):
    """Train StarDist 3D as ``config`` says; the model goes to ``config.out/model``.

    Returns
    -------
    pipeline.train.loop.TrainResult
    """
    from pipeline.train.result import TrainResult

    sd = config.stardist
    if config.threads:
        limit_tf_threads(config.threads)
    models = import_stardist()
    from stardist import Rays_GoldenSpiral, calculate_extents

    trainset, voxel, train_vols, val_vols = load_split_volumes(config, sd.patch_size)
    if not val_vols:
        raise ConfigError(f"{trainset.root}: StarDist needs 'val' items (for its validation loss and thresholds)")
    init = None
    if config.init_from:
        check_backend(config)
        init = Path(config.init_from)
    X = [v.image[0] for v in train_vols]
    Y = [v.instances for v in train_vols]
    Xv = [v.image[0] for v in val_vols]
    Yv = [v.instances for v in val_vols]
    extents = calculate_extents([unpadded(v)[1] for v in train_vols], np.median)
    anisotropy = tuple(float(a) for a in (sd.anisotropy or (np.max(extents) / np.maximum(extents, 1e-6))))
    epochs = max(1, math.ceil(config.max_steps / sd.steps_per_epoch))
    conf = models.Config3D(
        rays=Rays_GoldenSpiral(sd.n_rays, anisotropy=anisotropy), grid=tuple(sd.grid), anisotropy=anisotropy, use_gpu=False,
        n_channel_in=1, train_patch_size=tuple(sd.patch_size), train_batch_size=sd.batch_size, train_learning_rate=sd.lr,
        train_epochs=epochs, train_steps_per_epoch=sd.steps_per_epoch, train_tensorboard=False,
        unet_n_depth=sd.unet_n_depth, unet_n_filter_base=sd.unet_n_filter_base,
    )
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = fresh_folder(out / MODEL_DIR)
    started = time.perf_counter()
    cpu_started = time.process_time()
    with quiet(), warnings.catch_warnings():
        model = models.StarDist3D(conf, name=MODEL_DIR, basedir=str(out))
        if init is not None:
            model.load_weights(str((init / WEIGHTS).resolve()))
        try:
            warnings.filterwarnings("ignore", message=".*shuffle=True. was passed", category=UserWarning)  # Keras on StarDist's generator
            fit = model.train(X, Y, validation_data=(Xv, Yv), augmenter=make_augmenter(config, config.seed), seed=config.seed,
                              epochs=epochs, steps_per_epoch=sd.steps_per_epoch)
        except ValueError as exc:
            raise ConfigError(f"stardist: {exc}") from None
        train_time = time.perf_counter() - started
        train_cpu = time.process_time() - cpu_started
        model.optimize_thresholds(
            [unpadded(v)[0] for v in val_vols], [unpadded(v)[1] for v in val_vols], nms_threshs=list(sd.nms_thresholds),
            predict_kwargs={"n_tiles": n_tiles(Xv[0].shape), "show_tile_progress": False},
            optimize_kwargs={"maxiter": sd.threshold_iterations, "verbose": False},
        )
    prob, nms = float(model.thresholds.prob), float(model.thresholds.nms)
    best_prob = max(1e-3, min(prob, 0.999))

    def segment(image):
        with quiet():
            labels, _ = model.predict_instances(image, n_tiles=n_tiles(image.shape), prob_thresh=best_prob, nms_thresh=nms, show_tile_progress=False)
        return labels

    val_metrics = score(segment, val_vols, config.validation.match_threshold)
    LOG.info("StarDist: %d steps in %.0f s; val instance F1 %.3f (%d true, %d predicted)",
             epochs * sd.steps_per_epoch, train_time, val_metrics["match_f1"], val_metrics["n_true"], val_metrics["n_pred"])
    losses = fit.history if fit is not None else {}
    history = [
        {"kind": "train", "step": (i + 1) * sd.steps_per_epoch, "loss": float(v), "val_loss": float(losses.get("val_loss", [np.nan] * (i + 1))[i])}
        for i, v in enumerate(losses.get("loss", []))
    ]
    for name in [p.name for p in folder.iterdir() if p.suffix == ".h5" and p.name != WEIGHTS]:
        (folder / name).unlink()  # weights_last / weights_now: the card names the best
    card = StarDistCard(
        **card_fields(
            config, trainset=trainset, voxel_size=voxel, train_vols=train_vols, val_vols=val_vols, steps=epochs * sd.steps_per_epoch,
            time_s=train_time, cpu_s=train_cpu, device="cpu", libraries={k: package_version(k) for k in ("stardist", "csbdeep", "tensorflow-cpu", "keras")},
            metrics={"selected_by": "val loss (StarDist)", "best": val_metrics, "final": val_metrics,
                     "thresholds": {"prob": best_prob, "nms": nms}},
            init_from=init_record(init, _card_of(init), [CARD_NAME, *FILES]) if init else None,
        ),
        n_rays=sd.n_rays, grid=list(sd.grid), anisotropy=list(anisotropy), patch_size=list(sd.patch_size), prob_thresh=best_prob, nms_thresh=nms,
    )
    write_card_json(card, folder)
    return TrainResult(out=out, model_dir=folder, step=epochs * sd.steps_per_epoch, best_step=None, best=val_metrics, interrupted=False,
                       stopped_early=False, time_s=train_time, history=history)


def _card_of(folder: Path):
    from pipeline.segment.card import validate_card

    return validate_card(StarDistCard, folder)


"""Train Cellpose on a training set (``spheroid train`` with ``backend: cellpose``).

Cellpose's network is 2D; its 3D mode runs it on the y-x, z-x and z-y views of a
volume made isotropic (``anisotropy``) and follows the averaged flows. So a fresh
network (no pretrained weights can be had here) is trained on the y-x slices of the
training volumes at the model's voxel size and, with ``ortho_slices``, on z-x and z-y
slices of the volumes resampled to isotropic voxels. ``diam_mean`` is set to the
training nuclei's diameter in pixels, so no rescaling happens at inference either.
Training uses Cellpose's ``train_seg``; the cell-probability threshold is then chosen
on the val volumes (3D) and the model is scored there with our matching.

Cellpose must train a freshly built network (one built after an ``eval`` in the same
process raised MKLDNN errors; see the project's STACK notes), which this does.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np

from pipeline.config.train import TrainConfig
from pipeline.errors import ConfigError, InputError
from pipeline.segment.backends.base import package_version
from pipeline.segment.backends.cellpose import (
    WEIGHTS, CellposeCard, build_cellpose, cellpose_eval, cellpose_major, import_cellpose, masks_from_flows,
)
from pipeline.segment.card import CARD_NAME, validate_card, write_card_json
from pipeline.segment.resample import resample_image, resample_labels, zoomed_shape
from pipeline.train.common import card_fields, fresh_folder, load_split_volumes, score_labels, unpadded
from pipeline.train.init import check_backend, init_record

LOG = logging.getLogger(__name__)

MODEL_DIR = "model"
#: At most this many z-x and z-y slices are taken per volume and view (evenly spaced).
MAX_ORTHO = 48


def slices_2d(image: np.ndarray, labels: np.ndarray, anisotropy: float, *, ortho: bool, min_masks: int) -> tuple[list, list]:
    """2D training pairs of one volume: its y-x slices and (``ortho``) z-x / z-y slices at isotropic scale."""
    images, masks = [], []

    def take(img2, lab2):
        if len(np.unique(lab2)) - 1 >= max(1, min_masks):
            # copies: Cellpose renumbers the label slices in place (dynamics.labels_to_flows), which
            # would rewrite the volumes' 3D instances through a view (val scores on corrupted truth)
            images.append(np.array(img2, np.float32, copy=True))
            masks.append(np.array(lab2, np.uint32, copy=True))

    for z in range(image.shape[0]):
        take(image[z], labels[z])
    if ortho and image.shape[0] > 1:
        shape = zoomed_shape(image.shape, (anisotropy, 1.0, 1.0))
        iso, iso_lab = resample_image(image, shape), resample_labels(labels, shape)
        for axis in (1, 2):
            n = iso.shape[axis]
            for i in np.unique(np.linspace(0, n - 1, min(n, MAX_ORTHO)).astype(int)):
                take(np.take(iso, i, axis=axis), np.take(iso_lab, i, axis=axis))
    return images, masks


def train_cellpose(config: TrainConfig, *, progress: bool = True):
    """Train a Cellpose network as ``config`` says; the model goes to ``config.out/model``.

    Returns
    -------
    pipeline.train.loop.TrainResult
    """
    import torch

    from pipeline.train.result import TrainResult

    cp = config.cellpose
    if cp.bsize % 16:
        raise ConfigError(f"cellpose.bsize: {cp.bsize} is not a multiple of 16")
    train_mod = import_cellpose("cellpose.train")
    utils = import_cellpose("cellpose.utils")
    if config.threads:
        torch.set_num_threads(config.threads)
    trainset, voxel, train_vols, val_vols = load_split_volumes(config)
    anisotropy = float(voxel[0] / voxel[1])
    images, masks = [], []
    for vol in train_vols:
        img, lab = slices_2d(*unpadded(vol), anisotropy, ortho=cp.ortho_slices, min_masks=cp.min_masks)
        images += img
        masks += lab
    if not images:
        raise InputError(f"{trainset.root}: no training slice holds {cp.min_masks} nuclei")
    yx = [m for m in masks[: sum(v.shape[0] for v in train_vols)] if m.any()] or masks
    diam = float(np.median([utils.diameters(m)[0] for m in yx]))
    test_images, test_masks = [], []
    for vol in val_vols:
        img, lab = slices_2d(*unpadded(vol), anisotropy, ortho=False, min_masks=cp.min_masks)
        test_images += img
        test_masks += lab
    init = None
    if config.init_from:
        check_backend(config)
        init = Path(config.init_from)
        init_card = validate_card(CellposeCard, init)
        diam = init_card.diam_px
    device = "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu"
    model = build_cellpose(None, (init / WEIGHTS) if init else None, device=device, diam_px=diam)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = fresh_folder(out / MODEL_DIR)
    work = fresh_folder(out / "cellpose-work")
    work.mkdir()
    epochs = max(1, math.ceil(config.max_steps / cp.steps_per_epoch))
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    kwargs = dict(
        train_data=images, train_labels=masks, test_data=test_images or None, test_labels=test_masks or None,
        batch_size=cp.batch_size, learning_rate=cp.lr, weight_decay=cp.weight_decay, n_epochs=epochs, normalize=False,
        save_path=str(work), nimg_per_epoch=cp.batch_size * cp.steps_per_epoch, bsize=cp.bsize, min_train_masks=cp.min_masks,
        model_name="cellpose", save_every=max(epochs, 1),
    )
    if cellpose_major() < 4:
        kwargs["channels"] = [0, 0]
    LOG.info("Cellpose: %d training slices (%d val), diameter %.1f px, %d epochs of %d steps", len(images), len(test_images), diam, epochs, cp.steps_per_epoch)
    started = time.perf_counter()
    cpu_started = time.process_time()
    saved, train_losses, test_losses = train_mod.train_seg(model.net, **kwargs)[:3]
    train_time = time.perf_counter() - started
    train_cpu = time.process_time() - cpu_started
    folder.mkdir(parents=True)
    shutil.copy2(saved, folder / WEIGHTS)
    shutil.rmtree(work, ignore_errors=True)
    card = CellposeCard(
        name=config.name, voxel_size=list(voxel), channels=["Hoechst"], cellpose_major=cellpose_major() or 3, diam_px=round(diam, 3),
        anisotropy=anisotropy, bsize=cp.bsize, min_size=cp.min_size,
    )
    fresh = build_cellpose(card, folder / WEIGHTS, device=device)  # a fresh network for eval
    flows = [cellpose_eval(fresh, card, unpadded(v)[0], masks=False) for v in val_vols]  # one network run per volume
    best_t, best = cp.cellprob_thresholds[0], None
    for t in cp.cellprob_thresholds:
        labels = [masks_from_flows(dp, prob, card, t) for dp, prob in flows]
        metrics = score_labels(labels, val_vols, config.validation.match_threshold) if val_vols else None
        LOG.info("Cellpose: cellprob threshold %.2f -> val instance F1 %s", t, metrics and f"{metrics['match_f1']:.3f}")
        if metrics is not None and (best is None or metrics["match_f1"] > best["match_f1"]):
            best_t, best = t, metrics
    steps = epochs * cp.steps_per_epoch
    history = [{"kind": "train", "step": (i + 1) * cp.steps_per_epoch, "loss": float(v), **({"val_loss": float(test_losses[i])} if test_losses[i] else {})}
               for i, v in enumerate(train_losses)]
    card = CellposeCard(
        **card_fields(
            config, trainset=trainset, voxel_size=voxel, train_vols=train_vols, val_vols=val_vols, steps=steps, time_s=train_time, cpu_s=train_cpu,
            device=device, libraries={k: package_version(k) for k in ("cellpose", "torch")},
            metrics={"selected_by": "match_f1 (cellprob threshold)", "best": best or {}, "final": best or {}},
            init_from=init_record(init, init_card, [CARD_NAME, WEIGHTS]) if init else None,
        ),
        cellpose_major=cellpose_major() or 3, diam_px=round(diam, 3), anisotropy=anisotropy, bsize=cp.bsize,
        cellprob_threshold=best_t, min_size=cp.min_size,
    )
    write_card_json(card, folder)
    LOG.info("Cellpose: %d steps in %.0f s; val instance F1 %s", steps, train_time, best and f"{best['match_f1']:.3f}")
    return TrainResult(out=out, model_dir=folder, step=steps, best_step=None, best=best or {}, interrupted=False,
                       stopped_early=False, time_s=train_time, history=history)

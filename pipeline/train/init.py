"""Fine-tuning: start a training run from the weights of an existing model folder (``init_from``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.config.train import TrainConfig
from pipeline.errors import ConfigError
from pipeline.segment.card import CARD_NAME, CardBase, card_backend, folder_digest

LOG = logging.getLogger(__name__)

SAME_SIZE = 1.25

ADAPTABLE = ("norm", "centre")
"""U-Net settings a fine-tuning config may change from the ``init_from`` card's (set explicitly)."""
"""Training nuclei within this factor of the ``init_from`` model's nucleus diameter train at its voxel size."""


def init_record(folder: str | Path, card: CardBase, files: list[str]) -> dict[str, Any]:
    """What the new card keeps of the model it started from (its own provenance chained)."""
    training = card.training or {}
    return {
        "path": str(Path(folder).resolve()),
        "name": card.name,
        "format": card.format,
        "sha256": folder_digest(folder, files),
        "created": card.created,
        "command": card.command,
        "trainset": training.get("trainset"),
        "steps": training.get("steps"),
        "items": [item.get("id") for item in training.get("items", [])],
        **({"init_from": training["init_from"]} if training.get("init_from") else {}),
    }


def check_backend(config: TrainConfig) -> str:
    """The backend of ``config.init_from``'s card; a :class:`ConfigError` when it is not ``config.backend``."""
    backend = card_backend(config.init_from)
    if backend != config.backend:
        raise ConfigError(f"init_from: {config.init_from} is a {backend} model; it cannot start a {config.backend} run")
    return backend


def scaled_voxel_size(card: CardBase, trainset, channel: str | None = None) -> list[float]:
    """The voxel size a fine-tuning run trains at: the card's, scaled by nucleus size.

    Where the training set's nuclei (measured at each item's own voxel size) differ from the
    card's nucleus diameter by more than :data:`SAME_SIZE`, the voxel size is the card's
    times their ratio: the items are then resampled so that their nuclei span as many voxels
    as the model was trained on (as ``segment --diameter`` does at inference). The new
    card records that voxel size and the data's diameter, so it segments such data as is.
    """
    voxel = [float(v) for v in card.voxel_size]
    model_d = getattr(card, "nucleus_diameter_um", None)
    if not model_d or trainset is None:
        return voxel
    from pipeline.train.data import items_nucleus_diameter

    data_d = items_nucleus_diameter(trainset, ("train", "val"), channel)
    if not data_d:
        return voxel
    ratio = data_d / float(model_d)
    if 1 / SAME_SIZE <= ratio <= SAME_SIZE:
        return voxel
    scaled = [round(v * ratio, 6) for v in voxel]
    LOG.warning(
        "init_from: the training nuclei (%.1f um) are %.2fx the model's (%.1f um): training at voxel size %s um instead of %s "
        "(set voxel_size to choose another)", data_d, ratio, model_d, scaled, voxel,
    )
    return scaled


def apply_init(config: TrainConfig, trainset=None) -> tuple[TrainConfig, dict | None, dict | None]:
    """For a U-Net run: ``(config, state_dict, record)`` with the architecture, input normalisation
    and (unless set) voxel size of the ``init_from`` model, scaled by nucleus size to the training
    set (:func:`scaled_voxel_size`); ``(config, None, None)`` without one.

    A ``model.norm`` or ``model.centre`` the config sets explicitly replaces the card's (e.g.
    ``group`` -> ``batch``, whose output does not depend on the tiling, or a centre output added):
    :func:`load_init_state` then starts the convolutions, and the affine scale and shift where
    both normalisations have them, from the card's weights, and the new parameters afresh."""
    if not config.init_from:
        return config, None, None
    import torch

    from pipeline.segment.unet.card import load_card

    check_backend(config)
    card = load_card(config.init_from)
    weights = Path(config.init_from) / card.weights
    state = torch.load(weights, map_location="cpu", weights_only=True)
    architecture = card.architecture
    changes = {key: getattr(config.model, key) for key in ADAPTABLE
               if key in config.model.model_fields_set and getattr(config.model, key) != getattr(card.architecture, key)}
    if changes:
        # another normalisation (its layers start afresh) or a centre output added or dropped (the
        # head's extra row starts afresh); everything else from the card's weights
        architecture = architecture.model_copy(update=changes)
        LOG.info("init_from %s: %s changed from the card's (new parameters learnt afresh)", config.init_from,
                 ", ".join(f"{k} {getattr(card.architecture, k)} -> {v}" for k, v in changes.items()))
    if config.model != architecture:
        LOG.info("init_from %s: architecture taken from its card", config.init_from)
    update: dict[str, Any] = {"model": architecture, "normalization": card.normalization}
    if config.voxel_size is None:
        update["voxel_size"] = scaled_voxel_size(card, trainset, config.channel)
    record = init_record(config.init_from, card, [CARD_NAME, card.weights])
    LOG.info("fine-tuning from %s (%s)", config.init_from, card.name)
    return config.model_copy(update=update), state, record


def load_init_state(model, state: dict) -> None:
    """Load an ``init_from`` state dict into ``model``.

    Exact when the architectures agree. After a change of normalisation or of the centre output
    (:func:`apply_init`) only the normalisation layers and the output layer may differ: tensors of
    the same name and shape are taken, the output layer's class rows are carried over, the rest
    (batch normalisation's running statistics, the centre row) keep the model's initial values.
    Any other mismatch (a convolution missing or of another shape) is an error.
    """
    own = model.state_dict()
    if set(own) == set(state) and all(own[k].shape == state[k].shape for k in own):
        model.load_state_dict(state)
        return
    norm_names = {name for name, module in model.named_modules() if "Norm" in type(module).__name__}
    taken, fresh = {}, []
    for key, value in own.items():
        if key in state and state[key].shape == value.shape:
            taken[key] = state[key]
        elif key.startswith("head.") and key in state and state[key].shape[1:] == value.shape[1:]:
            # the output layer with a centre map added or dropped: the classes' rows carried over
            rows = min(value.shape[0], state[key].shape[0])
            taken[key] = value.clone()
            taken[key][:rows] = state[key][:rows]
            if value.shape[0] > rows:
                fresh.append(key)
        elif key.rsplit(".", 1)[0] in norm_names:
            taken[key] = value
            fresh.append(key)
        else:
            raise ConfigError(f"init_from: weight {key!r} is missing or of another shape in the model it starts from")
    model.load_state_dict(taken)
    if fresh:
        LOG.info("init_from: %d tensors start afresh (%s, ...)", len(fresh), fresh[0])

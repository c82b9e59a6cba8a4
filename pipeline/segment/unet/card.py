"""The U-Net artefact: a folder with ``weights.pt`` (a state dict) and a ``model.json`` model card.

The card states what the model expects of its input (voxel size, channels,
percentile normalisation), the architecture it is built from, what it was trained
on and how well it did. Weights are read with ``torch.load(weights_only=True)``,
so a model folder cannot run code when loaded.
"""

from __future__ import annotations

import json
import logging
import io
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from pipeline.config.train import LabelingConfig, UNetConfig
from pipeline.errors import InputError
from pipeline.io.atomic import write_atomic
from pipeline.preprocess.normalize import percentile_normalize
from pipeline.segment.card import CARD_NAME, CardBase, validate_card
from pipeline.segment.unet.network import UNet3D, fold_batchnorm

LOG = logging.getLogger(__name__)

WEIGHTS_NAME = "weights.pt"
CLASSES = ("background", "edge", "nucleus")


class ModelCard(CardBase):
    """What a trained U-Net is, what it expects and how it was made (``model.json``)."""

    format: Literal["spheroid-unet"] = "spheroid-unet"
    """Marks the file as a spheroid U-Net card."""
    format_version: Literal[1] = 1
    """Version of this card layout."""
    architecture: UNetConfig
    """All keyword arguments of ``UNet3D``."""
    classes: list[str] = Field(default_factory=lambda: list(CLASSES))
    """Class names in output order."""
    patch_size: list[int] = Field(min_length=3, max_length=3)
    """Training patch size (z, y, x)."""
    tile: list[int] = Field(min_length=3, max_length=3)
    """Smallest sliding-window tile (z, y, x) at inference (see
    :func:`pipeline.segment.unet.apply.inference_tile`: the one rule of segment and test-model)."""
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    """Instance-labelling parameters; the held-out metrics in ``metrics`` were computed with them."""
    weights: str = WEIGHTS_NAME
    """File name of the state dict beside the card."""

    @model_validator(mode="after")
    def _consistent(self) -> "ModelCard":
        if len(self.classes) != self.architecture.n_classes:
            raise ValueError(f"{len(self.classes)} class names for a network with {self.architecture.n_classes} outputs")
        if len(self.channels) != self.architecture.in_channels:
            raise ValueError(f"{len(self.channels)} channel names for a network with {self.architecture.in_channels} inputs")
        return self

    def check_input(
        self,
        *,
        voxel_size: Sequence[float] | None = None,
        n_channels: int | None = None,
        channels: Sequence[str] | None = None,
        source: str = "input",
    ) -> None:
        """Raise :class:`InputError` when data cannot be given to the model.

        Parameters
        ----------
        voxel_size : sequence of float, optional
            The data's voxel size (z, y, x) in um: three positive numbers (any other
            size than the card's is resampled to it, see :mod:`pipeline.segment.resample`).
        n_channels : int, optional
            Channels the data provides.
        channels : sequence of str, optional
            The data's channel names; each of the model's channels must be among them.
        source : str
            What the data is (a file name), for the message.
        """
        if n_channels is not None and n_channels != len(self.channels):
            raise InputError(
                f"{source}: model {self.name!r} takes {len(self.channels)} channel(s) {self.channels}, the data has {n_channels}"
            )
        if channels is not None:
            missing = [c for c in self.channels if not set(c.split("|")) & set(channels)]
            if missing:
                raise InputError(
                    f"{source}: model {self.name!r} needs channel(s) {missing}, the data has {list(channels)}; "
                    "name the nuclear channel to use with --channel"
                )
        if voxel_size is not None:
            check_voxel_size(voxel_size, source)

    def normalize(self, volume: np.ndarray) -> np.ndarray:
        """Percentile-normalise one ``(z, y, x)`` volume as the model expects (float32)."""
        n = self.normalization
        return percentile_normalize(volume, n.low, n.high, clip=n.clip)


def check_voxel_size(voxel_size: Sequence[float], source: str) -> tuple[float, float, float]:
    """Three positive finite numbers (z, y, x), else an :class:`InputError` naming ``source``."""
    try:
        values = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise InputError(f"{source}: voxel size must be three numbers (z, y, x) in um, got {voxel_size!r}") from None
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(f"{source}: voxel size must be three positive numbers (z, y, x) in um, got {tuple(voxel_size)}")
    return values


def build_model(architecture: UNetConfig | dict[str, Any]) -> UNet3D:
    """A fresh ``UNet3D`` from an architecture config."""
    if isinstance(architecture, dict):
        architecture = UNetConfig.model_validate(architecture)
    return UNet3D(**architecture.model_dump())


def save_model(model: torch.nn.Module, card: ModelCard, folder: str | Path) -> Path:
    """Write ``weights.pt`` and ``model.json`` into ``folder`` (each atomically).

    Returns
    -------
    pathlib.Path
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(folder / card.weights, buffer.getvalue())
    text = json.dumps(card.model_dump(mode="json"), indent=2) + "\n"
    write_atomic(folder / CARD_NAME, text)
    return folder


def load_card(folder: str | Path) -> ModelCard:
    """Read and validate ``folder/model.json`` as a U-Net card.

    Raises
    ------
    InputError
        Naming the path when the folder or card is missing, unreadable, invalid or of another backend.
    """
    return validate_card(ModelCard, folder)


def load_model(folder: str | Path, *, device: str | torch.device = "cpu") -> tuple[UNet3D, ModelCard]:
    """Load a model folder: the card, the network it describes and its weights (``weights_only=True``).

    Parameters
    ----------
    folder : str or Path
        Folder with ``model.json`` and the weights file it names.
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    (UNet3D, ModelCard)
        The network in eval mode (for inference: batch normalisations are folded into their
        convolutions), and its card.

    Raises
    ------
    InputError
        When the card or weights are missing or do not fit each other.
    """
    card = load_card(folder)
    weights = Path(folder) / card.weights
    if not weights.is_file():
        raise InputError(f"{weights}: weights file not found")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        raise InputError(f"{weights}: cannot load weights ({type(exc).__name__}: {exc})") from None
    model = build_model(card.architecture)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"{weights}: weights do not fit the architecture in {CARD_NAME} ({first[1].strip() if len(first) > 1 else first[0]})") from None
    model.eval()
    fold_batchnorm(model)  # inference only: batch normalisation folded into its convolutions
    model.to(device)
    LOG.info("loaded model %r from %s", card.name, folder)
    return model, card


def default_model_path() -> Path:
    """Folder of the default U-Net shipped with the package (``pipeline/data/models/unet-default``)."""
    return Path(str(resources.files("pipeline") / "data" / "models" / "unet-default"))


def load_default_model(*, device: str | torch.device = "cpu") -> tuple[UNet3D, ModelCard]:
    """Load the shipped default model (see :func:`default_model_path`)."""
    return load_model(default_model_path(), device=device)

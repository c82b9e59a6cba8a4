"""The model card every segmentation backend writes beside its weights (``model.json``).

A model folder holds ``model.json`` and the backend's weights. The card's ``format``
names the backend (``spheroid-unet``, ``spheroid-stardist``, ``spheroid-cellpose``);
every card states what the model expects of its input (voxel size, nucleus diameter,
channels, percentile normalisation), how it was trained and how well it did. At
segment time each volume is resampled to the card's voxel size (scaled by the ratio of
the data's nucleus diameter to the card's), so one model serves any voxel size.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from pipeline.config.base import StrictModel, format_validation_error
from pipeline.config.train import NormalizationConfig
from pipeline.errors import InputError
from pipeline.io.atomic import write_atomic

LOG = logging.getLogger(__name__)

CARD_NAME = "model.json"
#: Card format -> backend name.
FORMATS = {"spheroid-unet": "unet", "spheroid-stardist": "stardist", "spheroid-cellpose": "cellpose"}


class CardBase(StrictModel):
    """What every model card states, whatever the backend."""

    format: str
    """The backend's card format (``spheroid-unet``, ``spheroid-stardist``, ``spheroid-cellpose``)."""
    format_version: int = 1
    """Version of this card layout."""
    name: str
    """Model name."""
    voxel_size: list[float] = Field(min_length=3, max_length=3)
    """Voxel size (z, y, x) in um the model works at: every volume is resampled to it."""
    voxel_tolerance: float = Field(0.1, ge=0)
    """Largest relative voxel-size difference per axis for which a volume is used as it is
    (not resampled)."""
    nucleus_diameter_um: float | None = Field(None, gt=0)
    """Median nucleus diameter (um, equivalent sphere) of the training data at ``voxel_size``:
    data whose nuclei are of another size (``--diameter``) is resampled so that its nuclei
    take as many voxels as these did. ``null`` in cards written before it was recorded."""
    nucleus_diameters_um: list[float] | None = Field(None, min_length=3, max_length=3)
    """The training nuclei's diameters along z, y and x (um; median axes of the ellipsoid of the
    same moments and volume, scaled so that their geometric mean is ``nucleus_diameter_um``,
    :func:`pipeline.groundtruth.sizes.nucleus_sizes`): what a per-axis ``--diameter Z,Y,X`` is
    compared with. ``null``: round (``nucleus_diameter_um`` on every axis)."""
    channels: list[str] = Field(min_length=1)
    """Channel names the model was trained on, in input order; ``"A|B"`` means either stain.
    Another channel may be mapped onto an input at segment time (``--channel``)."""
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    """Percentile normalisation applied to each input volume."""
    training: dict[str, Any] = Field(default_factory=dict)
    """Training data (manifest summary), steps, time and resolved config."""
    metrics: dict[str, Any] = Field(default_factory=dict)
    """Validation metrics (``best``, ``final``, ``best_step``) and held-out scores (``heldout``)."""
    versions: dict[str, str] = Field(default_factory=dict)
    """Versions of spheroid and the libraries that wrote the model."""
    command: str | None = None
    """The command that reproduces the model."""
    created: str | None = None
    """ISO time the card was written."""

    @model_validator(mode="after")
    def _positive_voxels(self) -> "CardBase":
        if any(v <= 0 for v in self.voxel_size):
            raise ValueError(f"voxel_size must be positive, got {self.voxel_size}")
        if self.nucleus_diameters_um is not None and any(v <= 0 for v in self.nucleus_diameters_um):
            raise ValueError(f"nucleus_diameters_um must be positive, got {self.nucleus_diameters_um}")
        return self

    @property
    def backend(self) -> str:
        """Name of the backend that reads this card."""
        return FORMATS.get(self.format, self.format)

    def describe(self) -> dict[str, Any]:
        """The card's input contract as plain data (what labels record about their model)."""
        return {
            "format": self.format,
            "name": self.name,
            "voxel_size": list(self.voxel_size),
            "nucleus_diameter_um": self.nucleus_diameter_um,
            **({"nucleus_diameters_um": list(self.nucleus_diameters_um)} if self.nucleus_diameters_um else {}),
            "channels": list(self.channels),
            "normalization": self.normalization.model_dump(mode="json"),
            "created": self.created,
        }


def read_card_json(folder: str | Path) -> dict[str, Any]:
    """The raw ``model.json`` of a model folder.

    Raises
    ------
    InputError
        Naming the path when the folder or card is missing or not JSON.
    """
    folder = Path(folder)
    path = folder / CARD_NAME
    if not folder.is_dir():
        raise InputError(f"{folder}: model folder not found")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: model card not found (a model folder holds {CARD_NAME} beside its weights)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read model card ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a model card (a JSON object is expected)")
    return data


def card_backend(folder: str | Path) -> str:
    """The backend a model folder belongs to, from its card's ``format``.

    Raises
    ------
    InputError
        When the card is missing, unreadable or of an unknown format.
    """
    data = read_card_json(folder)
    fmt = data.get("format")
    if fmt not in FORMATS:
        raise InputError(f"{Path(folder) / CARD_NAME}: unknown model format {fmt!r} (one of {', '.join(FORMATS)})")
    return FORMATS[fmt]


def validate_card(cls: type[CardBase], folder: str | Path) -> CardBase:
    """Read ``folder/model.json`` as a card of class ``cls`` (one error line naming the file)."""
    data = read_card_json(folder)
    path = Path(folder) / CARD_NAME
    want = cls.model_fields["format"].default
    if data.get("format") != want:
        raise InputError(f"{path}: a {data.get('format')!r} model, not a {want!r} one; pick the backend it was trained with (--backend {FORMATS.get(data.get('format'), '?')})")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, str(path))) from None


def write_card_json(card: CardBase, folder: str | Path) -> Path:
    """Write ``folder/model.json`` atomically; returns its path."""
    path = Path(folder) / CARD_NAME
    write_atomic(path, json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    return path


def folder_digest(folder: str | Path, names: list[str]) -> str:
    """SHA-256 over the named files of a model folder (card and weights): what identifies a model."""
    digest = hashlib.sha256()
    for name in sorted(names):
        path = Path(folder) / name
        digest.update(name.encode())
        if path.is_file():
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()

"""The ``unet`` backend: our 3D U-Net (background / edge / nucleus) and seeded-watershed instances."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipeline.config.segment import SegmentConfig
from pipeline.segment.backends.base import ModelSegmenter

LOG = logging.getLogger(__name__)


class UNetSegmenter(ModelSegmenter):
    """The U-Net of a model folder (the shipped default when ``config.model`` is unset)."""

    name = "unet"

    def __init__(self, config: SegmentConfig):
        from pipeline.segment.unet.card import default_model_path, load_model
        from pipeline.segment.unet.predict import resolve_device

        folder = config.model or str(default_model_path())
        self.device = resolve_device(config.device)
        self.model, card = load_model(folder, device=self.device)
        super().__init__(config, folder, card, ["model.json", card.weights])

    def settings(self) -> dict[str, Any]:
        from pipeline.segment.unet.predict import resolve_precision

        return {
            "tile": self.config.tile or "auto (pipeline.segment.unet.apply.inference_tile)",
            "overlap": self.config.overlap,
            "tta": self.config.tta,
            "precision": resolve_precision(self.config.precision, self.device),
            "labeling": self.card.labeling.model_dump(mode="json"),
            "device": str(self.device),
        }

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities (and the distance, for models with it) of a normalised image at the model's scale."""
        from pipeline.segment.unet.apply import inference_tile
        from pipeline.segment.unet.predict import predict_volume

        c = self.config
        tile = inference_tile(self.card, image.shape, c.overlap, self.model.divisor) if c.tile is None else tuple(c.tile)
        return predict_volume(
            self.model, image, tile=tile, overlap=c.overlap, batch_size=c.batch_size, device=self.device, tta=c.tta, precision=c.precision,
        )

    def label(self, probs: np.ndarray) -> np.ndarray:
        """Instances from :meth:`probabilities`, with the card's labelling parameters."""
        from pipeline.segment.instances import label_with

        return label_with(probs, self.card.labeling, self.card.voxel_size)

    def segment(self, image: np.ndarray) -> np.ndarray:
        return self.label(self.probabilities(image))

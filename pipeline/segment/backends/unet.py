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
        import torch

        from pipeline.segment.unet.card import default_model_path, load_model
        from pipeline.segment.unet.predict import resolve_device

        folder = config.model or str(default_model_path())
        self.device = resolve_device(config.device)
        self.model, card = load_model(folder, device=self.device)
        self.model.to(memory_format=torch.channels_last_3d)  # predict_volume's layout, converted once per worker
        super().__init__(config, folder, card, ["model.json", card.weights])
        if card.architecture.norm in ("group", "instance"):
            LOG.warning(
                "%s: a %s-normalised model: its output depends on the tiling and on how much empty background a tile "
                "holds; fine-tune it into batch normalisation (norm: batch with --init-from) for tile-independent labels",
                folder, card.architecture.norm,
            )

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

    #: :func:`pipeline.segment.volume.segment_volume` calls :meth:`segment_to` where the data's grid is finer.
    labels_at_data_scale = True

    def segment_to(self, image: np.ndarray, shape, zoom, voxel_size) -> np.ndarray:
        """Labels on the data's grid ``shape`` of an image at the model's scale (``zoom``: data -> model).

        The class probabilities are interpolated (linearly) to the data's grid and labelled there,
        with the card's thresholds and its voxel-count limits scaled to the data's voxels; up-sampled
        labels would be blocky at the model's coarser grid (a nucleus two model slices thick).
        Maxima seeds are found on the model's grid and placed on the data's.
        """
        from pipeline.segment.instances import label_with, maxima_seeds_on
        from pipeline.segment.resample import resample_image

        probs = self.probabilities(image)
        lab = self.card.labeling
        markers = maxima_seeds_on(probs, lab, shape) if lab.seeds == "maxima" and probs.shape[0] == 3 else None
        fine = np.stack([resample_image(channel, shape) for channel in probs])
        del probs
        return label_with(fine, scale_labeling(lab, zoom), voxel_size, markers=markers)


def scale_labeling(lab, zoom):
    """The labelling settings (in the model's voxels) for a grid ``1 / zoom`` times finer per axis.

    Voxel counts scale with the volume of a voxel, the y-x erosion with the y-x zoom, and
    the maxima seeds' footprint (odd sizes) and smoothing with each axis' zoom.
    """
    per_voxel = float(np.prod(zoom))  # model voxels per data voxel
    return lab.model_copy(update={
        "min_size": int(round(lab.min_size / per_voxel)),
        "min_seed_size": max(1, int(round(lab.min_seed_size / per_voxel))),
        "erode_xy": int(round(lab.erode_xy / float(min(zoom[1:])))),
        "seed_footprint": [max(1, 2 * int(round((f / z - 1) / 2)) + 1) for f, z in zip(lab.seed_footprint, zoom)],
        "seed_smooth": [float(s) / float(z) for s, z in zip(lab.seed_smooth, zoom)],
    })

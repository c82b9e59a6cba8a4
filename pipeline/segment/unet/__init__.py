"""The 3D U-Net: network (:mod:`.network`), sliding-window inference (:mod:`.predict`), the model
folder and its card (:mod:`.card`), and applying a model to a volume (:mod:`.apply`)."""

from pipeline.segment.unet.apply import segment_volume
from pipeline.segment.unet.card import (
    ModelCard,
    build_model,
    default_model_path,
    load_card,
    load_default_model,
    load_model,
    save_model,
)
from pipeline.segment.unet.network import UNet3D
from pipeline.segment.unet.predict import predict_volume

__all__ = [
    "ModelCard",
    "UNet3D",
    "build_model",
    "default_model_path",
    "load_card",
    "load_default_model",
    "load_model",
    "predict_volume",
    "save_model",
    "segment_volume",
]

"""``spheroid train``: one entry for the three backends (the U-Net loop, StarDist, Cellpose)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config.train import TrainConfig
from pipeline.segment.card import CARD_NAME
from pipeline.train.modelcard import write_model_md


def run_training(config: TrainConfig, *, resume: bool = True, progress: bool = True):
    """Train the model ``config.backend`` names; every backend writes ``out/model`` with a card.

    The U-Net run is resumable (checkpoints, SIGTERM); StarDist and Cellpose runs start over.
    Each writes ``out/metrics.csv`` and ``out/config.yaml`` beside the model, and the
    model folder gets ``MODEL.md`` (:mod:`pipeline.train.modelcard`) once the run is finished.

    Returns
    -------
    pipeline.train.loop.TrainResult
    """
    if config.backend == "unet":
        from pipeline.train.loop import train

        result = train(config, resume=resume, progress=progress)
    else:
        from pipeline.config.base import save_config
        from pipeline.train.records import write_csv

        if config.backend == "stardist":
            from pipeline.train.stardist import train_stardist as trainer
        else:
            from pipeline.train.cellpose import train_cellpose as trainer
        result = trainer(config, progress=progress)
        save_config(config, Path(config.out) / "config.yaml")
        write_csv(result.history, Path(config.out) / "metrics.csv")
    if not result.interrupted and (Path(result.model_dir) / CARD_NAME).is_file():
        write_model_md(result.model_dir)
    return result

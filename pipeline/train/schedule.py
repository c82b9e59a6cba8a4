"""The learning-rate schedule of the U-Net training loop."""

from __future__ import annotations

import math

from pipeline.config.train import OptimConfig


def lr_factor(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then constant, cosine or step decay."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    if optim.schedule == "step":
        return optim.step_gamma ** ((step - optim.warmup_steps) // optim.step_every)
    span = max(1, max_steps - optim.warmup_steps)
    t = min(1.0, (step - optim.warmup_steps) / span)
    floor = min(1.0, optim.min_lr / optim.lr)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

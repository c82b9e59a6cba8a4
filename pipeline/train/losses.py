"""Segmentation losses (thesis section 2.8.2): CE, weighted CE, focal, soft IoU and Dice.

All losses take logits ``(batch, classes, z, y, x)`` and an integer target
``(batch, z, y, x)`` and return a scalar. :class:`CombinedLoss` sums the terms
configured in :class:`pipeline.config.train.LossTerm` with their weights.

The class-weighted soft IoU (thesis Eq. 8, the thesis' best loss) is computed per
class over the whole batch, ``IoU_c = (sum p_c y_c + eps) / (sum p_c + y_c - p_c y_c + eps)``,
and the loss is ``1 - sum_c w_c IoU_c / sum_c w_c``: a perfect prediction gives 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.config.train import LossTerm


def _full(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) to float32; float32/float64 stay as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _weights(class_weights: Sequence[float] | None, n: int, like: torch.Tensor) -> torch.Tensor:
    if class_weights is None:
        return torch.ones(n, dtype=like.dtype, device=like.device)
    if len(class_weights) != n:
        raise ValueError(f"{len(class_weights)} class weights for {n} classes")
    return torch.as_tensor(list(class_weights), dtype=like.dtype, device=like.device)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, class_weights: Sequence[float] | None = None) -> torch.Tensor:
    """(Weighted) cross-entropy, thesis Eq. 6; with weights, the weighted mean over voxels
    (``sum w_y * -log p_y / sum w_y``, as ``torch.nn.functional.cross_entropy``)."""
    logits = _full(logits)
    weight = None if class_weights is None else _weights(class_weights, logits.shape[1], logits)
    return F.cross_entropy(logits, target, weight=weight)


def focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    gamma: float = 2.0,
    class_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Focal loss (Lin et al.; thesis Eq. 7): mean of ``-alpha w_y (1 - p_y)^gamma log p_y``."""
    logits = _full(logits)
    logp = F.log_softmax(logits, dim=1)
    logp_t = logp.gather(1, target.unsqueeze(1)).squeeze(1)
    p_t = logp_t.exp()
    w = _weights(class_weights, logits.shape[1], logp)[target]
    return (-alpha * w * (1 - p_t).clamp_min(0) ** gamma * logp_t).mean()


def _soft_overlap(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class: sum p*y, sum p, sum y over batch and space."""
    n = logits.shape[1]
    p = torch.softmax(_full(logits), dim=1)
    y = F.one_hot(target, n).movedim(-1, 1).to(p.dtype)
    dims = (0,) + tuple(range(2, p.ndim))
    return (p * y).sum(dims), p.sum(dims), y.sum(dims)


def soft_iou(logits: torch.Tensor, target: torch.Tensor, class_weights: Sequence[float] | None = None, eps: float = 1.0) -> torch.Tensor:
    """Class-weighted soft IoU (Jaccard) loss, thesis Eq. 8: ``1 - weighted mean of per-class IoU``."""
    inter, p_sum, y_sum = _soft_overlap(logits, target)
    iou = (inter + eps) / (p_sum + y_sum - inter + eps)
    w = _weights(class_weights, logits.shape[1], iou)
    return 1 - (w * iou).sum() / w.sum()


def soft_dice(logits: torch.Tensor, target: torch.Tensor, class_weights: Sequence[float] | None = None, eps: float = 1.0) -> torch.Tensor:
    """Class-weighted soft Dice loss: ``1 - weighted mean of (2 sum p y + eps) / (sum p + sum y + eps)``."""
    inter, p_sum, y_sum = _soft_overlap(logits, target)
    dice = (2 * inter + eps) / (p_sum + y_sum + eps)
    w = _weights(class_weights, logits.shape[1], dice)
    return 1 - (w * dice).sum() / w.sum()


def loss_term(term: LossTerm, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Value of one configured loss term (without its ``weight``)."""
    if term.name == "ce":
        return cross_entropy(logits, target, term.class_weights)
    if term.name == "wce":
        return cross_entropy(logits, target, term.class_weights)
    if term.name == "focal":
        return focal(logits, target, term.alpha, term.gamma, term.class_weights)
    if term.name == "iou":
        return soft_iou(logits, target, term.class_weights, term.eps)
    if term.name == "dice":
        return soft_dice(logits, target, term.class_weights, term.eps)
    raise ValueError(f"unknown loss {term.name!r}")


class CombinedLoss(nn.Module):
    """Weighted sum of configured loss terms.

    Parameters
    ----------
    terms : sequence of LossTerm
        From ``TrainConfig.loss``.
    n_classes : int
        Output classes; class-weight lists must have this length.

    Examples
    --------
    >>> loss = CombinedLoss([LossTerm(name="iou", class_weights=[1.0, 2.0, 1.5])], 3)
    >>> logits = torch.zeros(1, 3, 2, 4, 4); target = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    >>> total, parts = loss(logits, target)
    >>> sorted(parts)
    ['iou']
    """

    def __init__(self, terms: Sequence[LossTerm], n_classes: int):
        super().__init__()
        for term in terms:
            if term.class_weights is not None and len(term.class_weights) != n_classes:
                raise ValueError(f"loss {term.name!r}: {len(term.class_weights)} class_weights for {n_classes} classes")
        self.terms = list(terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The total loss and each term's (unweighted) value."""
        total = _full(logits).new_zeros(())
        parts: dict[str, float] = {}
        for i, term in enumerate(self.terms):
            value = loss_term(term, logits, target)
            total = total + term.weight * value
            key = term.name if term.name not in parts else f"{term.name}_{i}"
            parts[key] = float(value.detach())
        return total, parts


def centre_loss(logit: torch.Tensor, target: torch.Tensor, peak_weight: float = 4.0) -> torch.Tensor:
    """Binary cross-entropy of ``sigmoid(logit)`` against the centre map (both ``(batch, z, y, x)``),
    each voxel weighted ``1 + peak_weight * target``.

    The map is a small Gaussian peak per nucleus on a zero background: a mean squared error
    learnt it with peaks far too low (its gradient vanishes where the sigmoid is near 0; the
    peaks of a model 250 steps in were below 0.46), cross-entropy keeps the gradient
    ``p - target`` and the weight puts the peaks first.
    """
    weight = 1.0 + peak_weight * target
    return torch.nn.functional.binary_cross_entropy_with_logits(logit, target, weight=weight)

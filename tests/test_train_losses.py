"""Losses: values on hand-checkable inputs, gradients, the combination."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.config.train import LossTerm
from pipeline.train.losses import CombinedLoss, cross_entropy, focal, soft_dice, soft_iou


def uniform_case():
    """Four voxels, 3 classes, equal logits: p = 1/3 everywhere; targets 0, 0, 1, 2."""
    logits = torch.zeros(1, 3, 1, 1, 4, dtype=torch.float64)
    target = torch.tensor([0, 0, 1, 2]).view(1, 1, 1, 4)
    return logits, target


def test_cross_entropy_values():
    logits, target = uniform_case()
    assert float(cross_entropy(logits, target)) == pytest.approx(math.log(3))
    # one voxel, logits (0, log 2, 0): p = (1/4, 1/2, 1/4)
    lg = torch.tensor([0.0, math.log(2), 0.0], dtype=torch.float64).view(1, 3, 1, 1, 1)
    assert float(cross_entropy(lg, torch.zeros(1, 1, 1, 1, dtype=torch.long))) == pytest.approx(math.log(4))
    # weighted: two voxels, classes 0 and 1 with p_y = 1/4 and 1/2, weights 1 and 3 -> weighted mean
    lg2 = torch.cat([lg, lg], dim=4)
    tg2 = torch.tensor([0, 1]).view(1, 1, 1, 2)
    expected = (1 * math.log(4) + 3 * math.log(2)) / 4
    assert float(cross_entropy(lg2, tg2, [1.0, 3.0, 1.0])) == pytest.approx(expected)


def test_focal_values():
    logits, target = uniform_case()
    assert float(focal(logits, target, alpha=1.0, gamma=0.0)) == pytest.approx(math.log(3))
    # (1 - 1/3)^2 * log 3 * alpha
    assert float(focal(logits, target, alpha=0.5, gamma=2.0)) == pytest.approx(0.5 * (2 / 3) ** 2 * math.log(3))
    # class weights (1, 2, 4) on targets 0, 0, 1, 2 -> mean weight 2
    assert float(focal(logits, target, gamma=0.0, class_weights=[1, 2, 4])) == pytest.approx(2 * math.log(3))


def test_soft_iou_and_dice_values():
    logits, target = uniform_case()
    # counts n = (2, 1, 1), N = 4, p = 1/3: inter = n/3, sum p = 4/3
    n = [2, 1, 1]
    eps = 1.0
    iou = [(c / 3 + eps) / (4 / 3 + c - c / 3 + eps) for c in n]
    dice = [(2 * c / 3 + eps) / (4 / 3 + c + eps) for c in n]
    assert float(soft_iou(logits, target, eps=eps)) == pytest.approx(1 - sum(iou) / 3)
    w = [1.0, 2.0, 1.5]
    assert float(soft_iou(logits, target, w, eps=eps)) == pytest.approx(1 - sum(a * b for a, b in zip(w, iou)) / sum(w))
    assert float(soft_dice(logits, target, eps=eps)) == pytest.approx(1 - sum(dice) / 3)


def test_perfect_prediction_gives_zero_overlap_loss():
    target = torch.tensor([0, 1, 2, 2, 0]).view(1, 1, 1, 5)
    logits = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).double() * 50
    assert float(soft_iou(logits, target, [1.0, 2.0, 1.5])) == pytest.approx(0.0, abs=1e-12)
    assert float(soft_dice(logits, target)) == pytest.approx(0.0, abs=1e-12)
    assert float(cross_entropy(logits, target)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "fn",
    [
        lambda lg, t: cross_entropy(lg, t, [1.0, 3.0, 2.0]),
        lambda lg, t: focal(lg, t, 0.5, 2.0, [1.0, 2.0, 1.5]),
        lambda lg, t: soft_iou(lg, t, [1.0, 2.0, 1.5]),
        lambda lg, t: soft_dice(lg, t, [1.0, 2.0, 1.5]),
    ],
    ids=["wce", "focal", "iou", "dice"],
)
def test_gradients(fn):
    gen = torch.Generator().manual_seed(42)
    logits = torch.randn(2, 3, 2, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    target = torch.randint(0, 3, (2, 2, 3, 3), generator=gen)
    assert torch.autograd.gradcheck(lambda x: fn(x, target), (logits,))
    # descent direction: raising the true class' logit lowers the loss
    loss = fn(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    true_grad = grad.gather(1, target.unsqueeze(1))
    assert (true_grad <= 0).all()


def test_combined_loss():
    logits, target = uniform_case()
    terms = [LossTerm(name="iou", class_weights=[1.0, 2.0, 1.5]), LossTerm(name="ce", weight=0.5)]
    total, parts = CombinedLoss(terms, 3)(logits, target)
    assert set(parts) == {"iou", "ce"}
    assert float(total) == pytest.approx(parts["iou"] + 0.5 * parts["ce"])
    with pytest.raises(ValueError, match="2 class_weights for 3 classes"):
        CombinedLoss([LossTerm(name="wce", class_weights=[1.0, 2.0])], 3)
    with pytest.raises(ValueError, match="needs class_weights"):
        LossTerm(name="wce")

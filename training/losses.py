"""Segmentation losses for logits (N, C, H, W) and integer targets (N, H, W), with 255 = ignore.

Every loss here returns 0 (with a gradient path) for a batch whose pixels are all ignored, where
``torch.nn.CrossEntropyLoss`` would return NaN. Pick one by name with :func:`create_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim < 2 or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match (N, C, ...)")


class DiceLoss(nn.Module):
    """Soft multi-class Dice loss: ``1 - mean_c (2 sum(p_c t_c) + s) / (sum(p_c) + sum(t_c) + s)``.

    ``p`` are softmax probabilities, ``t`` the one-hot target; sums run over the whole batch and all valid
    pixels (ignored pixels are left out). Every class counts in the mean: with ``smooth`` > 0 a class absent
    from the target scores 1 when it is not predicted and less when it is, so false alarms are penalised.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        _check(logits, target)
        n_classes = logits.shape[1]
        valid = target != self.ignore_index
        probs = logits.softmax(dim=1) * valid.unsqueeze(1)
        one_hot = F.one_hot(torch.where(valid, target, 0).long(), n_classes).movedim(-1, 1)
        one_hot = one_hot.to(probs.dtype) * valid.unsqueeze(1)
        dims = [0, *range(2, logits.ndim)]
        intersection = (probs * one_hot).sum(dims)
        cardinality = probs.sum(dims) + one_hot.sum(dims)
        dice = (2.0 * intersection + self.smooth) / (cardinality + self.smooth).clamp_min(1e-12)
        return 1.0 - dice.mean()


class FocalLoss(nn.Module):
    """Focal loss ``-w_y (1 - p_y)^gamma log p_y`` averaged over valid pixels (Lin et al. 2017).

    ``gamma = 0`` is exactly cross-entropy (with the same class-``weight`` normalisation as
    ``torch.nn.functional.cross_entropy``: divided by the sum of the valid pixels' weights).
    """

    def __init__(
        self, gamma: float = 2.0, weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        _check(logits, target)
        valid = target != self.ignore_index
        safe = torch.where(valid, target, 0).long()
        log_p = logits.log_softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        loss = -log_p
        if self.gamma > 0:
            loss = loss * (1.0 - log_p.exp()).clamp_min(0.0) ** self.gamma
        w = valid.to(loss.dtype)
        if self.weight is not None:
            w = w * self.weight.to(loss.dtype)[safe]
        total = w.sum()
        if total <= 0:
            return (logits * 0.0).sum()
        return (loss * w).sum() / total


class DiceCrossEntropyLoss(nn.Module):
    """``dice_weight * Dice + ce_weight * CE`` (or focal instead of CE when ``focal`` is True).

    Cross-entropy gives well-behaved pixel-wise gradients from the first step; Dice counters class imbalance
    (small water or built-up areas) because each class weighs the same whatever its area.
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        focal: bool = False,
        gamma: float = 2.0,
        weight: torch.Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
        smooth: float = 1.0,
    ) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.dice = DiceLoss(ignore_index=ignore_index, smooth=smooth)
        self.ce = FocalLoss(gamma=gamma if focal else 0.0, weight=weight, ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * self.ce(logits, target)


LOSSES = ("dice_ce", "focal", "ce", "dice")


def create_loss(name: str, **kw: object) -> nn.Module:
    """A loss by name: ``dice_ce`` (:class:`DiceCrossEntropyLoss`), ``focal`` (:class:`FocalLoss`),
    ``ce`` (cross-entropy, i.e. :class:`FocalLoss` with gamma 0) or ``dice`` (:class:`DiceLoss`).

    Keyword arguments go to the class (``ignore_index`` defaults to 255 everywhere).
    """
    key = name.strip().lower().replace("-", "_")
    if key == "dice_ce":
        return DiceCrossEntropyLoss(**kw)
    if key == "focal":
        return FocalLoss(**kw)
    if key == "ce":
        if "gamma" in kw:
            raise ValueError("'ce' takes no gamma; use 'focal'")
        return FocalLoss(gamma=0.0, **kw)
    if key == "dice":
        return DiceLoss(**kw)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")

"""The training loss: class- and pixel-weighted cross-entropy, with optional soft Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nucseg.training.config import TrainConfig


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, config: TrainConfig,
                      pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy (class- and pixel-weighted), plus soft Dice over the nucleus classes for ``ce_dice``.

    logits: (N, C, H, W); target: (N, H, W) class ids; pixel_weights: (N, H, W)
    or None. The cross-entropy is the weighted mean over pixels, weights being
    the class weight times the pixel weight.
    """
    weight = None
    if config.class_weights is not None:
        weight = torch.tensor(config.class_weights, dtype=logits.dtype, device=logits.device)
    if pixel_weights is None:
        loss = F.cross_entropy(logits, target, weight=weight)
    else:
        per_pixel = F.cross_entropy(logits, target, weight=weight, reduction="none")
        total_weight = pixel_weights if weight is None else pixel_weights * weight[target]
        loss = (per_pixel * pixel_weights).sum() / total_weight.sum().clamp_min(1e-6)
    if config.loss == "ce_dice":
        probabilities = torch.softmax(logits.float(), dim=1)[:, 1:]
        one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
        intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))
        total = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
        loss = loss + 1.0 - ((2 * intersection + 1.0) / (total + 1.0)).mean()
    return loss

"""The training loss: class- and pixel-weighted cross-entropy, with optional soft Dice, and the distance map's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nucseg.models.outputs import output_layout
from nucseg.training.config import TrainConfig


def segmentation_loss(
    outputs: torch.Tensor,
    target: torch.Tensor,
    config: TrainConfig,
    pixel_weights: torch.Tensor | None = None,
    distance: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of a batch of raw network outputs.

    Cross-entropy (class- and pixel-weighted), plus soft Dice over the
    nucleus classes for ``ce_dice``; for targets with a distance map, plus
    ``distance_weight`` times the binary cross-entropy of its channel
    (sigmoid) against ``distance``.

    outputs: (N, C, H, W) raw outputs (class logits first, see
    :mod:`nucseg.models.outputs`); target: (N, H, W) class ids; pixel_weights:
    (N, H, W) or None; distance: (N, H, W) in [0, 1], needed when the target
    has a distance map. The cross-entropy is the weighted mean over pixels,
    weights being the class weight times the pixel weight.
    """
    layout = output_layout(config.target)
    logits = outputs[:, : layout.classes]
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
    if layout.distance:
        if distance is None or distance.shape != outputs[:, 0].shape:
            raise ValueError(f"target {config.target!r} needs a distance map of shape {tuple(outputs[:, 0].shape)}")
        loss = loss + config.distance_weight * F.binary_cross_entropy_with_logits(
            outputs[:, layout.classes].float(), distance.float()
        )
    return loss

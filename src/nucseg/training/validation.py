"""Validation during training, through the same tiled inference that ``segment`` and ``tune`` use.

Each validation image is normalized and run exactly as
:meth:`nucseg.inference.model.NetworkModel.probabilities` runs it at native
resolution (``scale=1``: tiles, blending, and for ``resize_to`` models the
resize there and back), with a torch backend on the training network, and
turned into nuclei by the same post-processing; so the monitored DSB score
is what ``nucseg segment --scale 1`` would score with the default thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nucseg.datasets.sample import Sample
from nucseg.evaluation.metrics import image_scores, summarize
from nucseg.inference.runners import TorchRunner
from nucseg.inference.tiling import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, predict_rescaled
from nucseg.postprocess.watershed import instances_from_probabilities, PostprocessConfig
from nucseg.preprocess.normalize import prepare_image
from nucseg.training.config import TrainConfig
from nucseg.training.data import normalization_of
from nucseg.training.loss import segmentation_loss
from nucseg.training.targets import make_target


@dataclass
class ValidationResult:
    """Validation of one epoch: mean scores and the predicted labels of every image."""

    loss: float
    pixel_iou: float
    pixel_accuracy: float
    dsb_score: float
    ap50: float
    predictions: list[np.ndarray]


def validate(
    network: torch.nn.Module,
    samples: Sequence[Sample],
    config: TrainConfig,
    postprocess: dict[str, Any],
) -> ValidationResult:
    """Scores of ``network`` on the validation images, at their own resolution.

    Parameters
    ----------
    network
        The network to score (left in the mode it was in, weights unchanged).
    samples
        Validation images with their annotations, raw.
    config
        The run's settings (normalization, target, ``resize_to``, loss).
    postprocess
        :class:`nucseg.postprocess.watershed.PostprocessConfig` settings.

    Returns
    -------
    ValidationResult
        Mean loss (of the blended probabilities against the target made from
        the annotation), pixel scores and DSB score / AP@0.5 of the instances,
        and the predicted labels of every image.
    """
    post_config = PostprocessConfig.from_dict(postprocess)
    normalization = normalization_of(config)
    runner = TorchRunner(network, channels_last=False)  # channels-last would convert the weights in place
    device = next(network.parameters()).device
    losses, scores, predictions = [], [], []
    for sample in samples:
        probabilities = predict_rescaled(runner, prepare_image(sample.image, normalization), resize_to=config.resize_to,
                                         tile_size=DEFAULT_TILE_SIZE, overlap=DEFAULT_OVERLAP,
                                         batch_size=DEFAULT_BATCH_SIZE)
        target = torch.from_numpy(make_target(sample.labels, config.target).astype(np.int64)).to(device)
        log_probabilities = torch.from_numpy(np.log(np.maximum(probabilities, 1e-8))).to(device)
        with torch.inference_mode():  # log-probabilities are logits whose softmax is the probabilities
            losses.append(float(segmentation_loss(log_probabilities[None], target[None], config)))
        labels = instances_from_probabilities(probabilities, post_config)
        predictions.append(labels)
        scores.append(image_scores(sample.labels, labels))
    summary = summarize(scores)
    pixel_accuracy = float(np.mean([s.pixel_accuracy for s in scores]))
    return ValidationResult(float(np.mean(losses)), summary.pixel_iou, pixel_accuracy, summary.dsb_score,
                            summary.ap50, predictions)

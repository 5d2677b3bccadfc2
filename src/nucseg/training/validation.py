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
from dataclasses import dataclass, field
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
from nucseg.models.outputs import output_layout
from nucseg.training.targets import distance_target, make_target


@dataclass
class ValidationResult:
    """Validation of one epoch: mean scores and the predicted labels of every image."""

    loss: float
    pixel_iou: float
    pixel_accuracy: float
    dsb_score: float
    ap50: float
    predictions: list[np.ndarray]
    by_dataset: dict[str, dict[str, float]] = field(default_factory=dict)


def validate(
    network: torch.nn.Module,
    samples: Sequence[Sample],
    config: TrainConfig,
    postprocess: dict[str, Any],
    *,
    groups: Sequence[str] | None = None,
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
    groups
        Dataset of every sample (a mixture): the DSB score and AP@0.5 are then
        the means over datasets of each dataset's score, so that a small
        dataset counts as much as a large one, and ``by_dataset`` holds them.

    Returns
    -------
    ValidationResult
        Mean loss (of the blended probabilities against the target made from
        the annotation), pixel scores and DSB score / AP@0.5 of the instances,
        and the predicted labels of every image.
    """
    post_config = PostprocessConfig.from_dict(postprocess)
    normalization = normalization_of(config)
    layout = output_layout(config.target)
    # channels-last would convert the weights in place
    runner = TorchRunner(network, channels_last=False, classes=layout.split_at)
    device = next(network.parameters()).device
    losses, scores, predictions = [], [], []
    for sample in samples:
        probabilities = predict_rescaled(
            runner,
            prepare_image(sample.image, normalization),
            resize_to=config.resize_to,
            tile_size=DEFAULT_TILE_SIZE,
            overlap=DEFAULT_OVERLAP,
            batch_size=DEFAULT_BATCH_SIZE,
        )
        target = torch.from_numpy(make_target(sample.labels, config.target).astype(np.int64)).to(device)
        losses.append(_loss_of_maps(probabilities, target, sample.labels, config, layout))
        labels = instances_from_probabilities(probabilities, post_config)
        predictions.append(labels)
        scores.append(image_scores(sample.labels, labels))
    summary = summarize(scores)
    pixel_accuracy = float(np.mean([s.pixel_accuracy for s in scores]))
    dsb_score, ap50, by_dataset = summary.dsb_score, summary.ap50, {}
    if groups is not None:
        for group in dict.fromkeys(groups):
            part = summarize([score for score, g in zip(scores, groups) if g == group])
            by_dataset[group] = {"dsb_score": part.dsb_score, "ap50": part.ap50, "images": groups.count(group)}
        dsb_score = float(np.mean([part["dsb_score"] for part in by_dataset.values()]))
        ap50 = float(np.mean([part["ap50"] for part in by_dataset.values()]))
    return ValidationResult(
        float(np.mean(losses)), summary.pixel_iou, pixel_accuracy, dsb_score, ap50, predictions, by_dataset
    )


def _loss_of_maps(maps: np.ndarray, target: torch.Tensor, labels: np.ndarray, config: TrainConfig, layout) -> float:
    """The training loss of blended output maps, turned back into the raw outputs they came from.

    Log-probabilities are logits whose softmax is the probabilities, and the
    logit of the distance map is the raw output whose sigmoid it is.
    """
    device = target.device
    outputs = np.log(np.maximum(maps, 1e-8))
    distance = None
    if layout.distance:
        clipped = np.clip(maps[layout.classes :], 1e-6, 1 - 1e-6)
        outputs[layout.classes :] = np.log(clipped) - np.log1p(-clipped)
        distance = torch.from_numpy(distance_target(labels)).to(device)[None]
    with torch.inference_mode():
        return float(
            segmentation_loss(torch.from_numpy(outputs).to(device)[None], target[None], config, distance=distance)
        )

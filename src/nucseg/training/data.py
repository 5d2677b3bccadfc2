"""Training data: the seeded split, images normalized once, and deterministic augmented crops."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nucseg.datasets.kinds import image_kind
from nucseg.datasets.sample import Sample
from nucseg.preprocess.normalize import NormalizationConfig, prepare_image
from nucseg.preprocess.resize import resize_image, resize_labels
from nucseg.training.augment import augment_crop
from nucseg.training.config import TrainConfig
from nucseg.training.targets import make_target, touching_mask


#: A seeded validation split takes more images than ``val_fraction`` asks for until it holds this many
#: annotated nuclei (up to half the images): one image of a small set is too few to choose epochs on.
MIN_VALIDATION_NUCLEI = 200


def split_names(names: Sequence[str], *, val_fraction: float, seed: int,
                nuclei: Mapping[str, int] | None = None) -> tuple[list[str], list[str]]:
    """Seeded split of image names into (train, validation), each sorted.

    At least one image goes to each side when there are two or more images.
    With ``nuclei`` (annotated nuclei per image), the validation side grows,
    in the same seeded order, until it holds :data:`MIN_VALIDATION_NUCLEI`
    nuclei or half the images; on a large dataset that changes nothing.
    """
    names = sorted(names)
    if len(names) < 2:
        raise ValueError("need at least two images to split into training and validation")
    n_val = min(len(names) - 1, max(1, int(round(len(names) * val_fraction))))
    order = np.random.default_rng(seed).permutation(len(names))
    if nuclei is not None:
        most = max(n_val, len(names) // 2)
        while n_val < most and sum(nuclei.get(names[i], 0) for i in order[:n_val]) < MIN_VALIDATION_NUCLEI:
            n_val += 1
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    return train, val


@dataclass
class PreparedSample:
    """A training image normalized once, kept in memory as float16."""

    name: str
    image: np.ndarray  # float16 (H, W, C), normalized
    labels: np.ndarray  # int32 (H, W)
    raw: np.ndarray  # the raw image, for snapshots


def prepare_samples(samples: Sequence[Sample], config: TrainConfig) -> list[PreparedSample]:
    """Normalize (and, for ``resize_to`` configs, resize) samples for training."""
    normalization = normalization_of(config)
    prepared = []
    for sample in samples:
        image = prepare_image(sample.image, normalization)
        labels = sample.labels
        if config.resize_to:
            image = resize_image(image, (config.resize_to, config.resize_to))
            labels = resize_labels(labels, (config.resize_to, config.resize_to))
        prepared.append(PreparedSample(sample.name, image.astype(np.float16), labels.astype(np.int32), sample.image))
    return prepared


def normalization_of(config: TrainConfig) -> NormalizationConfig:
    return NormalizationConfig(low_percentile=config.low_percentile, high_percentile=config.high_percentile)


class CropDataset(torch.utils.data.Dataset):
    """Random augmented crops; item ``(epoch, index)`` is deterministic.

    Returns ``(image, target, pixel_weights)``: float32 ``(C, S, S)``, int64
    ``(S, S)`` class ids and float32 ``(S, S)`` loss weights (1, plus
    ``touching_weight`` where nuclei touch). Images are drawn with probability
    proportional to :func:`sampling_weights`.
    """

    def __init__(self, samples: Sequence[PreparedSample], config: TrainConfig):
        self.samples = samples
        self.config = config
        weights = sampling_weights(samples, config.kind_weights)
        self.cumulative = np.cumsum(weights) / weights.sum() if config.kind_weights else None

    def __len__(self) -> int:
        return len(self.samples)

    def pick(self, rng: np.random.Generator) -> int:
        """Index of the sample that the next crop comes from, drawn by :func:`sampling_weights`."""
        if self.cumulative is None:
            return int(rng.integers(len(self.samples)))
        return min(int(np.searchsorted(self.cumulative, rng.random(), side="right")), len(self.samples) - 1)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, index = key
        rng = np.random.default_rng([self.config.seed, epoch, index])
        sample = self.samples[self.pick(rng)]
        size = self.config.resize_to or self.config.crop_size
        augment = self.config.augment
        if self.config.resize_to:  # seed mode: whole resized image, no scale jitter
            augment = dataclasses.replace(augment, scale_min=1.0, scale_max=1.0)
        image, labels = augment_crop(sample.image.astype(np.float32), sample.labels, size, rng, augment)
        target = make_target(labels, self.config.target)
        pixel_weights = np.ones(labels.shape, dtype=np.float32)
        if self.config.touching_weight > 0:
            pixel_weights[touching_mask(labels, gap=self.config.touching_gap)] += self.config.touching_weight
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(target.astype(np.int64)),
                torch.from_numpy(pixel_weights))


def sampling_weights(samples: Sequence[PreparedSample], kind_weights: dict[str, float]) -> np.ndarray:
    """Relative draw weight of each sample: ``kind_weights[image_kind(raw image)]``, 1 for kinds not listed."""
    if not kind_weights:
        return np.ones(len(samples))
    return np.array([float(kind_weights.get(image_kind(sample.raw), 1.0)) for sample in samples])


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` keys; :meth:`set_epoch` picks the epoch."""

    def __init__(self, samples_per_epoch: int):
        self.samples_per_epoch = samples_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __iter__(self):
        return iter((self.epoch, i) for i in range(self.samples_per_epoch))

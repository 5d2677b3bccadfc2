"""Training data: the seeded split, images normalized once, and deterministic augmented crops."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nucseg.datasets.kinds import image_kind
from nucseg.datasets.sample import Sample
from nucseg.errors import InputError
from nucseg.models.folder import read_model_config
from nucseg.preprocess.normalize import NormalizationConfig, prepare_image
from nucseg.preprocess.resize import resize_image, resize_labels
from nucseg.training.augment import augment_crop
from nucseg.training.config import MIN_TEST_IMAGES, TrainConfig
from nucseg.models.outputs import output_layout
from nucseg.training.targets import distance_target, make_target, touching_mask


#: A seeded validation split takes more images than ``val_fraction`` asks for until it holds this many
#: annotated nuclei (up to half the images): one image of a small set is too few to choose epochs on.
MIN_VALIDATION_NUCLEI = 200


@dataclass(frozen=True)
class DatasetSplit:
    """One dataset's images, split by a seed. Each side is sorted."""

    train: list[str]
    validation: list[str]
    test: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "validation": list(self.validation), "test": list(self.test)}


def split_dataset(
    names: Sequence[str],
    *,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
    nuclei: Mapping[str, int] | None = None,
    train_only: Collection[str] = (),
) -> DatasetSplit:
    """Seeded split of a dataset's image names into train / validation / test.

    The names are shuffled by ``seed``; the test side takes the first
    ``round(n * test_fraction)`` of them (at least :data:`MIN_TEST_IMAGES`
    when ``test_fraction`` > 0), validation the next ``round(n * val_fraction)``
    (at least one), training the rest (at least one).
    With ``nuclei`` (annotated nuclei per image) the validation side grows,
    in the same order, until it holds :data:`MIN_VALIDATION_NUCLEI` nuclei or
    half the images. Names in ``train_only`` (the images an initial model
    was trained on) never go to validation or test: the held-out sides are
    drawn from the other names, and shrink if there are too few of them.

    Raises
    ------
    ValueError
        Fewer than two names, or no name left to hold out.
    """
    names = sorted(names)
    if len(names) < 2:
        raise ValueError("need at least two images to split into training and validation")
    train_only = set(train_only)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names)) if names[i] not in train_only]
    if not order:
        raise ValueError("every image is a training image of the initial model; none is left to validate on")
    n_test = max(MIN_TEST_IMAGES, int(round(len(names) * test_fraction))) if test_fraction > 0 else 0
    n_val = max(1, int(round(len(names) * val_fraction)))
    if nuclei is not None:
        most = max(n_val, len(names) // 2)
        while (
            n_val < most and sum(nuclei.get(name, 0) for name in order[n_test : n_test + n_val]) < MIN_VALIDATION_NUCLEI
        ):
            n_val += 1
    available = min(len(order), len(names) - 1)  # one image at least stays for training
    if n_test + n_val > available:  # too few held-out candidates: they are shared, validation first
        n_test = min(n_test, available // 2)
        n_val = available - n_test
    test = sorted(order[:n_test])
    validation = sorted(order[n_test : n_test + n_val])
    held_out = set(test) | set(validation)
    return DatasetSplit([name for name in names if name not in held_out], validation, test)


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

    Returns ``(image, target, pixel_weights, distance)``: float32 ``(C, S, S)``,
    int64 ``(S, S)`` class ids, float32 ``(S, S)`` loss weights (1, plus
    ``touching_weight`` where nuclei touch) and, for targets with a distance
    map, its float32 ``(S, S)`` target (:func:`nucseg.training.targets.distance_target`;
    an empty tensor for other targets). Images are drawn with probability
    proportional to :func:`sampling_weights`.
    """

    def __init__(self, samples: Sequence[PreparedSample], config: TrainConfig):
        self.samples = samples
        self.config = config
        weights = sampling_weights(samples, config.kind_weights, dataset_weights_of(config))
        self.cumulative = np.cumsum(weights) / weights.sum() if config.kind_weights or config.datasets else None

    def __len__(self) -> int:
        return len(self.samples)

    def pick(self, rng: np.random.Generator) -> int:
        """Index of the sample that the next crop comes from, drawn by :func:`sampling_weights`."""
        if self.cumulative is None:
            return int(rng.integers(len(self.samples)))
        return min(int(np.searchsorted(self.cumulative, rng.random(), side="right")), len(self.samples) - 1)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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
        distance = distance_target(labels) if output_layout(self.config.target).distance else np.zeros(0, np.float32)
        return (
            torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            torch.from_numpy(target.astype(np.int64)),
            torch.from_numpy(pixel_weights),
            torch.from_numpy(distance),
        )


def sampling_weights(
    samples: Sequence[PreparedSample],
    kind_weights: Mapping[str, float],
    dataset_weights: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Relative draw weight of each sample.

    ``kind_weights[image_kind(raw image)]`` (1 for kinds not listed), times,
    with ``dataset_weights`` (``{dataset: weight}`` of a mixture, samples named
    ``<dataset>/<image>``), the dataset's weight shared among its samples: so
    each dataset is drawn in proportion to its weight, whatever its size.
    """
    weights = np.ones(len(samples))
    if kind_weights:
        weights *= [float(kind_weights.get(image_kind(sample.raw), 1.0)) for sample in samples]
    if dataset_weights:
        from nucseg.datasets.mixture import split_qualified

        datasets = [split_qualified(sample.name)[0] for sample in samples]
        for dataset, weight in dataset_weights.items():
            members = np.array([d == dataset for d in datasets])
            if members.any():
                weights[members] *= weight / weights[members].sum()
    return weights


def dataset_weights_of(config: TrainConfig) -> dict[str, float]:
    """``{dataset name: sampling weight}`` of a mixture config; empty for one dataset."""
    from nucseg.datasets.mixture import dataset_key

    return {dataset_key(entry): float(entry.get("weight", 1.0)) for entry in config.datasets}


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


@dataclass
class TrainingData:
    """The samples a run trains and validates on, and the split that records them.

    Attributes
    ----------
    train, validation
        Samples; in a mixture (``config.datasets``) named ``<dataset>/<image>``.
    split
        What ``split.json`` stores: ``train``, ``validation`` and ``test`` names,
        ``datasets`` (``{name: folder}``, mixtures only) and ``source``.
    groups
        Dataset name of every validation sample (mixtures), or None.
    drawn
        Datasets of the run that a stored split (``split_from``) does not hold: split by the seed.
    left_out
        Datasets that a stored split holds and the run does not train on: their names are not in ``split``.
    """

    train: list[Sample]
    validation: list[Sample]
    split: dict
    groups: list[str] | None = None
    drawn: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()


def load_training_data(
    config: TrainConfig,
    *,
    data=None,
    images_dir=None,
    masks_dir=None,
    val_data=None,
    saved_split: dict | None = None,
    initial_train: Collection[str] = (),
    progress: bool = False,
) -> TrainingData:
    """Load and split the training data of a run (or reload a resumed run's split).

    Parameters
    ----------
    config
        The run's settings: ``datasets`` (a mixture) or one dataset given by
        ``data`` / ``images_dir`` + ``masks_dir``; ``val_fraction``,
        ``test_fraction`` and ``seed`` split each dataset.
    val_data
        An explicit validation dataset (one-dataset runs only).
    saved_split
        A resumed run's ``split.json``, or the split of ``config.split_from``:
        its names are used, nothing is re-split.
    initial_train
        Names the initial model was trained on (its ``split.train``); they
        stay on the training side.

    Raises
    ------
    InputError
        A dataset is missing, too small to split, or lacks an image of the saved split.
    """
    from nucseg.datasets.layouts import load_dataset
    from nucseg.datasets.mixture import dataset_folders, load_mixture, NAME_SEPARATOR, split_qualified

    drawn: list[str] = []
    left_out: list[str] = []
    if config.datasets:
        folders = dataset_folders(config.datasets)
        by_dataset = load_mixture(folders, progress=progress)
        if saved_split is None:
            split = {"train": [], "validation": [], "test": [], "datasets": folders}
            # An initial model trained on a mixture names its images <dataset>/<image>; one trained on a
            # single dataset names them bare.
            initial = set(initial_train)
            for dataset, samples in by_dataset.items():
                train_only = [s.name for s in samples if s.name in initial or split_qualified(s.name)[1] in initial]
                part = _split_samples(samples, config, train_only, folders[dataset])
                for side, names in part.to_dict().items():
                    split[side].extend(names)
        else:
            split = {"datasets": folders, **saved_split}
            # A stored split may hold datasets this run does not train on (a run on some of a model's
            # datasets keeps their part of its split): their names are left out, and said.
            in_run = {
                name: NAME_SEPARATOR not in name or name.partition(NAME_SEPARATOR)[0] in by_dataset
                for side in ("train", "validation", "test")
                for name in saved_split.get(side, [])
            }
            left_out = sorted({name.partition(NAME_SEPARATOR)[0] for name, kept in in_run.items() if not kept})
            split.update(
                {side: [n for n in saved_split.get(side, []) if in_run[n]] for side in ("train", "validation", "test")}
            )
            known = {name for side in ("train", "validation", "test") for name in split[side]}
            for dataset, samples in by_dataset.items():
                if not any(s.name in known for s in samples):  # a dataset the stored split never saw
                    drawn.append(dataset)
                    for side, names in _split_samples(samples, config, [], folders[dataset]).to_dict().items():
                        split.setdefault(side, []).extend(names)
        samples = [s for dataset_samples in by_dataset.values() for s in dataset_samples]
    else:
        samples = load_dataset(data, images_dir=images_dir, masks_dir=masks_dir, progress=progress)
        origin = data or images_dir
        if val_data is not None:
            val_samples = load_dataset(val_data, progress=progress)
            split = {"train": [s.name for s in samples], "validation": [s.name for s in val_samples], "test": []}
            return TrainingData(samples, val_samples, _with_source(split, data, images_dir, masks_dir, val_data))
        split = (
            saved_split
            or _split_samples(
                samples, config, [s.name for s in samples if s.name in set(initial_train)], origin
            ).to_dict()
        )
    by_name = {s.name: s for s in samples}
    missing = [n for n in split["train"] + split["validation"] if n not in by_name]
    if missing:
        raise InputError(data or images_dir, f"sample {missing[0]!r} of the run's split is missing from the dataset")
    validation = [by_name[n] for n in split["validation"]]
    groups = [split_qualified(s.name)[0] for s in validation] if config.datasets else None
    split = _with_source(split, data, images_dir, masks_dir, val_data)
    return TrainingData([by_name[n] for n in split["train"]], validation, split, groups, tuple(drawn), tuple(left_out))


def _split_samples(samples: Sequence[Sample], config: TrainConfig, train_only: Sequence[str], origin) -> DatasetSplit:
    nuclei = {s.name: int(np.count_nonzero(np.unique(s.labels))) for s in samples}
    try:
        return split_dataset(
            [s.name for s in samples],
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
            nuclei=nuclei,
            train_only=train_only,
        )
    except ValueError as exc:
        raise InputError(origin, f"{exc} (or give a validation dataset with --val-data)") from None


def _with_source(split: dict, data, images_dir, masks_dir, val_data) -> dict:
    from pathlib import Path

    split = dict(split)
    split["source"] = {
        key: None if value is None else str(Path(value).resolve())
        for key, value in (("data", data), ("images_dir", images_dir), ("masks_dir", masks_dir), ("val_data", val_data))
    }
    return split


def initial_training_names(init_from: str | None) -> list[str]:
    """The images the initial model was trained on (its stored ``split.train``); empty without one."""
    if init_from is None:
        return []
    from nucseg.models.registry import resolve_model_path

    initial, _ = read_model_config(resolve_model_path(init_from))
    return [str(name) for name in initial.split.get("train", [])]


def initial_training_images_given(split: dict, initial_train: Sequence[str]) -> int:
    """How many of the run's training images (bare or ``<dataset>/<image>`` names) the initial model trained on."""
    from nucseg.datasets.mixture import NAME_SEPARATOR

    initial = set(initial_train)
    return sum(name in initial or name.partition(NAME_SEPARATOR)[2] in initial for name in split.get("train", []))


def stored_split(split_from: str) -> dict[str, list[str]]:
    """The train / validation / test names stored in the model ``split_from`` (``TrainConfig.split_from``)."""
    from nucseg.models.registry import resolve_model_path

    path = resolve_model_path(split_from)
    stored, _ = read_model_config(path)
    split = {side: [str(name) for name in stored.split.get(side, [])] for side in ("train", "validation", "test")}
    if not split["train"] or not split["validation"]:
        raise InputError(path, "stores no training/validation split to take (split_from)")
    return split


def carried_quality_calibration(init_from: str | None) -> dict[str, Any]:
    """The initial model's quality calibration for a model fine-tuned from it, saying that it was carried over.

    The weights relate the initial network's features to its accuracy; the
    fine-tuned network is close to it, so they are a fair estimate, not a
    fit: ``fitted_on`` says where they come from, and
    ``benchmarks/calibrate_quality.py`` refits them on the run's validation
    split. Empty when there is no initial model or it has no calibration.
    """
    if init_from is None:
        return {}
    from nucseg.models.registry import resolve_model_path

    initial, _ = read_model_config(resolve_model_path(init_from))
    if not initial.quality:
        return {}
    fitted_on = initial.quality.get("fitted_on") or "its validation images"
    # A calibration carried over before says so itself: "fitted there on carried over from ..." would misread.
    origin = fitted_on if fitted_on.startswith("carried over") else f"fitted there on {fitted_on}"
    return {
        **initial.quality,
        "fitted_on": f"carried over from {init_from} ({origin}); not refitted on this fine-tuning's validation images",
    }

"""Accuracy of models on annotated validation images, overall and per image kind.

:func:`evaluate_model` segments every sample with a model (a network or the
classical baseline), scores it with :mod:`nucseg.evaluation.metrics` and aggregates the
scores over all images and per image kind
(:func:`nucseg.datasets.layouts.image_kind`: fluorescence, brightfield, histology).
:func:`format_markdown` turns the reports of several models into the
README tables. ``benchmarks/eval_validation.py`` runs both on the validation
split stored in a model folder.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nucseg.datasets.kinds import image_kind, IMAGE_KINDS
from nucseg.evaluation.metrics import DatasetScores, image_scores, ImageScores, summarize
from nucseg.inference.options import SegmentOptions

#: Columns of the markdown tables: (header, DatasetScores attribute).
METRIC_COLUMNS = (
    ("DSB score", "dsb_score"),
    ("AP@0.5", "ap50"),
    ("AP@0.75", "ap75"),
    ("F1@0.5", "f1_50"),
    ("PQ", "pq"),
    ("pixel IoU", "pixel_iou"),
)


@dataclass(frozen=True)
class ModelReport:
    """Scores of one model on a set of annotated images.

    Attributes
    ----------
    name
        The model's name.
    overall
        Scores over all images (means over images; F1@0.5 pooled over nuclei).
    by_kind
        The same per image kind, for the kinds present, in the order of
        :data:`nucseg.datasets.IMAGE_KINDS`; empty when not asked for.
    image_names, image_kinds
        Per image, in sample order (kinds empty when not asked for).
    image_scores
        Per image, in sample order.
    seconds
        Wall time spent segmenting (not loading the model or scoring), all
        images together.
    """

    name: str
    overall: DatasetScores
    by_kind: dict[str, DatasetScores]
    image_names: tuple[str, ...]
    image_kinds: tuple[str, ...]
    image_scores: tuple[ImageScores, ...]
    seconds: float

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / self.overall.n_images

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict: summaries, per-kind summaries and per-image scores."""
        return {
            "name": self.name,
            "seconds": self.seconds,
            "seconds_per_image": self.seconds_per_image,
            "overall": self.overall.to_dict(),
            "by_kind": {kind: scores.to_dict() for kind, scores in self.by_kind.items()},
            "images": [
                {
                    "name": name,
                    "kind": kind,
                    "dsb_score": s.dsb_score,
                    "ap50": s.ap50,
                    "ap75": s.ap75,
                    "f1_50": s.f1_50,
                    "pq": s.pq,
                    "pixel_iou": s.pixel_iou,
                    "n_true": s.n_true,
                    "n_pred": s.n_pred,
                }
                for name, kind, s in zip(
                    self.image_names, self.image_kinds or (None,) * len(self.image_names), self.image_scores
                )
            ],
        }


def scores_by_kind(kinds: Sequence[str], scores: Sequence[ImageScores]) -> dict[str, DatasetScores]:
    """Summarize per-image scores per image kind.

    Parameters
    ----------
    kinds
        Kind of each image (one of :data:`nucseg.datasets.IMAGE_KINDS`).
    scores
        Scores of each image, aligned with ``kinds``.

    Returns
    -------
    dict
        ``{kind: DatasetScores}`` for the kinds present, in the order of ``IMAGE_KINDS``.
    """
    if len(kinds) != len(scores):
        raise ValueError(f"{len(kinds)} kinds but {len(scores)} image scores")
    unknown = sorted(set(kinds) - set(IMAGE_KINDS))
    if unknown:
        raise ValueError(f"unknown image kind(s) {', '.join(map(repr, unknown))}")
    return {kind: summarize([s for k, s in zip(kinds, scores) if k == kind]) for kind in IMAGE_KINDS if kind in kinds}


def evaluate_model(
    model,
    samples: Sequence,
    *,
    by_kind: bool = True,
    name: str | None = None,
    progress: bool = False,
    options: SegmentOptions | None = None,
    **segment_options: Any,
) -> ModelReport:
    """Segment annotated samples with a model and score the result.

    Parameters
    ----------
    model : nucseg.inference.model.Model, str or Path
        A loaded model, or what :func:`nucseg.inference.model.load_model` takes: a model
        folder, ``"dsb2018"`` or ``"classical"``.
    samples : sequence of nucseg.datasets.Sample
        Images with their ground-truth labels.
    by_kind
        Also summarize per image kind (:func:`nucseg.datasets.layouts.image_kind`).
    name
        Name to report (default: the model's).
    progress
        Show a progress bar.
    options, **segment_options
        Passed to ``model.segment``: :class:`~nucseg.inference.options.SegmentOptions`,
        or its fields as keywords (e.g. ``tta=True``), which replace those of ``options``.

    Returns
    -------
    ModelReport

    Raises
    ------
    InputError
        No samples.
    ModelError
        A model that cannot be loaded.
    """
    from tqdm.auto import tqdm

    from nucseg.inference.model import load_model
    from nucseg.errors import InputError

    options = SegmentOptions.for_array(options, **segment_options)
    if isinstance(model, (str, Path)):
        model = load_model(model)
    samples = list(samples)
    if not samples:
        raise InputError(None, "no images to evaluate on")
    model.prepare(backend=options.backend)  # one-time set-up is not segmenting time
    scores, seconds = [], 0.0
    for sample in tqdm(samples, desc=f"evaluating {name or model.name}", unit="img", disable=not progress):
        start = time.perf_counter()
        labels = model.segment(sample.image, options=options).labels
        seconds += time.perf_counter() - start
        scores.append(image_scores(sample.labels, labels))
    kinds = tuple(image_kind(sample.image) for sample in samples) if by_kind else ()
    return ModelReport(
        name=name or model.name,
        overall=summarize(scores),
        by_kind=scores_by_kind(kinds, scores) if by_kind else {},
        image_names=tuple(sample.name for sample in samples),
        image_kinds=kinds,
        image_scores=tuple(scores),
        seconds=seconds,
    )


def report_subset(report: ModelReport, indices: Sequence[int], *, name: str | None = None) -> ModelReport:
    """The report of some of its images (by position), e.g. one dataset of a mixture.

    Seconds are shared out in proportion to the number of images.
    """
    indices = list(indices)
    if not indices:
        raise ValueError("no images in the subset")
    scores = [report.image_scores[i] for i in indices]
    kinds = tuple(report.image_kinds[i] for i in indices) if report.image_kinds else ()
    return ModelReport(
        name=name or report.name,
        overall=summarize(scores),
        by_kind=scores_by_kind(kinds, scores) if kinds else {},
        image_names=tuple(report.image_names[i] for i in indices),
        image_kinds=kinds,
        image_scores=tuple(scores),
        seconds=report.seconds * len(indices) / len(report.image_scores),
    )


def dataset_image_kinds(
    root: str | Path | None = None,
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
) -> dict[str, str]:
    """``{name: kind}`` of every image of an annotated dataset, reading the images only (not the masks).

    Raises
    ------
    InputError
        Any problem with the dataset, naming the file.
    """
    from nucseg.datasets.layouts import list_dataset
    from nucseg.io.images import read_image

    return {
        files.name: image_kind(read_image(files.image_path))
        for files in list_dataset(root, images_dir=images_dir, masks_dir=masks_dir)
    }


#: The parts of a split that a model folder stores.
SPLIT_PARTS = ("train", "validation", "test")


def validation_names(model_dir: str | Path, *, part: str = "validation") -> list[str]:
    """The image names of one part of the split stored in a model folder's ``config.json``.

    Parameters
    ----------
    model_dir
        Model folder written by ``nucseg train``.
    part
        ``"validation"`` (``split.validation``), ``"test"`` or ``"train"``.

    Raises
    ------
    ModelError
        Not a model folder, or that part of the split not stored.
    """
    from nucseg.errors import ModelError
    from nucseg.models.folder import CONFIG_FILE, read_model_config

    if part not in SPLIT_PARTS:
        raise ValueError(f"part must be one of {', '.join(SPLIT_PARTS)}, got {part!r}")
    config, _ = read_model_config(model_dir)
    names = config.split.get(part) if isinstance(config.split, dict) else None
    if not names:
        raise ModelError(Path(model_dir) / CONFIG_FILE, f"stores no {part} split (split.{part} is missing or empty)")
    return [str(name) for name in names]


def draw_names(model_dir: str | Path, count: int, *, part: str = "train", seed: int = 0) -> list[str]:
    """A seeded draw of about ``count`` image names of one part of a model folder's split, evenly per dataset.

    For a model trained on several datasets each gets ``count // datasets``
    (all of its images where it has fewer); names are ``<dataset>/<image>``
    then, as stored. ``nucseg quantize`` calibrates on such a draw of the
    training images.
    """
    import numpy as np

    from nucseg.datasets.mixture import NAME_SEPARATOR, split_qualified

    groups: dict[str, list[str]] = {}
    for name in validation_names(model_dir, part=part):
        groups.setdefault(split_qualified(name)[0] if NAME_SEPARATOR in name else "", []).append(name)
    rng = np.random.default_rng(seed)
    share = max(1, count // len(groups))
    return [
        str(name) for group in groups.values() for name in rng.choice(group, size=min(share, len(group)), replace=False)
    ]


def load_validation_samples(
    model_dir: str | Path,
    root: str | Path | None = None,
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    cache_dir: str | Path | None | bool = True,
    progress: bool = False,
    part: str = "validation",
    names: Sequence[str] | None = None,
) -> list:
    """Load the samples of a dataset that a model folder's split holds out for validation.

    Parameters
    ----------
    model_dir
        Model folder whose ``config.json`` stores ``split.validation``
        (``nucseg train`` writes it).
    root, images_dir, masks_dir
        The dataset the model was trained on, as for
        :func:`nucseg.datasets.layouts.load_dataset`. None for a model trained
        on a mixture (its config's ``datasets``): the images are then loaded
        from those datasets, named ``<dataset>/<image>``.
    cache_dir
        Decoded-sample cache, as for :func:`nucseg.datasets.layouts.load_dataset`.
    progress
        Show a progress bar while decoding.
    part
        ``"test"`` loads the split's test images; ``"train"`` its training
        images (to compare a model's scores on the images it learned from).
    names
        Only these images of that part (a ``ValueError`` for a name not in it).

    Returns
    -------
    list of nucseg.datasets.Sample
        In the order of the stored names.

    Raises
    ------
    ModelError
        That part of the split not stored.
    InputError
        A stored name is not in the dataset (another dataset than the model's).
    """
    from nucseg.datasets.layouts import list_dataset, load_dataset
    from nucseg.errors import InputError

    stored = validation_names(model_dir, part=part)
    if names is not None:
        outside = sorted(set(names) - set(stored))
        if outside:
            raise ValueError(f"{len(outside)} names are not {part} images of {model_dir} (first: {outside[0]!r})")
    names = stored if names is None else list(names)
    if root is None and images_dir is None:
        from nucseg.datasets.mixture import dataset_folders, load_mixture
        from nucseg.models.folder import read_model_config

        datasets = read_model_config(model_dir)[0].training.get("datasets") or []
        if not datasets:
            raise InputError(None, f"{Path(model_dir)} was trained on one dataset; give it (--data)")
        loaded = load_mixture(dataset_folders(datasets), names, progress=progress)
        by_name = {sample.name: sample for samples in loaded.values() for sample in samples}
        return [by_name[name] for name in names]
    available = {files.name for files in list_dataset(root, images_dir=images_dir, masks_dir=masks_dir)}
    missing = [name for name in names if name not in available]
    if missing:
        raise InputError(
            root or images_dir,
            f"{len(missing)} of the {len(names)} {part} images stored in "
            f"{Path(model_dir) / 'config.json'} are not in this dataset (first: "
            f"{missing[0]!r}); give the dataset the model was trained on",
        )
    return load_dataset(
        root, images_dir=images_dir, masks_dir=masks_dir, names=names, cache_dir=cache_dir, progress=progress
    )


@dataclass
class TuningSamples:
    """The images ``nucseg tune`` tunes a model on (:func:`load_tuning_samples`).

    Attributes
    ----------
    samples : list of nucseg.datasets.Sample
    weights : list of float or None
        Per sample, for a mixture, so that every dataset weighs alike
        (:func:`nucseg.datasets.mixture.equal_dataset_weights`); None: equal.
    description
        What they are, e.g. ``"dsb2018/stage1_train (all 664 images)"``, for the model card.
    """

    samples: list
    weights: list[float] | None
    description: str


def load_tuning_samples(
    model_dir: str | Path,
    root: str | Path | None = None,
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    split_from_model: bool = False,
    progress: bool = False,
) -> TuningSamples:
    """The images ``nucseg tune`` tunes a model on.

    ``split_from_model``: the validation images stored in the model folder,
    of its datasets (no ``root``, for a model trained on several; every
    dataset then weighs alike) or of ``root`` / ``images_dir``; else every
    image of ``root`` / ``images_dir`` (as for :func:`load_validation_samples`).
    """
    from nucseg.datasets.layouts import load_dataset
    from nucseg.datasets.locations import dataset_name
    from nucseg.datasets.mixture import equal_dataset_weights, split_qualified

    if split_from_model and root is None and images_dir is None:  # a model trained on several datasets
        samples = load_validation_samples(model_dir, progress=progress)
        groups = [split_qualified(sample.name)[0] for sample in samples]
        return TuningSamples(
            samples,
            equal_dataset_weights(groups),
            f"the validation split stored in the model ({len(samples)} images of {len(set(groups))} datasets)",
        )
    source = dataset_name(root or images_dir)
    if split_from_model:
        samples = load_validation_samples(
            model_dir, root, images_dir=images_dir, masks_dir=masks_dir, progress=progress
        )
        return TuningSamples(samples, None, f"{source} (validation split stored in the model, {len(samples)} images)")
    samples = load_dataset(root, images_dir=images_dir, masks_dir=masks_dir, progress=progress)
    return TuningSamples(samples, None, f"{source} (all {len(samples)} images)")


# --------------------------------------------------------------------- markdown


def format_markdown(reports: Mapping[str, ModelReport], *, by_kind: bool = True) -> str:
    """Markdown tables of several models' scores: overall, and per image kind.

    Parameters
    ----------
    reports
        ``{row name: ModelReport}``, in row order.
    by_kind
        Add the per-kind table (for reports that have per-kind scores).

    Returns
    -------
    str
        The overall table (one row per model: the metrics of
        :data:`METRIC_COLUMNS`, the number of images and seconds per image),
        then a per-kind table (one row per model and kind).
    """
    headers = [header for header, _ in METRIC_COLUMNS]
    lines = [
        "| model | images | " + " | ".join(headers) + " | s/image |",
        "|---|---:|" + "---:|" * len(headers) + "---:|",
    ]
    for row_name, report in reports.items():
        lines.append(
            f"| {row_name} | {report.overall.n_images} | {_metric_cells(report.overall)} | "
            f"{report.seconds_per_image:.3f} |"
        )
    if by_kind and any(report.by_kind for report in reports.values()):
        lines += [
            "",
            "| model | image kind | images | " + " | ".join(headers) + " |",
            "|---|---|---:|" + "---:|" * len(headers),
        ]
        for row_name, report in reports.items():
            for kind, scores in report.by_kind.items():
                lines.append(f"| {row_name} | {kind} | {scores.n_images} | {_metric_cells(scores)} |")
    return "\n".join(lines)


def format_kind_table(kinds: Mapping[str, DatasetScores]) -> str:
    """Markdown table of one set of per-kind scores (``nucseg evaluate --by-kind``)."""
    headers = [header for header, _ in METRIC_COLUMNS]
    lines = ["| image kind | images | " + " | ".join(headers) + " |", "|---|---:|" + "---:|" * len(headers)]
    lines += [f"| {kind} | {scores.n_images} | {_metric_cells(scores)} |" for kind, scores in kinds.items()]
    return "\n".join(lines)


def format_evaluation_by_kind(
    report,
    root: str | Path | None = None,
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
) -> str:
    """Per-kind markdown table of a :class:`nucseg.evaluation.EvaluationReport` (``nucseg evaluate --by-kind``).

    ``root`` / ``images_dir`` + ``masks_dir`` is the ground-truth dataset the
    report was scored against; its images are read to tell their kind.
    """
    kinds = dataset_image_kinds(root, images_dir=images_dir, masks_dir=masks_dir)
    return format_kind_table(
        scores_by_kind([kinds[image.name] for image in report.images], [image.scores for image in report.images])
    )


def _metric_cells(scores: DatasetScores) -> str:
    return " | ".join(f"{getattr(scores, attribute):.3f}" for _, attribute in METRIC_COLUMNS)

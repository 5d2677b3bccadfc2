"""Evaluate a folder of predicted label images against an annotated dataset.

The ground truth is any dataset that :func:`nucseg.datasets.layouts.load_dataset`
reads. For each GT image ``<name>`` the prediction is the first of
``<name>_labels.tif``, ``<name>.tif`` and ``<name>.png`` found in the
prediction folder (``nucseg segment`` writes ``<name>_labels.tif``). A missing
prediction is scored as an empty prediction (0.0 for an image with nuclei),
listed in the report and announced with a warning, so that a partial run
cannot look better than it is.

This is what ``nucseg evaluate`` runs; the scores are defined in
:mod:`nucseg.evaluation.metrics`.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg.errors import InputError
from nucseg.io.atomic import atomic_write
from nucseg.io.formats import IMAGE_SUFFIXES
from nucseg.io.images import read_label_stack, read_labels
from nucseg.evaluation.metrics import DatasetScores, image_scores, ImageScores, summarize

#: File names tried for the prediction of image ``<name>``, in order of preference.
PREDICTION_PATTERNS = ("{name}_labels.tif", "{name}.tif", "{name}.png")

#: Columns of the per-image CSV written by :func:`write_csv`.
CSV_COLUMNS = ("name", "n_true", "n_pred", "dsb_score", "ap50", "ap75", "f1_50", "pq", "pixel_iou", "missing")


@dataclass(frozen=True)
class ImageResult:
    """Scores of one GT image.

    Attributes
    ----------
    name
        Image name (the DSB2018 id, or the image file stem).
    prediction_path
        The prediction file that was scored; None when it was missing.
    scores
        Its scores (of an empty prediction when missing).
    """

    name: str
    prediction_path: Path | None
    scores: ImageScores

    @property
    def missing(self) -> bool:
        return self.prediction_path is None


@dataclass(frozen=True)
class EvaluationReport:
    """Result of :func:`evaluate_folder`.

    Attributes
    ----------
    pred_dir
        The prediction folder.
    images
        One result per GT image, in dataset order.
    summary
        Dataset scores over all GT images (missing predictions count as empty).
    missing
        Names of the GT images without a prediction file.
    matching
        How label stacks were matched (:data:`STACK_MATCHING`); None for 2-D images.
    """

    pred_dir: Path
    images: list[ImageResult]
    summary: DatasetScores
    missing: list[str]
    matching: str | None = None


def find_prediction(pred_dir: str | Path, name: str) -> Path | None:
    """The prediction file of image ``name`` in ``pred_dir`` (see :data:`PREDICTION_PATTERNS`), or None."""
    for pattern in PREDICTION_PATTERNS:
        path = Path(pred_dir) / pattern.format(name=name)
        if path.is_file():
            return path
    return None


def evaluate_folder(
    pred_dir: str | Path,
    gt: str | Path | None = None,
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    cache_dir: str | Path | None | bool = True,
    progress: bool = False,
) -> EvaluationReport:
    """Score every prediction in ``pred_dir`` against a GT dataset.

    Parameters
    ----------
    pred_dir
        Folder of predicted label images (0 background, one value per nucleus),
        named after the GT images (see :data:`PREDICTION_PATTERNS`).
    gt
        GT dataset folder, any layout :func:`nucseg.datasets.layouts.load_dataset` reads.
    images_dir, masks_dir
        Paired GT folders, instead of ``gt``.
    cache_dir
        Decoded-sample cache, passed to :func:`~nucseg.datasets.layouts.load_dataset`.
    progress
        Show progress bars.

    Returns
    -------
    EvaluationReport

    Raises
    ------
    InputError
        Missing prediction folder, unreadable or empty GT dataset, no
        prediction for any GT image, an unreadable prediction, or a prediction
        whose size differs from its GT (naming the prediction file).
    """
    from tqdm.auto import tqdm

    from nucseg.datasets.layouts import load_dataset

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(
            pred_dir, "prediction folder does not exist" if not pred_dir.exists() else "prediction path is not a folder"
        )
    samples = load_dataset(gt, images_dir=images_dir, masks_dir=masks_dir, cache_dir=cache_dir, progress=progress)
    if not samples:
        raise InputError(gt or images_dir, "dataset holds no images")
    prediction_paths = {s.name: find_prediction(pred_dir, s.name) for s in samples}
    missing = [name for name, path in prediction_paths.items() if path is None]
    if len(missing) == len(samples):
        raise InputError(
            pred_dir,
            f"no prediction for any of the {len(samples)} ground-truth images "
            f"(looked for {', '.join(PREDICTION_PATTERNS)})",
        )
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        warnings.warn(
            f"{pred_dir}: no prediction for {len(missing)} of {len(samples)} images (scored as empty): {shown}",
            stacklevel=2,
        )

    results = []
    for sample in tqdm(samples, desc="scoring", unit="img", disable=not progress):
        path = prediction_paths[sample.name]
        prediction = np.zeros_like(sample.labels) if path is None else _read_prediction(path, sample.labels.shape)
        results.append(ImageResult(sample.name, path, image_scores(sample.labels, prediction)))
    return EvaluationReport(pred_dir, results, summarize([r.scores for r in results]), missing)


#: How :func:`evaluate_label_stacks` matches nuclei: each plane as an image, or each stack's nuclei in 3-D.
STACK_MATCHING = {
    "planes": "plane by plane: every plane of every stack scored as one image",
    "3d": "in 3-D: the nuclei of each stack matched by their IoU over the whole volume",
}


def evaluate_label_stacks(pred_dir: str | Path, gt_dir: str | Path, *, matching: str = "planes") -> EvaluationReport:
    """Score predicted label stacks (Z-stacks, time series) against ground-truth label stacks.

    Parameters
    ----------
    pred_dir
        Folder of predictions, named as :data:`PREDICTION_PATTERNS` says for
        each ground-truth file ``<name>.tif`` or ``<name>_labels.tif``.
    gt_dir
        Folder of ground-truth label images: stacks ``(Z, H, W)`` (a plain
        multi-page TIFF, or one that names its axes) or single planes.
    matching
        ``planes``: each plane is scored as an image (named ``<name> plane=i``),
        as nuclei segmented plane by plane are; ``3d``: each stack is one
        image whose nuclei are matched by 3-D IoU, as ``--stitch-threshold``
        links them (the ground truth must label each nucleus once through Z).

    Returns
    -------
    EvaluationReport
        Its ``matching`` says which.

    Raises
    ------
    InputError
        A missing or empty folder, no prediction at all, an unknown
        ``matching``, a 3-D match of stacks with T and Z axes, or a
        prediction whose shape differs from its ground truth.
    """
    if matching not in STACK_MATCHING:
        raise InputError(None, f"matching must be one of {', '.join(STACK_MATCHING)}, got {matching!r}")
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise InputError(folder, "folder does not exist")
    truths = {
        path.stem.removesuffix("_labels"): path
        for path in sorted(gt_dir.iterdir())
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    }
    if not truths:
        raise InputError(gt_dir, f"folder holds no label images ({', '.join(IMAGE_SUFFIXES)})")
    predictions = {name: find_prediction(pred_dir, name) for name in truths}
    missing = [name for name, path in predictions.items() if path is None]
    if len(missing) == len(truths):
        raise InputError(
            pred_dir,
            f"no prediction for any of the {len(truths)} ground-truth label images "
            f"(looked for {', '.join(PREDICTION_PATTERNS)})",
        )
    if missing:
        warnings.warn(
            f"{pred_dir}: no prediction for {len(missing)} of {len(truths)} stacks (scored as empty): "
            f"{', '.join(missing[:5])}",
            stacklevel=2,
        )
    results = []
    for name, truth_path in truths.items():
        truth = read_label_stack(truth_path)
        path = predictions[name]
        prediction = np.zeros_like(truth) if path is None else read_label_stack(path)
        if prediction.shape != truth.shape:
            raise InputError(
                path,
                f"prediction of shape {prediction.shape} does not match the ground truth "
                f"{truth_path.name} of shape {truth.shape}",
            )
        if matching == "3d":
            if truth.ndim > 3:
                raise InputError(truth_path, f"3-D matching takes (Z, H, W) stacks, got shape {truth.shape}")
            results.append(ImageResult(name, path, image_scores(truth, prediction)))
            continue
        planes = truth.reshape(-1, *truth.shape[-2:]), prediction.reshape(-1, *truth.shape[-2:])
        results += [
            ImageResult(f"{name} plane={i}" if truth.ndim > 2 else name, path, image_scores(t, p))
            for i, (t, p) in enumerate(zip(*planes))
        ]
    return EvaluationReport(pred_dir, results, summarize([r.scores for r in results]), missing, matching)


def _read_prediction(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    prediction = read_labels(path)
    if prediction.shape != shape:
        raise InputError(
            path, f"prediction size {_size(prediction.shape)} does not match ground-truth size {_size(shape)}"
        )
    return prediction


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape[::-1])  # width x height, as image sizes are usually given


def write_csv(report: EvaluationReport, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write one row per image (columns :data:`CSV_COLUMNS`) to a CSV file, atomically.

    Raises
    ------
    FileExistsError
        ``overwrite`` is False and ``path`` exists.
    """
    with atomic_write(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            for result in report.images:
                s = result.scores
                writer.writerow(
                    [
                        result.name,
                        s.n_true,
                        s.n_pred,
                        *(f"{v:.6f}" for v in (s.dsb_score, s.ap50, s.ap75, s.f1_50, s.pq, s.pixel_iou)),
                        int(result.missing),
                    ]
                )
    return Path(path)


def report_dict(report: EvaluationReport) -> dict:
    """The dataset summary as a JSON-serialisable dict (see :func:`write_json`)."""
    return {
        **report.summary.to_dict(),
        "n_missing": len(report.missing),
        "missing": list(report.missing),
        "pred_dir": str(report.pred_dir),
        **({} if report.matching is None else {"matching": report.matching}),
    }


def write_json(report: EvaluationReport, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write the dataset summary to a JSON file, atomically.

    The keys are those of :meth:`nucseg.evaluation.metrics.DatasetScores.to_dict`
    (``n_images``, ``dsb_score``, ``ap50``, ``ap75``, ``f1_50``, ``pq``,
    ``pixel_iou``, ...) plus ``n_missing``, ``missing`` and ``pred_dir``.

    Raises
    ------
    FileExistsError
        ``overwrite`` is False and ``path`` exists.
    """
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(report_dict(report), indent=2) + "\n", encoding="utf-8")
    return Path(path)


def format_summary(report: EvaluationReport) -> str:
    """A small plain-text table of the dataset scores, for the terminal."""
    s = report.summary
    rows = [
        ("DSB2018 score", s.dsb_score, "mean over images of TP/(TP+FP+FN), IoU 0.50..0.95"),
        ("AP@0.50", s.ap50, "TP/(TP+FP+FN) at IoU > 0.5, mean over images"),
        ("AP@0.75", s.ap75, "TP/(TP+FP+FN) at IoU > 0.75, mean over images"),
        ("F1@0.50", s.f1_50, "pooled over all nuclei"),
        ("PQ", s.pq, "panoptic quality at IoU > 0.5, mean over images"),
        ("pixel IoU", s.pixel_iou, "foreground Jaccard, mean over images"),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [] if report.matching is None else [f"label stacks matched {STACK_MATCHING[report.matching]}"]
    lines += [
        f"{s.n_images} images, {s.n_true} true nuclei, {s.n_pred} predicted "
        f"(at IoU 0.5: {s.tp_50} matched, {s.fp_50} false positives, {s.fn_50} missed)",
        "",
    ]
    lines += [f"{'metric':<{width}}  value   definition", f"{'-' * width}  ------  {'-' * 10}"]
    lines += [f"{name:<{width}}  {value:.4f}  {definition}" for name, value, definition in rows]
    if report.missing:
        shown = ", ".join(report.missing[:5]) + (
            f" and {len(report.missing) - 5} more" if len(report.missing) > 5 else ""
        )
        lines += ["", f"missing predictions ({len(report.missing)}, scored as empty): {shown}"]
    return "\n".join(lines)

"""Tune a model's post-processing thresholds on validation images (``nucseg tune``).

The network's class probabilities are computed once per validation image,
through :meth:`nucseg.inference.model.NetworkModel.segment` (the path ``nucseg segment``
takes, so tuning matches inference). The settings of
:class:`~nucseg.postprocess.watershed.PostprocessConfig` that decide which pixels and
seeds make nuclei (``foreground_threshold``, ``marker_threshold``,
``min_marker_size``, ``min_size``) are then searched for the best mean
Kaggle DSB2018 score, as StarDist's ``optimize_thresholds`` does:

1. a coarse grid over the two probability thresholds;
2. a grid over ``min_marker_size`` at the best thresholds;
3. a local refinement: each threshold is moved by half, then a quarter, of
   the grid step while that improves the score.

Every candidate is scored at all ``min_size`` values at once: removing small
predicted nuclei changes neither the other nuclei nor their IoU with the
ground truth, so the IoU matrix of one post-processing run serves every
``min_size``. A candidate replaces the best settings when it scores higher,
or as high but closer to the model's own settings: the result never scores
below the model's settings, and changes them only where that pays.

:func:`save_tuning` writes the best settings into the model folder's
``config.json`` (atomically, keeping the weights and their checksum).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.errors import InputError, ModelError
from nucseg.evaluation import MIN_KIND_IMAGES
from nucseg.evaluation.metrics import dsb_score_of_matrix, iou_matrix, IoUMatrix
from nucseg.postprocess.watershed import instances_from_probabilities, PostprocessConfig

#: Settings that :func:`search_thresholds` tunes.
TUNED_SETTINGS = ("foreground_threshold", "marker_threshold", "min_marker_size", "min_size")
#: Key of :attr:`nucseg.models.folder.ModelConfig.validation` that records the tuning.
VALIDATION_KEY = "tuning"

# Refined thresholds stay this far from 0 and 1 (both ends are degenerate).
_THRESHOLD_MARGIN = 0.01


@dataclass(frozen=True)
class TuningGrid:
    """Candidate values of the tuned settings.

    Attributes
    ----------
    foreground_threshold, marker_threshold
        Probabilities of the coarse grid (every pair is tried; the marker
        threshold only for three-class models).
    min_marker_size
        Seed sizes in pixels, tried at the best thresholds (three classes only).
    min_size
        Nucleus sizes in pixels; every candidate is scored at each of them
        (and at the model's own ``min_size``).
    refine_rounds
        Rounds of local refinement after the grids; round ``k`` moves each
        threshold by ``refine_step / 2**k``.
    refine_step
        Threshold step of the first refinement round (half the grid spacing).
    """

    foreground_threshold: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
    marker_threshold: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    min_marker_size: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    min_size: tuple[int, ...] = (0, 5, 10, 15, 20, 30, 40, 60, 80, 120)
    refine_rounds: int = 2
    refine_step: float = 0.05

    def __post_init__(self) -> None:
        for name in ("foreground_threshold", "marker_threshold", "min_marker_size", "min_size"):
            values = tuple(getattr(self, name))
            if not values:
                raise ValueError(f"tuning grid {name} holds no values")
            object.__setattr__(self, name, values)
        # PostprocessConfig checks the ranges of the values themselves.
        for value in self.foreground_threshold + self.marker_threshold:
            PostprocessConfig(foreground_threshold=value, marker_threshold=value)
        for value in self.min_marker_size + self.min_size:
            PostprocessConfig(min_marker_size=value, min_size=value)
        if self.refine_rounds < 0 or not 0.0 < self.refine_step < 0.5:
            raise ValueError(
                f"refine_rounds must be >= 0 and refine_step in (0, 0.5), got "
                f"{self.refine_rounds} and {self.refine_step}"
            )


@dataclass(frozen=True)
class Trial:
    """One evaluated setting and its mean DSB2018 score over the tuning images."""

    config: PostprocessConfig
    score: float


@dataclass(frozen=True)
class TuningResult:
    """What :func:`tune_postprocess` found.

    Attributes
    ----------
    config
        The best settings (the untuned settings are kept as they were).
    score
        Its mean DSB2018 score over the tuning images.
    initial_config, initial_score
        The model's own settings and their score on the same images.
    n_images
        Number of tuning images.
    trials
        Every setting scored, in search order.
    seconds
        Wall time: network inference plus search.
    by_kind
        With per-kind tuning: ``{image kind: its own result}`` for the kinds
        with enough tuning images (:data:`MIN_KIND_IMAGES`); their images use
        those settings, the others ``config``.
    combined_score
        With per-kind tuning: the mean score over all tuning images, each with
        the settings of its kind (else None; ``score`` is that mean).
    """

    config: PostprocessConfig
    score: float
    initial_config: PostprocessConfig
    initial_score: float
    n_images: int
    trials: tuple[Trial, ...]
    seconds: float = 0.0
    by_kind: dict[str, "TuningResult"] = dataclasses.field(default_factory=dict)
    combined_score: float | None = None

    @property
    def final_score(self) -> float:
        """The mean score over all tuning images with the settings that :func:`save_tuning` writes."""
        return self.score if self.combined_score is None else self.combined_score

    @property
    def changed(self) -> dict[str, tuple[Any, Any]]:
        """``{setting: (before, after)}`` of the settings the tuning changed."""
        before, after = self.initial_config.to_dict(), self.config.to_dict()
        return {name: (before[name], after[name]) for name in before if before[name] != after[name]}


#: Thresholds tuned on fewer images, or fewer annotated nuclei, than these fit those few: a warning says so.
MIN_TUNING_IMAGES = 10
MIN_TUNING_NUCLEI = 300


class SmallTuningSetWarning(UserWarning):
    """Post-processing thresholds were tuned on too few images or nuclei to be trusted on others."""


def small_tuning_set(n_images: int, n_nuclei: int) -> str | None:
    """The warning for thresholds tuned on ``n_images`` images holding ``n_nuclei`` annotated nuclei, or None
    when there are at least :data:`MIN_TUNING_IMAGES` and :data:`MIN_TUNING_NUCLEI`."""
    if n_images >= MIN_TUNING_IMAGES and n_nuclei >= MIN_TUNING_NUCLEI:
        return None
    return (
        f"thresholds tuned on {n_images} image(s) holding {n_nuclei} annotated nuclei (fewer than "
        f"{MIN_TUNING_IMAGES} images or {MIN_TUNING_NUCLEI} nuclei) fit those few and may not generalize to "
        "other images: annotate more validation images, or keep the earlier thresholds"
    )


# --------------------------------------------------------------------------- search


def search_thresholds(
    probabilities: Sequence[np.ndarray],
    true_labels: Sequence[np.ndarray],
    *,
    initial: PostprocessConfig = PostprocessConfig(),
    grid: TuningGrid = TuningGrid(),
    weights: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
    progress: bool = False,
) -> TuningResult:
    """Search the post-processing settings with the best mean DSB2018 score.

    Parameters
    ----------
    probabilities : sequence of ndarray of float32, shape (C, H, W)
        Class probabilities of each image (C = 3 or 2, the same for all).
    true_labels : sequence of ndarray of int, shape (H, W)
        Ground-truth label images, aligned with ``probabilities``.
    initial
        The starting settings (the model's); settings that are not searched
        (``max_hole_size``, ``split_binary``, ...) are kept from it.
    grid
        Candidate values, see :class:`TuningGrid`.
    weights
        Weight of each image in the mean (None: equal), e.g. ``1 / images of
        its dataset`` so that every dataset of a mixture counts alike.
    scales
        Resize factor the network ran at for each image (None: 1), which
        sizes at network scale (``initial.size_frame == "network"``) need.
    progress
        Show a progress bar of the candidates.

    Returns
    -------
    TuningResult
        ``seconds`` counts the search only.

    Raises
    ------
    ValueError
        No images, lengths or shapes that differ, or a mix of class counts.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    probabilities, true_labels = list(probabilities), list(true_labels)
    if not probabilities:
        raise ValueError("no images to tune on")
    if len(probabilities) != len(true_labels):
        raise ValueError(f"{len(probabilities)} probability maps but {len(true_labels)} label images")
    n_classes = {p.shape[0] for p in probabilities}
    if len(n_classes) != 1:
        raise ValueError(f"probability maps mix class counts {sorted(n_classes)}")
    for p, t in zip(probabilities, true_labels):
        if p.shape[1:] != np.shape(t):
            raise ValueError(f"probabilities of shape {p.shape} do not fit labels of shape {np.shape(t)}")
    scales = [1.0] * len(probabilities) if scales is None else [float(scale) for scale in scales]
    if len(scales) != len(probabilities):
        raise ValueError(f"{len(probabilities)} probability maps but {len(scales)} scales")
    three_class = n_classes.pop() >= 3  # three classes, with or without a distance map
    # Nearest to the model's own first, so that of equal scores the smallest change wins.
    min_sizes = tuple(sorted(set(grid.min_size) | {initial.min_size}, key=lambda s: (abs(s - initial.min_size), s)))
    trials: list[Trial] = []
    scored: dict[tuple, tuple[PostprocessConfig, float]] = {}
    bar = tqdm(desc="tuning", unit="setting", disable=not progress)

    def evaluate(candidate: PostprocessConfig) -> tuple[PostprocessConfig, float]:
        """The best min_size for ``candidate``'s other settings, and its score."""
        if not three_class:  # seeds do not exist for two classes
            candidate = dataclasses.replace(
                candidate, marker_threshold=initial.marker_threshold, min_marker_size=initial.min_marker_size
            )
        key = tuple(dataclasses.replace(candidate, min_size=0).to_dict().values())
        if key not in scored:
            scores = _scores_by_min_size(probabilities, true_labels, candidate, min_sizes, weights, scales)
            trials.extend(
                Trial(dataclasses.replace(candidate, min_size=size), float(score))
                for size, score in zip(min_sizes, scores)
            )
            best = int(np.argmax(scores))  # the first of equal scores
            scored[key] = (dataclasses.replace(candidate, min_size=min_sizes[best]), float(scores[best]))
            bar.update()
        return scored[key]

    with bar:
        evaluate(initial)
        initial_score = next(t.score for t in trials if t.config == initial)
        best, best_score = initial, initial_score

        def consider(candidate: PostprocessConfig) -> None:
            nonlocal best, best_score
            config, score = evaluate(candidate)
            if score > best_score or (score == best_score and _change(initial, config) < _change(initial, best)):
                best, best_score = config, score

        consider(initial)  # its best min_size
        for foreground in grid.foreground_threshold:
            for marker in grid.marker_threshold if three_class else (initial.marker_threshold,):
                consider(dataclasses.replace(best, foreground_threshold=foreground, marker_threshold=marker))
        if three_class:
            for size in grid.min_marker_size:
                consider(dataclasses.replace(best, min_marker_size=size))
        names = ("foreground_threshold", "marker_threshold") if three_class else ("foreground_threshold",)
        for round_ in range(grid.refine_rounds):
            step = grid.refine_step / 2**round_
            for name in names:
                for direction in (-1, 1):
                    value = round(getattr(best, name) + direction * step, 4)
                    if _THRESHOLD_MARGIN <= value <= 1.0 - _THRESHOLD_MARGIN:
                        consider(dataclasses.replace(best, **{name: value}))
    return TuningResult(
        best, best_score, initial, initial_score, len(probabilities), tuple(trials), time.perf_counter() - start
    )


def _change(initial: PostprocessConfig, config: PostprocessConfig) -> tuple[int, float, int]:
    """How far ``config`` is from ``initial``: settings changed, then threshold and size differences."""
    deltas = [abs(getattr(config, name) - getattr(initial, name)) for name in TUNED_SETTINGS]
    return sum(d != 0 for d in deltas), round(deltas[0] + deltas[1], 6), deltas[2] + deltas[3]


def _scores_by_min_size(
    probabilities: Sequence[np.ndarray],
    true_labels: Sequence[np.ndarray],
    config: PostprocessConfig,
    min_sizes: Sequence[int],
    weights: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
) -> np.ndarray:
    """(Weighted) mean DSB2018 score of the images of ``config`` at each ``min_sizes``; float64 (len(min_sizes),)."""
    totals = np.zeros(len(min_sizes))
    unfiltered = dataclasses.replace(config, min_size=0)
    weights = np.ones(len(probabilities)) if weights is None else np.asarray(weights, dtype=np.float64)
    scales = [1.0] * len(probabilities) if scales is None else scales
    for probability, truth, weight, scale in zip(probabilities, true_labels, weights, scales):
        if weight == 0:
            continue
        labels = instances_from_probabilities(probability, unfiltered, scale=scale)
        matrix = iou_matrix(truth, labels)
        sizes = np.bincount(labels.ravel())[matrix.pred_ids]
        for i, min_size in enumerate(min_sizes):
            in_image = dataclasses.replace(config, min_size=min_size).at_scale(scale).min_size
            totals[i] += weight * dsb_score_of_matrix(_keep_predictions(matrix, sizes >= in_image))
    return totals / weights.sum()


def _keep_predictions(matrix: IoUMatrix, keep: np.ndarray) -> IoUMatrix:
    """``matrix`` without the predicted objects where ``keep`` (n_pred,) is False."""
    if keep.all():
        return matrix
    new_column = np.cumsum(keep) - 1
    kept_pairs = keep[matrix.cols]
    return IoUMatrix(
        matrix.true_ids,
        matrix.pred_ids[keep],
        matrix.rows[kept_pairs],
        new_column[matrix.cols[kept_pairs]],
        matrix.values[kept_pairs],
    )


# --------------------------------------------------------------------------- model


def tune_postprocess(
    model,
    samples: Sequence,
    *,
    grid: TuningGrid = TuningGrid(),
    weights: Sequence[float] | None = None,
    by_kind: bool = False,
    size_frame: str | None = None,
    progress: bool = False,
) -> TuningResult:
    """Tune a network model's post-processing settings on annotated images.

    Parameters
    ----------
    model : nucseg.inference.model.NetworkModel, str or Path
        A loaded model, or a model folder / registered name for
        :func:`nucseg.inference.model.load_model`.
    samples : sequence of nucseg.datasets.Sample
        Validation images with their ground-truth labels; never the model's
        training images (see :func:`nucseg.evaluation.report.load_validation_samples`).
    grid
        Candidate values, see :class:`TuningGrid`.
    weights
        Weight of each sample in the mean score (see :func:`search_thresholds`).
    by_kind
        Also tune the images of each kind (:func:`nucseg.datasets.kinds.image_kind`)
        on their own, for the kinds with at least :data:`MIN_KIND_IMAGES`
        images (``TuningResult.by_kind``).
    size_frame
        Count ``min_size`` and ``min_marker_size`` in the image's pixels
        (``"image"``) or at the network's scale (``"network"``, see
        :class:`~nucseg.postprocess.watershed.PostprocessConfig`); None: as the
        model does. The search starts from the model's settings read in that frame.
    progress
        Show progress bars.

    Returns
    -------
    TuningResult
        The model itself is not changed; :func:`save_tuning` writes the result.

    Raises
    ------
    ModelError
        A model without a network (the classical baseline).
    InputError
        No samples.

    Warns
    -----
    SmallTuningSetWarning
        Fewer than :data:`MIN_TUNING_IMAGES` images or :data:`MIN_TUNING_NUCLEI`
        annotated nuclei (:func:`small_tuning_set`).
    """
    from tqdm.auto import tqdm

    from nucseg.datasets.kinds import raw_image_kind
    from nucseg.inference.model import load_model, NetworkModel

    if isinstance(model, (str, Path)):
        model = load_model(model)
    if not isinstance(model, NetworkModel):
        raise ModelError(None, f"model {model.name!r} has no network, so no post-processing thresholds to tune")
    samples = list(samples)
    if not samples:
        raise InputError(None, "no images to tune on")
    caution = small_tuning_set(len(samples), sum(int(np.count_nonzero(np.unique(s.labels))) for s in samples))
    if caution is not None:
        warnings.warn(caution, SmallTuningSetWarning, stacklevel=2)
    start = time.perf_counter()
    probabilities, scales = [], []
    for sample in tqdm(samples, desc="predicting", unit="img", disable=not progress):
        result = model.segment(sample.image)
        probabilities.append(result.probabilities)
        scales.append(1.0 if result.scale is None else result.scale)
    labels = [s.labels for s in samples]
    weights = [1.0] * len(samples) if weights is None else [float(w) for w in weights]
    initial = model.postprocess_config
    if size_frame is not None:
        initial = dataclasses.replace(initial, size_frame=size_frame)
    overall = search_thresholds(
        probabilities, labels, initial=initial, grid=grid, weights=weights, scales=scales, progress=progress
    )
    if not by_kind:
        return dataclasses.replace(overall, seconds=time.perf_counter() - start)
    kinds = [raw_image_kind(s.image) for s in samples]
    own: dict[str, TuningResult] = {}
    for kind in sorted(set(kinds)):
        if kinds.count(kind) < MIN_KIND_IMAGES:
            continue
        kind_weights = [w if k == kind else 0.0 for w, k in zip(weights, kinds)]
        start_from = dataclasses.replace(
            model.postprocess_by_kind.get(kind, model.postprocess_config), size_frame=initial.size_frame
        )
        found = search_thresholds(
            probabilities, labels, initial=start_from, grid=grid, weights=kind_weights, scales=scales, progress=progress
        )
        own[kind] = dataclasses.replace(found, n_images=kinds.count(kind))
    combined = 0.0
    for kind in set(kinds):
        config = own[kind].config if kind in own else overall.config
        kind_weights = [w if k == kind else 0.0 for w, k in zip(weights, kinds)]
        mean = _scores_by_min_size(probabilities, labels, config, [config.min_size], kind_weights, scales)[0]
        combined += float(mean) * sum(kind_weights) / sum(weights)
    return dataclasses.replace(overall, seconds=time.perf_counter() - start, by_kind=own, combined_score=combined)


def save_tuning(
    model_dir: str | Path,
    result: TuningResult,
    *,
    data: str,
    expected_weights_sha256: str | None = None,
) -> Path:
    """Write the tuned settings into a model folder's ``config.json``, atomically.

    ``postprocess`` becomes ``result.config``, ``postprocess_by_kind`` the
    settings of ``result.by_kind`` (emptied by a tuning without kinds: its
    settings are for every image), and ``validation["tuning"]`` records the
    scores before and after, the data and the number of images. Everything else, including the weights file and
    its recorded checksum, stays as it was.

    Parameters
    ----------
    model_dir
        The model folder.
    result
        From :func:`tune_postprocess`.
    data
        What the model was tuned on, for the record (e.g. the dataset path and split).
    expected_weights_sha256
        The checksum recorded when the model was loaded: if the folder now
        records another one, it was replaced (retrained) while tuning and
        nothing is written.

    Returns
    -------
    Path
        The ``config.json`` written.

    Raises
    ------
    ModelError
        Not a model folder, a folder replaced while tuning, or weights that no
        longer match their checksum.
    """
    from nucseg.models.folder import read_model_config, rewrite_model_config

    model_dir = Path(model_dir)
    config, weights_sha256 = read_model_config(model_dir)
    if expected_weights_sha256 is not None and weights_sha256 != expected_weights_sha256:
        raise ModelError(
            model_dir, "the model folder was replaced while tuning (retrained?); config.json not written, tune again"
        )
    validation = dict(config.validation)
    validation[VALIDATION_KEY] = {
        "dsb_score_before": result.initial_score,
        "dsb_score_after": result.final_score,
        "n_images": result.n_images,
        "data": data,
        "postprocess_before": result.initial_config.to_dict(),
        **({"postprocess_by_kind_before": config.postprocess_by_kind} if config.postprocess_by_kind else {}),
        **(
            {"by_kind": {kind: {"n_images": r.n_images, "dsb_score": r.score} for kind, r in result.by_kind.items()}}
            if result.by_kind
            else {}
        ),
    }
    tuned = dataclasses.replace(
        config,
        postprocess=result.config.to_dict(),
        validation=validation,
        postprocess_by_kind={kind: r.config.to_dict() for kind, r in result.by_kind.items()},
    )
    return rewrite_model_config(model_dir, tuned)  # re-verifies the weights against their checksum

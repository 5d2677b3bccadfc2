"""Segmentation metrics: pixel (semantic) scores and instance matching scores.

Pixel scores
    :func:`pixel_accuracy`, :func:`iou` (Jaccard index of the foreground) and
    :func:`dice` compare two masks; any nonzero value is foreground.

Instance matching
    A ground-truth (GT) object and a predicted object *match* at threshold
    ``t`` when their intersection over union is strictly greater than ``t``
    (IoU > t, as in the Kaggle metric). For ``t >= 0.5`` an object has at most
    one partner with IoU > t (two disjoint partners would each need to cover
    more than half of it), so the matching is unique and needs no assignment
    solver. Below 0.5 an object can pass the threshold with several partners,
    and the result would depend on an assignment rule (Hungarian, greedy, ...);
    such thresholds raise ``ValueError`` rather than pick one silently.

    With TP matched pairs, FP unmatched predictions and FN unmatched GT objects:
    precision = TP / n_pred, recall = TP / n_true,
    F1 = 2 TP / (2 TP + FP + FN), accuracy = TP / (TP + FP + FN) and
    panoptic quality PQ = (sum of matched IoUs) / (TP + FP/2 + FN/2)
    (Kirillov et al. 2019; segmentation quality times recognition quality).

Kaggle Data Science Bowl 2018 metric
    For one image, at each threshold ``t`` in :data:`DSB_THRESHOLDS`
    (0.50, 0.55, ..., 0.95) compute TP(t) / (TP(t) + FP(t) + FN(t)); the image
    score (:func:`dsb_score`) is the mean over the ten thresholds and the
    dataset score is the mean over images. The leaderboard called the
    per-threshold value "average precision"; StarDist calls it "accuracy".
    ``ap50`` and ``ap75`` below are this value at t = 0.5 and t = 0.75.

Empty images
    When both the GT and the prediction are empty, the prediction is correct:
    every per-threshold score, precision, recall, F1, accuracy, PQ, mean
    matched IoU, pixel IoU and Dice is 1.0. When exactly one of them is empty,
    they are all 0.0 (pixel accuracy is still the fraction of equal pixels).

The instance functions take label images: integer arrays of the same shape,
0 for background and any positive value (not necessarily sequential) per
object. Overlaps are counted once over joint label pairs, sparsely, so the
cost is linear in the number of pixels, not in objects times pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse

#: IoU thresholds of the Kaggle DSB2018 metric: 0.50, 0.55, ..., 0.95 (rounded
#: so that a threshold equals the float of its decimal, e.g. exactly 0.75).
DSB_THRESHOLDS: np.ndarray = np.round(np.arange(0.5, 1.0, 0.05), 2)

_MIN_THRESHOLD = 0.5


# ------------------------------------------------------------------ pixel scores


def _foregrounds(true_mask: np.ndarray, pred_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true_mask, pred_mask = np.asarray(true_mask), np.asarray(pred_mask)
    if true_mask.shape != pred_mask.shape:
        raise ValueError(f"shapes differ: truth {true_mask.shape}, prediction {pred_mask.shape}")
    return true_mask != 0, pred_mask != 0


def pixel_accuracy(true_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Fraction of pixels whose foreground/background class is right.

    Parameters
    ----------
    true_mask, pred_mask : ndarray of bool or int, same shape
        Nonzero is foreground (label images are accepted).

    Returns
    -------
    float in [0, 1]; 1.0 for zero-size inputs.
    """
    true_fg, pred_fg = _foregrounds(true_mask, pred_mask)
    return float(np.mean(true_fg == pred_fg)) if true_fg.size else 1.0


def iou(true_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Jaccard index |T ∩ P| / |T ∪ P| of the two foregrounds.

    Parameters
    ----------
    true_mask, pred_mask : ndarray of bool or int, same shape
        Nonzero is foreground.

    Returns
    -------
    float in [0, 1]; 1.0 when both foregrounds are empty.
    """
    true_fg, pred_fg = _foregrounds(true_mask, pred_mask)
    union = np.count_nonzero(true_fg | pred_fg)
    return _ratio(np.count_nonzero(true_fg & pred_fg), union)


def dice(true_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Dice coefficient 2 |T ∩ P| / (|T| + |P|) of the two foregrounds.

    Parameters
    ----------
    true_mask, pred_mask : ndarray of bool or int, same shape
        Nonzero is foreground.

    Returns
    -------
    float in [0, 1]; 1.0 when both foregrounds are empty.
    """
    true_fg, pred_fg = _foregrounds(true_mask, pred_mask)
    total = np.count_nonzero(true_fg) + np.count_nonzero(pred_fg)
    return _ratio(2 * np.count_nonzero(true_fg & pred_fg), total)


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, or 1.0 for 0 / 0 (both sides empty: a correct answer)."""
    return float(numerator) / float(denominator) if denominator else 1.0


# ------------------------------------------------------------------ IoU matrix


@dataclass(frozen=True, eq=False)
class IoUMatrix:
    """Sparse IoU between every GT object and every predicted object.

    Only pairs that overlap are stored; all other pairs have IoU 0.

    Attributes
    ----------
    true_ids : ndarray of int, shape (n_true,)
        Label values of the GT objects, ascending; row ``i`` is ``true_ids[i]``.
    pred_ids : ndarray of int, shape (n_pred,)
        Label values of the predicted objects, ascending.
    rows, cols : ndarray of intp, shape (n_pairs,)
        Indices into ``true_ids`` and ``pred_ids`` of the overlapping pairs.
    values : ndarray of float64, shape (n_pairs,)
        IoU of each overlapping pair, in (0, 1].
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    @property
    def n_true(self) -> int:
        return len(self.true_ids)

    @property
    def n_pred(self) -> int:
        return len(self.pred_ids)

    def to_sparse(self) -> scipy.sparse.csr_array:
        """The matrix as a ``(n_true, n_pred)`` scipy CSR array."""
        return scipy.sparse.csr_array((self.values, (self.rows, self.cols)), shape=(self.n_true, self.n_pred))

    def to_dense(self) -> np.ndarray:
        """The matrix as a dense ``(n_true, n_pred)`` float64 array (for small inputs)."""
        dense = np.zeros((self.n_true, self.n_pred))
        dense[self.rows, self.cols] = self.values
        return dense


def _check_labels(true_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true_labels, pred_labels = np.asarray(true_labels), np.asarray(pred_labels)
    if true_labels.shape != pred_labels.shape:
        raise ValueError(f"shapes differ: truth {true_labels.shape}, prediction {pred_labels.shape}")
    for name, labels in (("truth", true_labels), ("prediction", pred_labels)):
        if labels.dtype.kind not in "biu":
            raise ValueError(f"{name} labels must be an integer array, got dtype {labels.dtype}")
        if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
            raise ValueError(f"{name} labels hold negative values")
    return true_labels, pred_labels


def _sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened labels renumbered 1..n (0 kept), and the original value of each 1..n."""
    from skimage.segmentation import relabel_sequential

    if labels.dtype.kind == "b":
        labels = labels.view(np.uint8)
    relabeled, _, inverse = relabel_sequential(labels)
    original_ids = np.asarray(inverse.out_values)[np.asarray(inverse.in_values) != 0]
    return relabeled.ravel().astype(np.intp, copy=False), original_ids


def iou_matrix(true_labels: np.ndarray, pred_labels: np.ndarray) -> IoUMatrix:
    """IoU of every overlapping pair of GT and predicted objects.

    Parameters
    ----------
    true_labels, pred_labels : ndarray of int, same shape (any number of dimensions)
        Label images: 0 background, any positive value per object.

    Returns
    -------
    IoUMatrix
        Sparse; computed from the counts of joint label pairs in one pass.

    Raises
    ------
    ValueError
        Different shapes, non-integer dtype or negative labels.
    """
    true_labels, pred_labels = _check_labels(true_labels, pred_labels)
    true_seq, true_ids = _sequential(true_labels)
    pred_seq, pred_ids = _sequential(pred_labels)
    n_true, n_pred = len(true_ids), len(pred_ids)
    true_areas = np.bincount(true_seq, minlength=n_true + 1)
    pred_areas = np.bincount(pred_seq, minlength=n_pred + 1)
    both = (true_seq > 0) & (pred_seq > 0)
    pair_keys = true_seq[both].astype(np.int64) * (n_pred + 1) + pred_seq[both]
    keys, intersections = np.unique(pair_keys, return_counts=True)
    true_index, pred_index = np.divmod(keys, n_pred + 1)
    unions = true_areas[true_index] + pred_areas[pred_index] - intersections
    values = intersections / unions
    return IoUMatrix(
        true_ids,
        pred_ids,
        (true_index - 1).astype(np.intp),
        (pred_index - 1).astype(np.intp),
        values.astype(np.float64),
    )


# ------------------------------------------------------------------ matching


@dataclass(frozen=True, eq=False)
class Matching:
    """One-to-one matching of GT and predicted objects at one IoU threshold.

    Attributes
    ----------
    threshold
        Objects match when IoU > threshold.
    n_true, n_pred
        Number of GT and predicted objects.
    tp, fp, fn
        Matched pairs, unmatched predictions, unmatched GT objects.
    precision, recall, f1
        TP / n_pred, TP / n_true, 2 TP / (2 TP + FP + FN).
    accuracy
        TP / (TP + FP + FN): the Kaggle DSB2018 per-threshold score (StarDist's
        "accuracy", the leaderboard's "AP").
    mean_matched_iou
        Mean IoU of the matched pairs (segmentation quality); 0.0 when nothing
        matched, 1.0 when both images are empty.
    panoptic_quality
        Sum of matched IoUs / (TP + FP/2 + FN/2).
    pairs : ndarray of int, shape (tp, 2)
        ``(true label, predicted label)`` of each matched pair, original values.
    pair_iou : ndarray of float64, shape (tp,)
        IoU of each matched pair.
    """

    threshold: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    mean_matched_iou: float
    panoptic_quality: float
    pairs: np.ndarray = field(repr=False)
    pair_iou: np.ndarray = field(repr=False)


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not _MIN_THRESHOLD <= threshold < 1.0:
        raise ValueError(
            f"threshold must be in [0.5, 1), got {threshold}: below 0.5 an object can pass the "
            "threshold with several partners and the matching is no longer unique"
        )
    return threshold


def match_iou(matrix: IoUMatrix, *, threshold: float = 0.5) -> Matching:
    """Match the objects of a precomputed :class:`IoUMatrix` at ``IoU > threshold``.

    See :func:`match_instances`.
    """
    threshold = _check_threshold(threshold)
    matched = matrix.values > threshold  # unique for threshold >= 0.5: see module docstring
    pairs = np.stack([matrix.true_ids[matrix.rows[matched]], matrix.pred_ids[matrix.cols[matched]]], axis=1)
    pair_iou = matrix.values[matched]
    tp = len(pair_iou)
    n_true, n_pred = matrix.n_true, matrix.n_pred
    fp, fn = n_pred - tp, n_true - tp
    both_empty = n_true == 0 and n_pred == 0
    return Matching(
        threshold=threshold,
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        fp=fp,
        fn=fn,
        precision=_ratio(tp, n_pred) if n_pred or both_empty else 0.0,
        recall=_ratio(tp, n_true) if n_true or both_empty else 0.0,
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        accuracy=_ratio(tp, tp + fp + fn),
        mean_matched_iou=_ratio(pair_iou.sum(), tp) if tp or both_empty else 0.0,
        panoptic_quality=_ratio(pair_iou.sum(), tp + fp / 2 + fn / 2),
        pairs=pairs,
        pair_iou=pair_iou,
    )


def match_instances(true_labels: np.ndarray, pred_labels: np.ndarray, *, threshold: float = 0.5) -> Matching:
    """Match GT and predicted objects one-to-one at ``IoU > threshold``.

    Parameters
    ----------
    true_labels, pred_labels : ndarray of int, same shape
        Label images: 0 background, any positive value per object.
    threshold
        IoU threshold in [0.5, 1). Matching is strict (IoU > threshold), as in
        the Kaggle DSB2018 metric.

    Returns
    -------
    Matching

    Raises
    ------
    ValueError
        Threshold below 0.5 (the matching would not be unique; see the module
        docstring) or not below 1, different shapes, or bad label arrays.
    """
    _check_threshold(threshold)
    return match_iou(iou_matrix(true_labels, pred_labels), threshold=threshold)


def _counts_per_threshold(matrix: IoUMatrix, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    candidates = np.sort(matrix.values[matrix.values > _MIN_THRESHOLD])
    # number of candidate IoUs strictly above each threshold
    tp = len(candidates) - np.searchsorted(candidates, thresholds, side="right")
    return tp, matrix.n_pred - tp, matrix.n_true - tp


def _accuracies(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    return np.array([_ratio(t, t + p + n) for t, p, n in zip(tp, fp, fn)])


def dsb_score(true_labels: np.ndarray, pred_labels: np.ndarray) -> float:
    """Kaggle DSB2018 score of one image: mean over :data:`DSB_THRESHOLDS` of TP / (TP + FP + FN).

    Parameters
    ----------
    true_labels, pred_labels : ndarray of int, same shape
        Label images: 0 background, any positive value per object.

    Returns
    -------
    float in [0, 1]; 1.0 when both are empty, 0.0 when exactly one is.
    """
    return dsb_score_of_matrix(iou_matrix(true_labels, pred_labels))


def dsb_score_of_matrix(matrix: IoUMatrix) -> float:
    """:func:`dsb_score` from an IoU matrix already computed (threshold searches reuse one matrix)."""
    tp, fp, fn = _counts_per_threshold(matrix, DSB_THRESHOLDS)
    return float(np.mean(_accuracies(tp, fp, fn)))


# ------------------------------------------------------------------ per image and per dataset


@dataclass(frozen=True)
class ImageScores:
    """All scores of one image.

    Attributes
    ----------
    dsb_score
        Mean of ``ap`` over :data:`DSB_THRESHOLDS` (the Kaggle DSB2018 score).
    ap50, ap75
        TP / (TP + FP + FN) at IoU > 0.5 and IoU > 0.75.
    f1_50
        F1 at IoU > 0.5.
    pq
        Panoptic quality at IoU > 0.5.
    pixel_iou, pixel_accuracy, dice
        Foreground pixel scores.
    n_true, n_pred
        Number of GT and predicted objects.
    thresholds
        :data:`DSB_THRESHOLDS`, as a tuple.
    ap, tp, fp, fn
        Per-threshold TP / (TP + FP + FN) and counts, aligned with ``thresholds``
        (the counts allow pooling over a dataset).
    """

    dsb_score: float
    ap50: float
    ap75: float
    f1_50: float
    pq: float
    pixel_iou: float
    pixel_accuracy: float
    dice: float
    n_true: int
    n_pred: int
    thresholds: tuple[float, ...]
    ap: tuple[float, ...]
    tp: tuple[int, ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]


def _threshold_index(thresholds: Sequence[float], value: float) -> int:
    return int(np.flatnonzero(np.isclose(thresholds, value))[0])


def image_scores(true_labels: np.ndarray, pred_labels: np.ndarray) -> ImageScores:
    """Instance and pixel scores of one predicted label image.

    Parameters
    ----------
    true_labels, pred_labels : ndarray of int, same shape
        Label images: 0 background, any positive value per object.

    Returns
    -------
    ImageScores
        The IoU matrix is computed once and reused for every threshold.
    """
    matrix = iou_matrix(true_labels, pred_labels)
    tp, fp, fn = _counts_per_threshold(matrix, DSB_THRESHOLDS)
    ap = _accuracies(tp, fp, fn)
    at_50 = match_iou(matrix, threshold=0.5)
    i50, i75 = _threshold_index(DSB_THRESHOLDS, 0.5), _threshold_index(DSB_THRESHOLDS, 0.75)
    return ImageScores(
        dsb_score=float(ap.mean()),
        ap50=float(ap[i50]),
        ap75=float(ap[i75]),
        f1_50=at_50.f1,
        pq=at_50.panoptic_quality,
        pixel_iou=iou(true_labels, pred_labels),
        pixel_accuracy=pixel_accuracy(true_labels, pred_labels),
        dice=dice(true_labels, pred_labels),
        n_true=matrix.n_true,
        n_pred=matrix.n_pred,
        thresholds=tuple(float(t) for t in DSB_THRESHOLDS),
        ap=tuple(float(a) for a in ap),
        tp=tuple(int(t) for t in tp),
        fp=tuple(int(f) for f in fp),
        fn=tuple(int(f) for f in fn),
    )


@dataclass(frozen=True)
class DatasetScores:
    """Scores of a dataset of images.

    Attributes
    ----------
    n_images
        Number of images.
    dsb_score, ap50, ap75, pq, pixel_iou, pixel_accuracy, dice
        Means over images of the per-image scores (the Kaggle DSB2018 score is
        the mean of the per-image ``dsb_score``).
    f1_50, precision_50, recall_50
        Pooled over the dataset: TP, FP and FN at IoU > 0.5 are summed over
        images first, so that images with many nuclei weigh more.
    n_true, n_pred
        Total number of GT and predicted objects.
    thresholds
        :data:`DSB_THRESHOLDS`, as a tuple.
    ap
        Per-threshold TP / (TP + FP + FN), mean over images (its mean is
        ``dsb_score``).
    tp, fp, fn
        Per-threshold counts, summed over images.
    """

    n_images: int
    dsb_score: float
    ap50: float
    ap75: float
    f1_50: float
    pq: float
    pixel_iou: float
    pixel_accuracy: float
    dice: float
    precision_50: float
    recall_50: float
    n_true: int
    n_pred: int
    thresholds: tuple[float, ...]
    ap: tuple[float, ...]
    tp: tuple[int, ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]

    @property
    def tp_50(self) -> int:
        return self.tp[_threshold_index(self.thresholds, 0.5)]

    @property
    def fp_50(self) -> int:
        return self.fp[_threshold_index(self.thresholds, 0.5)]

    @property
    def fn_50(self) -> int:
        return self.fn[_threshold_index(self.thresholds, 0.5)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists) with the pooled counts at IoU 0.5."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        out.update(tp_50=self.tp_50, fp_50=self.fp_50, fn_50=self.fn_50)
        return out


def summarize(scores: Sequence[ImageScores]) -> DatasetScores:
    """Combine per-image scores into dataset scores (means, and pooled F1 at IoU 0.5).

    Raises
    ------
    ValueError
        No scores, or scores computed at different thresholds.
    """
    scores = list(scores)
    if not scores:
        raise ValueError("no image scores to summarize")
    thresholds = scores[0].thresholds
    if any(s.thresholds != thresholds for s in scores):
        raise ValueError("image scores were computed at different thresholds")

    def mean(name: str) -> float:
        return float(np.mean([getattr(s, name) for s in scores]))

    tp = np.sum([s.tp for s in scores], axis=0)
    fp = np.sum([s.fp for s in scores], axis=0)
    fn = np.sum([s.fn for s in scores], axis=0)
    n_true = sum(s.n_true for s in scores)
    n_pred = sum(s.n_pred for s in scores)
    i50 = _threshold_index(thresholds, 0.5)
    tp50, fp50, fn50 = int(tp[i50]), int(fp[i50]), int(fn[i50])
    both_empty = n_true == 0 and n_pred == 0
    return DatasetScores(
        n_images=len(scores),
        dsb_score=mean("dsb_score"),
        ap50=mean("ap50"),
        ap75=mean("ap75"),
        f1_50=_ratio(2 * tp50, 2 * tp50 + fp50 + fn50),
        pq=mean("pq"),
        pixel_iou=mean("pixel_iou"),
        pixel_accuracy=mean("pixel_accuracy"),
        dice=mean("dice"),
        precision_50=_ratio(tp50, n_pred) if n_pred or both_empty else 0.0,
        recall_50=_ratio(tp50, n_true) if n_true or both_empty else 0.0,
        n_true=n_true,
        n_pred=n_pred,
        thresholds=thresholds,
        ap=tuple(float(a) for a in np.mean([s.ap for s in scores], axis=0)),
        tp=tuple(int(t) for t in tp),
        fp=tuple(int(f) for f in fp),
        fn=tuple(int(f) for f in fn),
    )

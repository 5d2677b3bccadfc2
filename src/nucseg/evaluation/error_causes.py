"""Why a segmentation falls short: every unmatched nucleus given one cause.

The DSB2018 score and AP@0.5 (:mod:`nucseg.evaluation.metrics`) say how much
is wrong, not what. :func:`error_breakdown` sorts each ground-truth (GT)
nucleus that no prediction matches at ``IoU > threshold`` into one cause,
tried in this order:

missed
    Less than ``covered`` (half) of its pixels lie in predicted nuclei.
merged
    The prediction holding most of its pixels also holds at least ``part`` (a
    quarter) of another GT nucleus: touching nuclei taken for one.
split
    Two or more predictions each hold at least ``part`` of it: one nucleus cut
    into pieces.
poorly outlined
    The rest: found, but its outline is too far off to match.

and each unmatched prediction that lies at least ``covered`` on background as
*spurious* (debris, texture, a nucleus the annotators left out). The other
unmatched predictions are the far side of merges, splits and poor outlines,
counted there. Missed nuclei keep their areas, and those below ``small`` (a
quarter) of the median area of the image's GT nuclei are counted apart, since
small ones (micronuclei, dense tissue) and faint large ones call for different
remedies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from skimage.metrics import contingency_table
from skimage.segmentation import relabel_sequential

from nucseg.evaluation.metrics import IoUMatrix, match_iou

#: The causes of an unmatched GT nucleus, in the order they are tried.
CAUSES = ("missed", "merged", "split", "poorly_outlined")


@dataclass(frozen=True)
class ErrorBreakdown:
    """Counts of matched and unmatched nuclei by cause (module docstring).

    Attributes
    ----------
    n_true, n_pred
        GT and predicted nuclei.
    matched
        GT nuclei matched one-to-one at IoU > the threshold.
    missed, merged, split, poorly_outlined
        Unmatched GT nuclei by cause; with ``matched`` they sum to ``n_true``.
    missed_small
        Of ``missed``, the nuclei below ``small`` of the median GT area of their image.
    spurious
        Predictions that lie mostly on background.
    missed_areas : ndarray of int, shape (missed,)
        Area in pixels of each missed GT nucleus.
    """

    n_true: int
    n_pred: int
    matched: int
    missed: int
    merged: int
    split: int
    poorly_outlined: int
    missed_small: int
    spurious: int
    missed_areas: np.ndarray = field(repr=False)


def error_breakdown(
    true_labels: np.ndarray,
    pred_labels: np.ndarray,
    *,
    threshold: float = 0.5,
    covered: float = 0.5,
    part: float = 0.25,
    small: float = 0.25,
) -> ErrorBreakdown:
    """Sort the unmatched nuclei of one image by cause.

    Parameters
    ----------
    true_labels, pred_labels : ndarray of int, shape (H, W)
        Label images (0 background), same shape.
    threshold
        IoU above which a pair matches (0.5: AP@0.5's matching).
    covered
        Fraction of a GT nucleus inside predictions below which it is missed,
        and fraction of a prediction on background from which it is spurious.
    part
        Fraction of a GT nucleus that a prediction must hold to count in a
        merge or a split.
    small
        Fraction of the median GT area below which a missed nucleus counts as small.

    Returns
    -------
    ErrorBreakdown
    """
    # numbered 1..n first: the contingency table has a row per label value up to the largest
    true_labels = relabel_sequential(np.asarray(true_labels))[0]
    pred_labels = relabel_sequential(np.asarray(pred_labels))[0]
    table = contingency_table(true_labels.ravel(), pred_labels.ravel()).tocsr()  # row and column 0: background
    shared = table[1:, 1:]  # sparse: pixels of GT nucleus i in prediction j
    true_areas = np.asarray(table[1:].sum(axis=1)).ravel()
    pred_areas = np.asarray(table[:, 1:].sum(axis=0)).ravel()
    on_background = np.asarray(table[[0], 1:].todense()).ravel()
    matching = match_iou(_iou_matrix(shared, true_areas, pred_areas), threshold=threshold)
    by_prediction = shared.tocsc()

    matched_true = np.isin(np.arange(1, len(true_areas) + 1), matching.pairs[:, 0])
    counts = dict.fromkeys(CAUSES, 0)
    missed_areas = []
    for i in np.flatnonzero(~matched_true):
        row = shared[[i]]
        held = row.data / true_areas[i]  # fraction of this nucleus in each prediction touching it
        if held.sum() < covered:
            counts["missed"] += 1
            missed_areas.append(true_areas[i])
            continue
        best = row.indices[np.argmax(row.data)]
        column = by_prediction[:, [best]]
        others_held = column.data / true_areas[column.indices]
        if np.any(others_held[column.indices != i] >= part):
            counts["merged"] += 1
        elif np.count_nonzero(held >= part) >= 2:
            counts["split"] += 1
        else:
            counts["poorly_outlined"] += 1
    matched_pred = np.isin(np.arange(1, len(pred_areas) + 1), matching.pairs[:, 1])
    spurious = ~matched_pred & (on_background >= covered * pred_areas)
    missed_areas = np.asarray(missed_areas, dtype=np.int64)
    small_area = small * np.median(true_areas) if len(true_areas) else 0.0
    return ErrorBreakdown(
        n_true=len(true_areas),
        n_pred=len(pred_areas),
        matched=int(matched_true.sum()),
        spurious=int(spurious.sum()),
        missed_small=int(np.count_nonzero(missed_areas < small_area)),
        missed_areas=missed_areas,
        **counts,
    )


def _iou_matrix(shared, true_areas: np.ndarray, pred_areas: np.ndarray) -> IoUMatrix:
    """The metrics' :class:`IoUMatrix` of labels numbered 1..n, from their overlap counts (one pixel pass)."""
    pairs = shared.tocoo()
    rows, cols = pairs.row.astype(np.intp), pairs.col.astype(np.intp)
    values = pairs.data / (true_areas[rows] + pred_areas[cols] - pairs.data)
    return IoUMatrix(
        np.arange(1, len(true_areas) + 1), np.arange(1, len(pred_areas) + 1), rows, cols, values.astype(np.float64)
    )


def combine(breakdowns: Iterable[ErrorBreakdown]) -> ErrorBreakdown:
    """The breakdown of several images together: counts summed, areas joined."""
    breakdowns = list(breakdowns)
    counts = {
        name: sum(getattr(b, name) for b in breakdowns)
        for name in ("n_true", "n_pred", "matched", "missed_small", "spurious", *CAUSES)
    }
    return ErrorBreakdown(
        **counts, missed_areas=np.concatenate([b.missed_areas for b in breakdowns] or [np.zeros(0, np.int64)])
    )

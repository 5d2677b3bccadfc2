"""Tests of nucseg.evaluation.error_causes: each unmatched nucleus given one cause, on drawn and real labels."""

from __future__ import annotations

import numpy as np
from skimage.draw import disk
from skimage.segmentation import find_boundaries

from nucseg.evaluation.error_causes import combine, error_breakdown


def _disk(labels: np.ndarray, centre: tuple[int, int], radius: int, value: int) -> None:
    labels[disk(centre, radius, shape=labels.shape)] = value


def test_each_kind_of_error_is_told_apart():
    truth, pred = np.zeros((100, 200), np.int32), np.zeros((100, 200), np.int32)
    _disk(truth, (20, 20), 8, 1), _disk(pred, (20, 20), 8, 1)  # found
    _disk(truth, (20, 60), 8, 2)  # missed
    _disk(truth, (50, 20), 8, 3), _disk(truth, (50, 37), 8, 4)  # two touching nuclei of one size ...
    pred[np.isin(truth, (3, 4))] = 2  # ... found as one
    _disk(truth, (80, 60), 10, 5)  # one nucleus ...
    columns = np.arange(200)
    pred[(truth == 5) & (columns < 60)], pred[(truth == 5) & (columns > 60)] = 3, 4  # ... cut in two halves
    _disk(truth, (50, 120), 10, 6), _disk(pred, (50, 126), 10, 5)  # found, outlined too far off
    _disk(pred, (80, 170), 6, 6)  # nothing there
    errors = error_breakdown(truth, pred)
    assert (errors.n_true, errors.n_pred, errors.matched) == (6, 6, 1)
    assert (errors.missed, errors.merged, errors.split, errors.poorly_outlined, errors.spurious) == (1, 2, 1, 1, 1)
    assert errors.matched + errors.missed + errors.merged + errors.split + errors.poorly_outlined == errors.n_true
    assert errors.missed_areas.tolist() == [np.count_nonzero(truth == 2)]
    assert errors.missed_small == 0  # as large as the others


def test_real_nuclei_dropped_and_merged_are_counted_as_such(dsb_samples):
    truth = next(s.labels for s in dsb_samples.values() if s.labels.max() >= 20)
    assert error_breakdown(truth, truth).matched == len(np.unique(truth)) - 1
    # two real nuclei that touch, joined into one prediction, and the smallest nucleus left out
    ids, areas = np.unique(truth[truth > 0], return_counts=True)
    touching = None
    for value in ids:
        ring = find_boundaries(truth == value, mode="outer")
        neighbours = set(np.unique(truth[ring])) - {0, value}
        if neighbours:
            touching = (value, min(neighbours))
            break
    assert touching is not None, "the fixture holds touching nuclei"
    smallest = ids[np.argmin(areas)]
    pred = truth.copy()
    pred[pred == touching[1]] = touching[0]
    if smallest not in touching:
        pred[pred == smallest] = 0
    errors = error_breakdown(truth, pred)
    # the larger of two joined nuclei still matches (IoU = its share of the joined area, over one half)
    joined_areas = [np.count_nonzero(truth == value) for value in touching]
    assert errors.merged == 1 + (joined_areas[0] == joined_areas[1])
    assert errors.split == 0 and errors.spurious == 0 and errors.poorly_outlined == 0
    assert errors.missed == (smallest not in touching)
    assert errors.matched == errors.n_true - errors.merged - errors.missed


def test_images_combine_by_summing_counts_and_joining_areas():
    truth, pred = np.zeros((40, 40), np.int32), np.zeros((40, 40), np.int32)
    _disk(truth, (10, 10), 5, 1), _disk(truth, (30, 30), 2, 2), _disk(pred, (10, 10), 5, 1)
    one = error_breakdown(truth, pred)
    both = combine([one, one])
    assert (both.n_true, both.matched, both.missed) == (4, 2, 2)
    assert both.missed_areas.tolist() == 2 * one.missed_areas.tolist()
    assert one.missed_small == 1 and both.missed_small == 2  # 13 pixels against a median of 47
    assert error_breakdown(truth, pred, small=0.1).missed_small == 0
    empty = combine([])
    assert empty.n_true == 0 and empty.missed_small == 0 and empty.missed_areas.size == 0


def test_label_values_far_apart_are_counted_like_sequential_ones():
    truth, pred = np.zeros((40, 40), np.uint32), np.zeros((40, 40), np.uint32)
    _disk(truth, (10, 10), 5, 4_000_000_000), _disk(truth, (30, 30), 5, 7), _disk(pred, (10, 10), 5, 3_000_000_000)
    errors = error_breakdown(truth, pred)
    assert (errors.n_true, errors.matched, errors.missed) == (2, 1, 1)

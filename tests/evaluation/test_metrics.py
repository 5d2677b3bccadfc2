"""Tests of nucseg.evaluation.metrics: hand-computed examples, invariances, and an independent reference."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from skimage.draw import disk

from nucseg.evaluation.metrics import (
    dice,
    dsb_score,
    DSB_THRESHOLDS,
    image_scores,
    iou,
    iou_matrix,
    match_instances,
    pixel_accuracy,
    summarize,
)

KAGGLE_THRESHOLDS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


# ----------------------------------------------------------------- hand-computed examples


def two_squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 3x3 squares offset by one pixel diagonally: overlap 2x2 = 4, union 14."""
    truth = np.zeros((6, 6), dtype=np.int32)
    pred = np.zeros((6, 6), dtype=np.int32)
    truth[0:3, 0:3] = 1
    pred[1:4, 1:4] = 1
    return truth, pred


def three_objects() -> tuple[np.ndarray, np.ndarray]:
    """A 10x12 scene whose every score is worked out by hand below.

    GT 1: 4x4 square (16 px); prediction 40 is it shifted one column right:
        intersection 12, union 20, IoU 0.6 exactly.
    GT 2: 3x3 square (9 px); prediction 7 is it minus one corner pixel:
        intersection 8, union 9, IoU 8/9.
    GT 3: 2x2 square (4 px), not predicted (a false negative).
    Prediction 13: 2x4 block (8 px) over background (a false positive).
    """
    truth = np.zeros((10, 12), dtype=np.int32)
    truth[0:4, 0:4] = 1
    truth[6:9, 0:3] = 2
    truth[6:8, 8:10] = 3
    pred = np.zeros((10, 12), dtype=np.uint16)
    pred[0:4, 1:5] = 40
    pred[6:9, 0:3] = 7
    pred[8, 2] = 0
    pred[0:2, 8:12] = 13
    return truth, pred


def test_pixel_scores_of_two_offset_squares():
    truth, pred = two_squares()
    assert iou(truth, pred) == pytest.approx(4 / 14)
    assert dice(truth, pred) == pytest.approx(2 * 4 / (9 + 9))
    assert pixel_accuracy(truth, pred) == pytest.approx((36 - 10) / 36)  # 10 pixels in one square only


def test_pixel_scores_of_three_objects():
    truth, pred = three_objects()
    # GT foreground 16 + 9 + 4 = 29, predicted 16 + 8 + 8 = 32, both 12 + 8 = 20
    assert iou(truth, pred) == pytest.approx(20 / (29 + 32 - 20))
    assert dice(truth, pred) == pytest.approx(2 * 20 / (29 + 32))
    assert pixel_accuracy(truth, pred) == pytest.approx((120 - (29 + 32 - 2 * 20)) / 120)


def test_pixel_scores_accept_bool_masks_and_reject_shape_mismatch():
    truth, pred = two_squares()
    assert iou(truth > 0, pred > 0) == pytest.approx(4 / 14)
    with pytest.raises(ValueError, match="shapes differ"):
        dice(truth, pred[:5])


def test_iou_matrix_of_three_objects():
    truth, pred = three_objects()
    matrix = iou_matrix(truth, pred)
    assert list(matrix.true_ids) == [1, 2, 3]
    assert list(matrix.pred_ids) == [7, 13, 40]
    expected = np.array([[0.0, 0.0, 0.6], [8 / 9, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(matrix.to_dense(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(matrix.to_sparse().toarray(), expected, rtol=0, atol=1e-12)
    assert len(matrix.values) == 2  # only overlapping pairs are stored


def test_iou_matrix_of_two_squares_is_below_every_threshold():
    truth, pred = two_squares()
    matrix = iou_matrix(truth, pred)
    assert matrix.values.tolist() == pytest.approx([4 / 14])
    matching = match_instances(truth, pred, threshold=0.5)
    assert (matching.tp, matching.fp, matching.fn) == (0, 1, 1)
    assert dsb_score(truth, pred) == 0.0


@pytest.mark.parametrize(
    ("threshold", "tp"),
    [(0.5, 2), (0.55, 2), (0.59, 2), (0.6, 1), (0.75, 1), (0.88, 1), (0.9, 0), (0.95, 0)],
)
def test_matching_counts_at_several_thresholds(threshold, tp):
    # IoUs are 0.6 and 8/9 = 0.889; matching is strict, so IoU 0.6 does not pass 0.6.
    truth, pred = three_objects()
    matching = match_instances(truth, pred, threshold=threshold)
    assert (matching.n_true, matching.n_pred) == (3, 3)
    assert (matching.tp, matching.fp, matching.fn) == (tp, 3 - tp, 3 - tp)
    assert matching.precision == pytest.approx(tp / 3)
    assert matching.recall == pytest.approx(tp / 3)
    assert matching.f1 == pytest.approx(2 * tp / (2 * tp + 2 * (3 - tp)))
    assert matching.accuracy == pytest.approx(tp / (tp + 2 * (3 - tp)))


def test_matching_pairs_quality_and_panoptic_quality_at_half():
    truth, pred = three_objects()
    matching = match_instances(truth, pred)
    pairs = {tuple(p) for p in matching.pairs.tolist()}
    assert pairs == {(1, 40), (2, 7)}
    assert sorted(matching.pair_iou.tolist()) == pytest.approx([0.6, 8 / 9])
    assert matching.mean_matched_iou == pytest.approx((0.6 + 8 / 9) / 2)
    assert matching.panoptic_quality == pytest.approx((0.6 + 8 / 9) / (2 + 1 / 2 + 1 / 2))
    assert matching.precision == pytest.approx(2 / 3)
    assert matching.f1 == pytest.approx(2 / 3)
    assert matching.accuracy == pytest.approx(2 / 4)


def test_dsb_score_of_three_objects():
    truth, pred = three_objects()
    # TP = 2 at t = 0.50, 0.55 (accuracy 2/4); TP = 1 at 0.60 ... 0.85, six thresholds (1/5); TP = 0 at 0.90, 0.95
    expected = (2 * (2 / 4) + 6 * (1 / 5) + 2 * 0) / 10
    assert dsb_score(truth, pred) == pytest.approx(expected, abs=1e-12)


def test_image_scores_of_three_objects():
    truth, pred = three_objects()
    scores = image_scores(truth, pred)
    assert scores.dsb_score == pytest.approx(0.22, abs=1e-12)
    assert scores.ap50 == pytest.approx(2 / 4)
    assert scores.ap75 == pytest.approx(1 / 5)
    assert scores.f1_50 == pytest.approx(2 / 3)
    assert scores.pq == pytest.approx((0.6 + 8 / 9) / 3)
    assert scores.pixel_iou == pytest.approx(20 / 41)
    assert scores.dice == pytest.approx(40 / 61)
    assert scores.pixel_accuracy == pytest.approx(99 / 120)
    assert (scores.n_true, scores.n_pred) == (3, 3)
    assert scores.tp == (2, 2, 1, 1, 1, 1, 1, 1, 0, 0)
    assert all(fp == 3 - tp and fn == 3 - tp for tp, fp, fn in zip(scores.tp, scores.fp, scores.fn))
    assert np.mean(scores.ap) == pytest.approx(scores.dsb_score)


def test_dsb_thresholds_are_the_kaggle_thresholds():
    assert DSB_THRESHOLDS.tolist() == KAGGLE_THRESHOLDS  # exact floats, no drift


# ----------------------------------------------------------------- invalid input


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.49, 1.0])
def test_thresholds_outside_unique_matching_range_are_refused(threshold):
    truth, pred = three_objects()
    with pytest.raises(ValueError, match="threshold"):
        match_instances(truth, pred, threshold=threshold)


def test_instance_functions_reject_bad_labels():
    truth, pred = three_objects()
    with pytest.raises(ValueError, match="shapes differ"):
        match_instances(truth, pred[:, :11])
    with pytest.raises(ValueError, match="shapes differ"):
        dsb_score(truth, pred.T)
    with pytest.raises(ValueError, match="integer"):
        image_scores(truth, pred.astype(np.float32))
    with pytest.raises(ValueError, match="negative"):
        iou_matrix(-truth, pred)


# ----------------------------------------------------------------- invariances and edge cases


def random_scene(rng: np.random.Generator, shape=(64, 64), n_objects=10) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    for label in range(1, n_objects + 1):
        center = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        rr, cc = disk(center, rng.uniform(2, 9), shape=shape)
        labels[rr, cc] = label  # later discs cover earlier ones, like touching nuclei
    return labels


def perturbed(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction: objects shifted, grown, shrunk, dropped, split or invented."""
    from scipy import ndimage as ndi

    pred = np.zeros_like(labels)
    next_label = 1
    for label in np.unique(labels[labels > 0]):
        mask = labels == label
        action = rng.integers(0, 6)
        if action == 0:
            continue  # dropped
        if action == 1:
            mask = ndi.shift(mask, rng.integers(-3, 4, size=2), order=0)
        elif action == 2:
            mask = ndi.binary_dilation(mask, iterations=int(rng.integers(1, 3)))
        elif action == 3:
            mask = ndi.binary_erosion(mask)
        elif action == 4:  # split in two along a row
            rows = np.flatnonzero(mask.any(axis=1))
            cut = rows[len(rows) // 2]
            upper = mask.copy()
            upper[cut:] = False
            pred[upper & (pred == 0)] = next_label
            next_label += 1
            mask = mask & ~upper
        pred[mask & (pred == 0)] = next_label
        next_label += 1
    for _ in range(rng.integers(0, 3)):  # spurious detections
        rr, cc = disk((rng.integers(0, labels.shape[0]), rng.integers(0, labels.shape[1])), 3, shape=labels.shape)
        pred[rr, cc] = next_label
        next_label += 1
    return pred * 7 + (pred > 0) * 3  # non-sequential label values


def reference_iou_matrix(truth: np.ndarray, pred: np.ndarray) -> tuple[list, list, np.ndarray]:
    """Straightforward IoU matrix: one boolean mask per object, every pair by loops."""
    true_ids = [v for v in np.unique(truth) if v != 0]
    pred_ids = [v for v in np.unique(pred) if v != 0]
    ious = np.zeros((len(true_ids), len(pred_ids)))
    for i, t in enumerate(true_ids):
        true_mask = truth == t
        for j, p in enumerate(pred_ids):
            pred_mask = pred == p
            ious[i, j] = np.logical_and(true_mask, pred_mask).sum() / np.logical_or(true_mask, pred_mask).sum()
    return true_ids, pred_ids, ious


def reference_dsb_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """Kaggle DSB2018 score by the book: greedy one-to-one matching at IoU > t for each t."""
    true_ids, pred_ids, ious = reference_iou_matrix(truth, pred)
    if not true_ids and not pred_ids:
        return 1.0
    per_threshold = []
    for threshold in KAGGLE_THRESHOLDS:
        used_pred: set[int] = set()
        tp = 0
        for i in range(len(true_ids)):
            candidates = [j for j in range(len(pred_ids)) if j not in used_pred and ious[i, j] > threshold]
            if candidates:
                used_pred.add(max(candidates, key=lambda j: ious[i, j]))
                tp += 1
        fp, fn = len(pred_ids) - tp, len(true_ids) - tp
        per_threshold.append(tp / (tp + fp + fn))
    return float(np.mean(per_threshold))


@pytest.mark.parametrize("seed", range(25))
def test_dsb_score_agrees_with_independent_reference(seed):
    rng = np.random.default_rng(seed)
    truth = random_scene(rng, n_objects=int(rng.integers(0, 14)))
    pred = perturbed(truth, rng)
    assert abs(dsb_score(truth, pred) - reference_dsb_score(truth, pred)) < 1e-9
    assert abs(image_scores(truth, pred).dsb_score - reference_dsb_score(truth, pred)) < 1e-9


@pytest.mark.parametrize("seed", range(5))
def test_iou_matrix_agrees_with_dense_reference(seed):
    rng = np.random.default_rng(100 + seed)
    truth = random_scene(rng)
    pred = perturbed(truth, rng)
    true_ids, pred_ids, expected = reference_iou_matrix(truth, pred)
    matrix = iou_matrix(truth, pred)
    assert matrix.true_ids.tolist() == true_ids
    assert matrix.pred_ids.tolist() == pred_ids
    np.testing.assert_allclose(matrix.to_dense(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_matching_is_one_to_one(seed):
    rng = np.random.default_rng(200 + seed)
    truth = random_scene(rng, n_objects=20)
    pred = perturbed(truth, rng)
    matching = match_instances(truth, pred, threshold=0.5)
    assert len(set(matching.pairs[:, 0].tolist())) == matching.tp
    assert len(set(matching.pairs[:, 1].tolist())) == matching.tp
    assert all(v > 0.5 for v in matching.pair_iou)


@pytest.mark.parametrize("seed", range(5))
def test_permuting_label_ids_changes_nothing(seed):
    rng = np.random.default_rng(300 + seed)
    truth = random_scene(rng)
    pred = perturbed(truth, rng)

    def permute(labels):
        ids = np.unique(labels[labels > 0])
        lookup = np.zeros(labels.max() + 1, dtype=np.int64)
        lookup[ids] = rng.permutation(1000)[: len(ids)] + 1
        return lookup[labels]

    permuted = asdict(image_scores(permute(truth), permute(pred)))
    original = asdict(image_scores(truth, pred))
    assert permuted.keys() == original.keys()
    # floats may differ in the last bit: the matched IoUs are summed in another order
    assert all(np.allclose(permuted[k], original[k], rtol=1e-12, atol=0) for k in original)
    assert (permuted["tp"], permuted["fp"], permuted["fn"]) == (original["tp"], original["fp"], original["fn"])


def test_perfect_prediction_scores_one_everywhere():
    truth = random_scene(np.random.default_rng(7))
    scores = image_scores(truth, truth)
    assert all(
        getattr(scores, name) == 1.0
        for name in ("dsb_score", "ap50", "ap75", "f1_50", "pq", "pixel_iou", "pixel_accuracy", "dice")
    )
    assert all(a == 1.0 for a in scores.ap)
    matching = match_instances(truth, truth, threshold=0.95)
    assert matching.tp == scores.n_true > 0
    assert (matching.precision, matching.recall, matching.mean_matched_iou) == (1.0, 1.0, 1.0)


def test_empty_prediction_against_nuclei_scores_zero():
    truth = random_scene(np.random.default_rng(8))
    empty = np.zeros_like(truth)
    for truth_image, pred_image in ((truth, empty), (empty, truth)):
        scores = image_scores(truth_image, pred_image)
        assert all(
            getattr(scores, name) == 0.0 for name in ("dsb_score", "ap50", "ap75", "f1_50", "pq", "pixel_iou", "dice")
        )
        matching = match_instances(truth_image, pred_image)
        assert all(
            getattr(matching, name) == 0.0
            for name in ("precision", "recall", "f1", "accuracy", "mean_matched_iou", "panoptic_quality")
        )
    assert image_scores(truth, empty).pixel_accuracy == pytest.approx(np.mean(truth == 0))


def test_both_empty_is_a_correct_answer():
    empty = np.zeros((16, 16), dtype=np.int32)
    scores = image_scores(empty, empty)
    assert all(
        getattr(scores, name) == 1.0
        for name in ("dsb_score", "ap50", "ap75", "f1_50", "pq", "pixel_iou", "pixel_accuracy", "dice")
    )
    assert (scores.n_true, scores.n_pred) == (0, 0)
    matching = match_instances(empty, empty)
    assert all(
        getattr(matching, name) == 1.0
        for name in ("precision", "recall", "f1", "accuracy", "mean_matched_iou", "panoptic_quality")
    )
    assert matching.pairs.shape == (0, 2)


# ----------------------------------------------------------------- dataset scores


def test_summarize_means_per_image_scores_and_pools_f1():
    truth, pred = three_objects()  # TP 2, FP 1, FN 1 at 0.5; DSB 0.22
    single = np.zeros((5, 5), dtype=np.int32)
    single[1:3, 1:3] = 1  # perfect: TP 1
    scores = [image_scores(truth, pred), image_scores(single, single)]
    summary = summarize(scores)
    assert summary.n_images == 2
    assert summary.dsb_score == pytest.approx((0.22 + 1.0) / 2)
    assert summary.ap50 == pytest.approx((0.5 + 1.0) / 2)
    assert summary.ap75 == pytest.approx((0.2 + 1.0) / 2)
    assert summary.pq == pytest.approx(((0.6 + 8 / 9) / 3 + 1.0) / 2)
    assert summary.pixel_iou == pytest.approx((20 / 41 + 1.0) / 2)
    # pooled: TP 3, FP 1, FN 1 -> 6 / 8, not the mean of per-image F1 (2/3 + 1) / 2
    assert summary.f1_50 == pytest.approx(6 / 8)
    assert (summary.tp_50, summary.fp_50, summary.fn_50) == (3, 1, 1)
    assert (summary.n_true, summary.n_pred) == (4, 4)
    assert summary.precision_50 == pytest.approx(3 / 4)
    assert summarize([image_scores(truth, pred), image_scores(single, single)]) == summary


def test_summary_to_dict_is_json_ready():
    truth, pred = three_objects()
    summary = summarize([image_scores(truth, pred)])
    data = json.loads(json.dumps(summary.to_dict()))
    required = {"n_images", "dsb_score", "ap50", "ap75", "f1_50", "pq", "pixel_iou", "tp_50", "fp_50", "fn_50"}
    assert required <= set(data)
    assert data["dsb_score"] == pytest.approx(0.22)
    assert data["thresholds"] == KAGGLE_THRESHOLDS


def test_summarize_refuses_nothing():
    with pytest.raises(ValueError):
        summarize([])

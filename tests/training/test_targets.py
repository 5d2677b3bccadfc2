"""Tests of nucseg.training.targets on hand-made label images and the real DSB2018 fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from nucseg.models.outputs import TARGETS
from nucseg.training.targets import binary_target, distance_target, make_target, three_class_target, touching_mask


def two_touching_squares() -> np.ndarray:
    """Two 6x6 squares sharing a vertical edge, on a 12x18 background."""
    labels = np.zeros((12, 18), dtype=np.int32)
    labels[3:9, 2:8] = 1
    labels[3:9, 8:14] = 2
    return labels


def square_target(labels: np.ndarray, top: int, left: int, size: int) -> None:
    """Write the expected classes of one square: a one-pixel rim of 2 around an interior of 1."""
    labels[top : top + size, left : left + size] = 2
    labels[top + 1 : top + size - 1, left + 1 : left + size - 1] = 1


def test_three_class_touching_squares():
    labels = two_touching_squares()
    expected = np.zeros_like(labels, dtype=np.uint8)
    square_target(expected, 3, 2, 6)
    square_target(expected, 3, 8, 6)

    target = three_class_target(labels)

    assert target.dtype == np.uint8
    assert target.shape == labels.shape
    np.testing.assert_array_equal(target, expected)
    # The shared edge is boundary on both sides: the two interiors are two pixels apart.
    assert np.all(target[3:9, 7] == 2) and np.all(target[3:9, 8] == 2)
    assert np.all(target[labels == 0] == 0)


def test_three_class_small_objects_are_all_boundary():
    labels = np.zeros((8, 8), dtype=np.int32)
    labels[1, 1] = 3  # one pixel
    labels[4:6, 4:6] = 7  # 2x2
    target = three_class_target(labels)
    np.testing.assert_array_equal(target, np.where(labels > 0, 2, 0))


def test_three_class_empty_image():
    target = three_class_target(np.zeros((5, 7), dtype=np.int32))
    assert target.shape == (5, 7) and not target.any()


def test_binary_target():
    labels = two_touching_squares()
    target = binary_target(labels)
    assert target.dtype == np.uint8
    np.testing.assert_array_equal(target, (labels > 0).astype(np.uint8))
    assert set(np.unique(target)) == {0, 1}


def test_make_target_dispatches_and_rejects_unknown_kinds():
    labels = two_touching_squares()
    np.testing.assert_array_equal(make_target(labels, "three_class"), three_class_target(labels))
    np.testing.assert_array_equal(make_target(labels, "binary"), binary_target(labels))
    assert all(make_target(labels, kind).max() == TARGETS[kind].classes - 1 for kind in TARGETS)
    with pytest.raises(ValueError, match="unknown target 'distance'.*three_class, binary"):
        make_target(labels, "distance")


def differs_from_a_4_neighbour(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour (inside the image) of another label; written out with plain slicing."""
    differs = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    differs[1:] |= vertical
    differs[:-1] |= vertical
    differs[:, 1:] |= horizontal
    differs[:, :-1] |= horizontal
    return differs


def test_three_class_on_real_fixtures(dsb_samples):
    for sample in dsb_samples.values():
        labels = sample.labels
        target = three_class_target(labels)
        foreground = labels > 0
        expected_boundary = foreground & differs_from_a_4_neighbour(labels)
        np.testing.assert_array_equal(target == 2, expected_boundary, err_msg=sample.name)
        np.testing.assert_array_equal(target == 1, foreground & ~expected_boundary, err_msg=sample.name)
        np.testing.assert_array_equal(target == 0, ~foreground, err_msg=sample.name)
        # Every nucleus keeps at least one boundary pixel, so none disappears from the target.
        ids_with_boundary = np.unique(labels[target == 2])
        assert set(ids_with_boundary) == set(np.unique(labels[foreground])), sample.name


def test_touching_mask_marks_contacts_and_narrow_gaps_only():
    labels = two_touching_squares()  # squares 1 and 2 share the edge between columns 7 and 8
    labels[3:9, 16:18] = 3  # two pixels right of square 2 (columns 14, 15 are background)
    mask = touching_mask(labels, gap=1)
    assert mask.dtype == bool and mask.shape == labels.shape
    assert np.all(mask[3:9, 7:9])  # both rims along the shared edge
    assert not mask[3:9, 2:7].any() and not mask[3:9, 9:13].any()  # the rest of the squares
    assert not mask[3:9, 14:16].any()  # a 2-pixel gap is wider than gap=1 reaches
    wider = touching_mask(labels, gap=2)
    assert np.all(wider[3:9, 14:16])  # the background between squares 2 and 3
    assert np.all(wider[3:9, 6:10]) and not wider[3:9, 10:13].any()  # two pixels each side of the contact
    assert not touching_mask(labels == 1, gap=2).any()  # a single nucleus touches nothing
    assert not touching_mask(np.zeros((5, 5), dtype=np.uint16)).any()
    with pytest.raises(ValueError, match="gap"):
        touching_mask(labels, gap=0)


def test_touching_mask_on_real_fixtures(dsb_samples):
    marked = 0
    for sample in dsb_samples.values():
        mask = touching_mask(sample.labels, gap=2)
        marked += int(mask.sum())
        # Every marked nucleus pixel has a different nucleus within 2 pixels.
        rows, cols = np.nonzero(mask & (sample.labels > 0))
        for row, col in list(zip(rows, cols))[:50]:
            window = sample.labels[max(row - 2, 0) : row + 3, max(col - 2, 0) : col + 3]
            assert len(np.unique(window[window > 0])) >= 2
    assert marked > 0  # the fixtures hold touching nuclei


def test_distance_target_is_one_at_each_centre_and_falls_to_the_shared_edge():
    labels = np.zeros((20, 30), dtype=np.int32)
    labels[5:15, 3:13] = 1  # two touching squares
    labels[5:15, 13:23] = 2
    distance = distance_target(labels)
    assert distance.dtype == np.float32 and distance.shape == labels.shape
    assert np.all(distance[labels == 0] == 0)
    assert all(np.isclose(distance[labels == index].max(), 1.0) for index in (1, 2))
    # Where the two nuclei touch, each one's distance is at its smallest: a valley between two peaks.
    row = distance[10]
    assert row[12] < row[8] and row[13] < row[17] and row[12] == row[3]
    assert np.all(distance[labels > 0] > 0)


def test_distance_target_of_a_nucleus_cut_by_the_image_border_is_highest_at_the_border():
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[:4, 2:8] = 3  # cut by the top border, which is not its edge
    distance = distance_target(labels)
    assert distance[0, 4] == distance[:4, 4].max() > distance[3, 4]

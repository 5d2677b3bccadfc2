"""Merging and splitting nuclei of real DSB2018 annotations along drawn strokes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from nucseg.postprocess.edit import merge_under_stroke, split_along_line, stroke_pixels


@pytest.fixture(scope="module")
def labels(dsb_samples):
    return dsb_samples["00071198"].labels.astype(np.int32)


def _centroid(labels, label):
    return np.array(ndi.center_of_mass(labels == label))


def _nearest_neighbours(labels):
    """Two different nuclei whose centroids are closest."""
    ids = [i for i in np.unique(labels) if i]
    centres = {i: _centroid(labels, i) for i in ids}
    pairs = [(np.linalg.norm(centres[a] - centres[b]), a, b) for a in ids for b in ids if a < b]
    _, a, b = min(pairs)
    return int(a), int(b), centres[a], centres[b]


def _unchanged_elsewhere(before, after, labels_changed):
    outside = ~np.isin(before, labels_changed) & ~np.isin(after, labels_changed)
    return np.array_equal(before[outside], after[outside])


def test_stroke_pixels_form_a_connected_line_clipped_to_the_image():
    rows, columns = stroke_pixels(np.array([[2.2, -5.0], [2.0, 10.0], [9.0, 10.0]]), (8, 12))
    assert rows.min() >= 0 and rows.max() < 8 and columns.min() >= 0 and columns.max() < 12
    mask = np.zeros((8, 12), bool)
    mask[rows, columns] = True
    assert mask[2, 0:11].all() and mask[2:8, 10].all()
    assert ndi.label(mask, structure=np.ones((3, 3)))[1] == 1


def test_merge_joins_the_nuclei_under_the_stroke_into_the_smallest_label(labels):
    a, b, centre_a, centre_b = _nearest_neighbours(labels)
    before = labels.copy()
    edit = merge_under_stroke(labels, np.stack([centre_a, centre_b]))
    target = min(a, b)
    assert edit.changed == (target,)
    assert not np.any(edit.labels == max(a, b))
    merged = edit.labels == target
    assert np.all(merged[(labels == a) | (labels == b)])
    assert ndi.label(merged)[1] == 1, "the merged nucleus is one object"
    assert _unchanged_elsewhere(labels, edit.labels, [a, b])
    assert np.array_equal(labels, before), "the input is left as it was"


def test_merge_with_fewer_than_two_nuclei_changes_nothing_and_says_why(labels):
    a, _, centre_a, _ = _nearest_neighbours(labels)
    edit = merge_under_stroke(labels, centre_a[None])
    assert edit.changed == () and np.array_equal(edit.labels, labels)
    assert "touches 1" in edit.message


def test_split_cuts_a_nucleus_in_two_along_its_minor_axis_keeping_its_area(labels):
    from skimage.measure import regionprops

    biggest = max(regionprops(labels), key=lambda r: r.area)
    row, column = biggest.centroid
    # The minor axis, drawn well beyond the nucleus on both sides.
    direction = np.array([np.cos(biggest.orientation), np.sin(biggest.orientation)])
    minor = np.array([-direction[1], direction[0]])
    reach = biggest.axis_major_length
    line = np.stack([np.array([row, column]) - reach * minor, np.array([row, column]) + reach * minor])
    edit = split_along_line(labels, line)
    new = int(labels.max()) + 1
    assert edit.changed == (biggest.label, new)
    pieces = [edit.labels == biggest.label, edit.labels == new]
    assert all(0.3 * biggest.area < piece.sum() < 0.7 * biggest.area for piece in pieces), "cut through the centre"
    assert np.array_equal(pieces[0] | pieces[1], labels == biggest.label), "no pixel of the nucleus is lost"
    assert all(ndi.label(piece)[1] == 1 for piece in pieces)
    assert _unchanged_elsewhere(labels, edit.labels, [biggest.label, new])


def test_split_leaves_nuclei_the_line_only_enters_or_misses(labels):
    from skimage.measure import regionprops

    nucleus = max(regionprops(labels), key=lambda r: r.area)
    row, column = nucleus.centroid
    inside_only = split_along_line(labels, np.array([[row, column], [row + 1, column + 1]]))
    background = np.argwhere(ndi.binary_erosion(labels == 0, iterations=3))[0]
    missing = split_along_line(labels, np.stack([background, background]))
    assert all(edit.changed == () and np.array_equal(edit.labels, labels) for edit in (inside_only, missing))
    assert "cuts no nucleus" in inside_only.message


def test_split_widens_a_label_type_that_cannot_hold_the_new_label():
    labels = np.zeros((20, 40), np.uint8)
    labels[5:15, 5:35] = 255
    edit = split_along_line(labels, np.array([[0.0, 20.0], [19.0, 20.0]]))
    assert edit.changed == (255, 256)
    assert edit.labels.dtype.itemsize > 1 and set(np.unique(edit.labels)) == {0, 255, 256}

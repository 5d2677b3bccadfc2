"""Tests of nucseg.postprocess.outlines: pixel-edge outlines whose areas are the nuclei's pixel counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from nucseg.io.images import read_labels
from nucseg.postprocess.outlines import inner_edges, nucleus_outlines

SAMPLE_LABELS = Path(__file__).parents[2] / "src" / "nucseg" / "data" / "samples" / "brightfield_1a115525_labels.tif"


def test_every_nucleus_of_a_real_label_image_has_an_outline_of_its_area():
    labels = read_labels(SAMPLE_LABELS)
    outlines = nucleus_outlines(labels)
    areas = np.bincount(labels.ravel())
    assert [outline.label for outline in outlines] == [int(k) for k in np.flatnonzero(areas[1:]) + 1]
    assert all(outline.geometry.is_valid and outline.geometry.area == areas[outline.label] for outline in outlines)


def test_a_hole_is_kept_and_a_label_in_two_pieces_is_a_multipolygon():
    labels = np.zeros((60, 60), np.uint16)
    labels[disk((20, 20), 10)] = 1
    labels[disk((20, 20), 4)] = 0  # a hole
    labels[40:45, 40:45] = 2
    labels[45:50, 45:50] = 2  # touches the first square at a corner only
    ring, pieces = nucleus_outlines(labels, offset=(100, 7))
    assert ring.geometry.geom_type == "Polygon" and len(ring.geometry.interiors) == 1
    assert ring.geometry.area == np.count_nonzero(labels == 1)
    rows, cols = np.nonzero(labels == 1)
    assert ring.geometry.bounds == (cols.min() + 7, rows.min() + 100, cols.max() + 8, rows.max() + 101)  # pixel edges
    assert pieces.geometry.geom_type == "MultiPolygon" and len(pieces.geometry.geoms) == 2
    assert pieces.geometry.area == 50


def test_no_nuclei_no_outlines():
    assert nucleus_outlines(np.zeros((8, 8), np.int32)) == []


def test_inner_edges_are_skimages_inner_boundaries_of_touching_cut_and_holed_nuclei():
    from skimage.segmentation import find_boundaries

    real = read_labels(SAMPLE_LABELS)
    touching = np.zeros((40, 50), np.int32)
    touching[5:20, 5:25], touching[5:20, 25:45], touching[20:40, 0:50] = 1, 2, 3  # cut by the border
    touching[28:32, 20:24] = 0  # a hole
    rng = np.random.default_rng(0)
    speckle = rng.integers(0, 4, (30, 31)).astype(np.uint16)  # every pixel next to another label
    thin = [np.array([[1, 1, 2, 0, 2]]), np.array([[1], [0], [1]]), np.ones((1, 1), int), np.zeros((0, 5), int)]
    for labels in (real, touching, speckle, np.zeros((5, 5), np.int32), *thin):
        assert np.array_equal(inner_edges(labels), find_boundaries(labels, mode="inner"))
    with pytest.raises(ValueError, match="2-D"):
        inner_edges(np.zeros((2, 5, 5), np.int32))
    assert not inner_edges(touching)[39, 10]  # the image border is no edge
    assert inner_edges(touching)[19, 10] and inner_edges(touching)[20, 10]  # both sides of a contact

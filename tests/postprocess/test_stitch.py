"""Tests of nucseg.postprocess.stitch: 2-D nuclei of Z planes linked into 3-D nuclei by overlap."""

from __future__ import annotations

import numpy as np
import pytest

from nucseg.postprocess.stitch import link_planes


def _disc(shape, centre, radius, value):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return np.where((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2, value, 0)


def test_overlapping_nuclei_of_consecutive_planes_become_one_3d_nucleus():
    shape = (40, 60)
    z0 = _disc(shape, (20, 15), 6, 1) + _disc(shape, (20, 45), 6, 2)
    z1 = _disc(shape, (21, 16), 6, 7) + _disc(shape, (20, 45), 6, 3)  # both moved a little, renumbered
    z2 = _disc(shape, (21, 16), 6, 1) + _disc(shape, (5, 30), 3, 2)  # the second ends; a new one starts
    linked = link_planes(np.stack([z0, z1, z2]), 0.5)
    assert linked.dtype == np.uint32
    assert linked[0, 20, 15] == linked[1, 21, 16] == linked[2, 21, 16]
    assert linked[0, 20, 45] == linked[1, 20, 45] != linked[0, 20, 15]
    assert linked[2, 5, 30] not in (linked[0, 20, 15], linked[0, 20, 45])
    assert sorted(np.unique(linked)) == [0, 1, 2, 3]
    assert all(np.array_equal(linked[z] > 0, plane > 0) for z, plane in enumerate((z0, z1, z2)))


def test_a_weak_overlap_does_not_link_and_each_nucleus_links_once():
    shape = (30, 30)
    z0 = _disc(shape, (15, 15), 8, 1)
    z1 = _disc(shape, (15, 8), 5, 1) + _disc(shape, (15, 22), 5, 2)  # two halves of one: only one may take it
    linked = link_planes(np.stack([z0, z1]), 0.2)
    assert len({linked[1, 15, 8], linked[1, 15, 22]} & {linked[0, 15, 15]}) <= 1
    assert link_planes(np.stack([z0, z1]), 0.9)[1].max() > linked[0].max()  # nothing overlaps that well
    with pytest.raises(ValueError):
        link_planes(z0, 0.5)

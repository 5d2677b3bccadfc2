"""Tests of nucseg.io.axes: ``--axes`` declares what a file does not, and never contradicts what it does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from nucseg.errors import InputError
from nucseg.io.axes import given_axes
from nucseg.io.images import read_stack


def test_a_plain_multi_page_tiff_is_a_z_stack_with_axes_zyx(tmp_path):
    planes = np.random.default_rng(0).integers(0, 255, (5, 40, 30), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "z.tif", planes, photometric="minisblack")  # pages, no axes metadata
    with pytest.raises(InputError, match="--axes"):
        read_stack(tmp_path / "z.tif")
    stack = read_stack(tmp_path / "z.tif", channel_axis="ZYX")
    assert stack.plane_axes == "Z" and stack.plane_shape == (5,) and np.array_equal(stack.planes, planes)
    channels = read_stack(tmp_path / "z.tif", channel_axis="CYX", channel=2)
    assert channels.plane_axes == "" and np.array_equal(channels.planes[0], planes[1])


def test_axes_may_name_only_the_longer_axes_and_never_contradict_the_file():
    path = Path("x.tif")
    assert given_axes(path, (1, 3, 64, 64), "QQYX", "CYX") == "QCYX"
    assert given_axes(path, (64, 64, 3), "YXQ", "yxc") == "YXC"
    assert given_axes(path, (3, 64, 64), "SYX", "CYX") == "CYX"  # RGB samples are channels
    for shape, file_axes, axes, problem in [
        ((3, 64, 64), "ZYX", "CYX", "contradicts"),
        ((3, 64, 64), "QYX", "ZZX", "once"),
        ((3, 64, 64), "QYX", "ZCYX", "names 4 axes"),
        ((3, 64, 64), "QYX", "ZYW", "letters"),
    ]:
        with pytest.raises(InputError, match=problem):
            given_axes(path, shape, file_axes, axes)

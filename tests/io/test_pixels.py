"""The one rule for pixel types (nucseg.io.pixels), on every path that segments pixels: whole files, blocks, arrays."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

from nucseg.batch.blockwise import segment_large
from nucseg.cli import main
from nucseg.errors import InputError
from nucseg.inference.model import load_model
from nucseg.io.images import read_labels, read_stack
from nucseg.io.lazy import open_image
from nucseg.io.pixels import usable_pixels


@pytest.fixture(scope="module")
def nuclei(dsb_samples):
    """A real fluorescence image (DSB2018 fixture 0280fa8f, 256 x 256), gray uint8."""
    return np.ascontiguousarray(dsb_samples["0280fa8f"].image[..., 0])


@pytest.fixture(scope="module")
def classical():
    return load_model("classical")


def test_nan_and_infinities_are_refused_with_their_count():
    image = np.ones((10, 20), dtype=np.float32)
    image[0, :3] = np.nan
    image[1, 0] = np.inf
    image[2, :2] = -np.inf
    with pytest.raises(InputError) as error:
        usable_pixels(image, "ratio.tif")
    message = str(error.value)
    assert message.startswith("ratio.tif: 6 of 200 pixels are NaN or infinite (3 NaN, 1 +inf, 2 -inf)")
    assert "Remove NaNs" in message and "\n" not in message


def test_booleans_become_0_and_255_and_other_types_are_kept():
    mask = np.array([[True, False], [False, True]])
    assert np.array_equal(usable_pixels(mask), [[255, 0], [0, 255]]) and usable_pixels(mask).dtype == np.uint8
    for dtype in (np.int8, np.uint32, np.int64, np.uint64, np.float16, np.float64):
        image = np.arange(4, dtype=dtype).reshape(2, 2)
        assert usable_pixels(image) is image
    with pytest.raises(InputError, match="complex128 are not intensities"):
        usable_pixels(np.ones((2, 2), dtype=complex))


def _write(path, image):
    tifffile.imwrite(path, image)
    return path


def test_an_all_nan_tiff_is_refused_in_one_line_not_one_nucleus(tmp_path, capsys):
    path = _write(tmp_path / "blank.tif", np.full((64, 64), np.nan, dtype=np.float32))
    code = main(["segment", str(path), "--out", str(tmp_path / "out"), "--model", "classical"])
    captured = capsys.readouterr()
    assert code == 1
    assert "blank.tif: every pixel is NaN or infinite (4,096 NaN)" in captured.err
    assert not (tmp_path / "out" / "blank_labels.tif").exists()


def test_a_nan_square_in_a_real_image_is_refused_with_its_count_on_every_path(tmp_path, nuclei, classical):
    image = np.tile(nuclei, (2, 2)).astype(np.float32)
    image[100:120, 30:60] = np.nan
    path = _write(tmp_path / "holes.tif", image)
    expected = re.escape("600 of 262,144 pixels are NaN or infinite (600 NaN)")
    with pytest.raises(InputError, match=expected):  # whole files
        read_stack(path)
    with pytest.raises(ValueError, match=expected):  # arrays
        classical.segment(image)
    with pytest.raises(InputError, match=r"holes.tif: 600 of 20,480 pixels in rows 64:144, columns 0:256 are NaN"):
        open_image(path).read(slice(64, 144), slice(0, 256))  # blocks
    with pytest.raises(InputError, match="NaN or infinite"):
        segment_large(path, tmp_path / "labels.tif", model=classical, block_size=256, margin=32)
    assert not (tmp_path / "labels.tif").exists()


def _count(labels):
    return int(np.count_nonzero(np.unique(labels)))


@pytest.mark.parametrize(
    "name, convert",
    [
        ("negative floats", lambda image: image.astype(np.float32) - 1000.0),
        ("float64 in [0, 1]", lambda image: image / 255.0),
        ("int32 x 1000", lambda image: image.astype(np.int32) * 1000),
        ("negative int64", lambda image: image.astype(np.int64) - 2**40),
        ("uint32 at the top of the range", lambda image: image.astype(np.uint32) + np.uint32(2**31)),
        ("uint64", lambda image: image.astype(np.uint64)),
    ],
)
def test_other_numeric_types_segment_as_the_8_bit_image(tmp_path, nuclei, classical, name, convert):
    reference = classical.segment(nuclei).labels
    assert _count(reference) > 10
    path = _write(tmp_path / "converted.tif", convert(nuclei))
    labels = classical.segment(read_stack(path).planes[0]).labels
    assert np.array_equal(labels > 0, reference > 0), name
    assert _count(labels) == _count(reference)


def test_a_boolean_tiff_is_segmented_as_its_0_255_image_on_every_path(tmp_path, nuclei, classical):
    mask = nuclei > 60
    expected = classical.segment(mask.astype(np.uint8) * 255).labels
    assert _count(expected) > 10
    path = _write(tmp_path / "mask.tif", mask)
    assert np.array_equal(classical.segment(mask).labels, expected)
    assert np.array_equal(classical.segment(read_stack(path).planes[0]).labels, expected)
    block = open_image(path).read(slice(0, 256), slice(0, 256))
    assert block.dtype == np.uint8 and np.array_equal(block, mask * np.uint8(255))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64, np.float32, bool])
def test_a_constant_image_has_no_nuclei(tmp_path, dtype, capsys):
    path = _write(tmp_path / "empty.tif", np.full((96, 96), 1 if dtype is bool else 7, dtype=dtype))
    code = main(["segment", str(path), "--out", str(tmp_path / "out"), "--model", "classical"])
    assert code == 0, capsys.readouterr().err
    assert read_labels(tmp_path / "out" / "empty_labels.tif").max() == 0


def test_the_network_refuses_nan_and_takes_negative_floats(nuclei):
    model = load_model("dsb2018")
    reference = model.segment(nuclei, diameter=None).labels
    shifted = model.segment(nuclei.astype(np.float32) - 500.0, diameter=None).labels
    assert _count(reference) > 10 and np.mean((reference > 0) == (shifted > 0)) > 0.999
    with pytest.raises(ValueError, match="every pixel is NaN"):
        model.segment(np.full(nuclei.shape, np.nan, dtype=np.float32))

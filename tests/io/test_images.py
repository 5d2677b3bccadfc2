"""Tests of nucseg.io.images, axes and atomic: reading every supported image kind, errors, and atomic writes."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from nucseg.errors import InputError
from nucseg.io.atomic import OutputExistsError
from nucseg.io.lazy import image_shape
from nucseg.io.images import (
    read_image,
    read_labels,
    read_mask_crop,
    read_pixel_size,
    read_stack,
    write_labels,
    write_png,
)

FIXTURES = Path(__file__).parents[1] / "data" / "dsb2018"
RNG = np.random.default_rng(42)


def _random(shape, dtype):
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _smooth_rgb(height=48, width=64):
    """A smooth colour gradient that JPEG keeps close to the original."""
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (height + width)], axis=-1).astype(np.uint8)


def write_png16(path: Path, array: np.ndarray, *, row_filter: int) -> None:
    """Write a 16-bit PNG directly (Pillow cannot write 16-bit colour PNGs).

    ``row_filter`` 0 (None), 1 (Sub) or 2 (Up): the Sub filter refers to the
    pixel one pixel to the left, so decoding it checks the bytes-per-pixel.
    """
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = array.astype(">u2").reshape(height, width * channels).view(np.uint8).reshape(height, -1)
    bpp = 2 * channels
    if row_filter == 1:
        filtered = raw.copy()
        filtered[:, bpp:] = raw[:, bpp:] - raw[:, :-bpp]  # uint8 arithmetic wraps modulo 256
    elif row_filter == 2:
        filtered = raw.copy()
        filtered[1:] = raw[1:] - raw[:-1]
    else:
        filtered = raw
    scanlines = np.concatenate([np.full((height, 1), row_filter, np.uint8), filtered], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines)) + chunk(b"IEND", b"")
    )


def _one_line_error(excinfo, path: Path, *phrases: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message
    assert all(phrase in message for phrase in phrases), message


# ------------------------------------------------------------------------ PNG


@pytest.mark.parametrize("mode, shape", [("L", (30, 40)), ("RGB", (30, 40, 3)), ("RGBA", (30, 40, 4))])
def test_png_8bit_round_trip(tmp_path, mode, shape):
    array = _random(shape, np.uint8)
    Image.fromarray(array, mode=mode).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.uint8
    assert np.array_equal(image, array)


def _write_png16_pillow(path, array):
    Image.fromarray(array).save(path)


def _write_png16_imageio(path, array):
    iio = pytest.importorskip("imageio.v3")
    iio.imwrite(path, array)


def _write_png16_direct(path, array):
    write_png16(path, array, row_filter=1)


@pytest.mark.parametrize("writer", [_write_png16_pillow, _write_png16_imageio, _write_png16_direct])
def test_png_16bit_gray_keeps_full_range(tmp_path, writer):
    array = _random((20, 33), np.uint16)
    array[0, :3] = [0, 40000, 65535]  # values above the int16 range must survive
    writer(tmp_path / "a.png", array)
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.uint16
    assert np.array_equal(image, array)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("row_filter", [0, 1, 2])
def test_png_16bit_colour_keeps_low_byte_and_needs_a_channel(tmp_path, channels, row_filter):
    # Pillow alone returns uint8 holding only the high byte of each sample.
    array = _random((17, 23, channels), np.uint16)
    write_png16(tmp_path / "a.png", array, row_filter=row_filter)
    with pytest.raises(InputError, match=f"a.png: image has {channels} channels .*--channel N"):
        read_image(tmp_path / "a.png")  # 16-bit colour is more often microscopy channels than a photograph
    image = np.stack([read_image(tmp_path / "a.png", channel=c) for c in range(1, channels + 1)], axis=-1)
    assert image.dtype == np.uint16
    assert np.array_equal(image, array)


def test_png_16bit_gray_alpha_gives_gray(tmp_path):
    array = _random((9, 11, 2), np.uint16)
    write_png16(tmp_path / "a.png", array, row_filter=1)
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.uint16
    assert np.array_equal(image, array[..., 0])


def test_a_png_too_small_for_its_header_is_refused_not_filled_with_zeros(tmp_path, png_claiming_size):
    png_claiming_size(tmp_path / "short.png", 2000, 2000)  # Pillow decodes it as 2000 x 2000 zeros
    with pytest.raises(InputError, match=r"short.png: truncated or corrupt: \d+ bytes cannot hold the 2000 x 2000"):
        read_image(tmp_path / "short.png")
    Image.fromarray(np.zeros((2000, 2000), np.uint8)).save(tmp_path / "black.png", optimize=True)
    assert read_image(tmp_path / "black.png").shape == (2000, 2000)  # as compressed as a real PNG can be


def test_a_large_genuine_png_reads_without_pillows_bomb_warning(tmp_path):
    Image.new("1", (9500, 9500)).save(tmp_path / "large.png")  # 90 million pixels: Pillow warns above 89 million
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_shape(tmp_path / "large.png") == (9500, 9500)
        assert read_image(tmp_path / "large.png").shape == (9500, 9500)


def test_a_tiff_whose_tiles_are_all_empty_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _random((64, 96), np.uint8), tile=(32, 32), compression="zstd")
    with tifffile.TiffFile(tmp_path / "a.tif", mode="r+b") as tif:
        counts = tif.pages[0].tags["TileByteCounts"]
        counts.overwrite([0] * len(counts.value))
    assert not tifffile.imread(tmp_path / "a.tif").any()  # tifffile reads empty tiles as zeros
    with pytest.raises(InputError, match="a.tif: holds no pixel data"):
        read_image(tmp_path / "a.tif")


def test_png_gray_alpha_drops_alpha(tmp_path):
    array = _random((9, 11, 2), np.uint8)
    Image.fromarray(array, mode="LA").save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), array[..., 0])


def test_png_1bit_becomes_uint8_0_255(tmp_path):
    mask = RNG.random((10, 12)) > 0.5
    Image.fromarray(mask).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.uint8
    assert np.array_equal(image, mask.astype(np.uint8) * 255)


def _palette_png(path: Path) -> tuple[np.ndarray, np.ndarray]:
    indices = RNG.integers(0, 4, size=(8, 10)).astype(np.uint8)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 30]], dtype=np.uint8)
    picture = Image.fromarray(indices, mode="P")
    picture.putpalette(palette.ravel().tolist())
    picture.save(path)
    return indices, palette


def test_palette_png_gives_colours_or_indices(tmp_path):
    indices, palette = _palette_png(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), palette[indices])
    assert np.array_equal(read_image(tmp_path / "a.png", palette_indices=True), indices)


def test_read_labels_of_palette_png_are_the_indices(tmp_path):
    indices, _ = _palette_png(tmp_path / "a.png")
    labels = read_labels(tmp_path / "a.png")
    assert labels.dtype == np.int32
    assert np.array_equal(labels, indices)


# ----------------------------------------------------------------------- JPEG


def test_jpeg_rgb_is_close_to_original(tmp_path):
    array = _smooth_rgb()
    Image.fromarray(array).save(tmp_path / "a.jpg", quality=95)
    image = read_image(tmp_path / "a.jpg")
    assert image.shape == array.shape and image.dtype == np.uint8
    assert np.abs(image.astype(int) - array).mean() < 3


def test_jpeg_gray(tmp_path):
    array = _smooth_rgb()[..., 0]
    Image.fromarray(array).save(tmp_path / "a.jpeg", quality=95)
    image = read_image(tmp_path / "a.jpeg")
    assert image.shape == array.shape
    assert np.abs(image.astype(int) - array).mean() < 3


def test_jpeg_cmyk_becomes_rgb(tmp_path):
    Image.fromarray(_smooth_rgb()).convert("CMYK").save(tmp_path / "a.jpg", quality=95)
    image = read_image(tmp_path / "a.jpg")
    assert image.shape == (48, 64, 3)


# ----------------------------------------------------------------------- TIFF


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_gray(tmp_path, dtype):
    array = RNG.random((20, 30)).astype(dtype) if dtype == np.float32 else _random((20, 30), dtype)
    tifffile.imwrite(tmp_path / "a.tif", array)
    image = read_image(tmp_path / "a.tif")
    assert image.dtype == dtype
    assert np.array_equal(image, array)


def test_tiff_8bit_rgb_and_rgba_are_photographs(tmp_path):
    rgb = _random((20, 30, 3), np.uint8)
    rgba = _random((20, 30, 4), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "rgba.tiff", rgba, photometric="rgb", extrasamples=["unassalpha"])
    assert np.array_equal(read_image(tmp_path / "rgb.tif"), rgb)
    assert np.array_equal(read_image(tmp_path / "rgba.tiff"), rgba)
    assert np.array_equal(read_image(tmp_path / "rgb.tif", channel=3), rgb[:, :, 2])


def test_16bit_rgb_tiff_is_not_guessed(tmp_path):
    rgb = _random((20, 30, 3), np.uint16)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "rgb.tif")
    _one_line_error(excinfo, tmp_path / "rgb.tif", "3 channels (1, 2, 3)", "--channel")
    assert np.array_equal(read_image(tmp_path / "rgb.tif", channel=1), rgb[:, :, 0])


def test_tiff_planar_rgb_is_channels_last(tmp_path):
    planar = _random((3, 20, 30), np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", planar, photometric="rgb", planarconfig="separate")
    assert np.array_equal(read_image(tmp_path / "a.tif"), np.moveaxis(planar, 0, -1))


@pytest.mark.parametrize(
    "kwargs", [{"imagej": True, "metadata": {"axes": "CYX"}}, {"ome": True, "metadata": {"axes": "CYX"}}]
)
def test_tiff_with_declared_channel_axis_needs_a_channel(tmp_path, kwargs):
    stack = _random((2, 20, 30), np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", stack, **kwargs)
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "a.tif")
    _one_line_error(excinfo, tmp_path / "a.tif", "2 channels", "--channel N (1 to 2)")
    assert np.array_equal(read_image(tmp_path / "a.tif", channel=2), stack[1])
    assert np.array_equal(read_image(tmp_path / "a.tif", channel="1"), stack[0])
    with pytest.raises(InputError, match="out of range"):
        read_image(tmp_path / "a.tif", channel=3)


def test_a_4_channel_imagej_tiff_with_dapi_last_is_read_by_channel_name(tmp_path):
    stack = _random((4, 20, 30), np.uint16)
    names = ["actin", "GFP", "mito", "DAPI"]
    tifffile.imwrite(tmp_path / "imagej.tif", stack, imagej=True, metadata={"axes": "CYX", "Labels": names})
    tifffile.imwrite(tmp_path / "ome.ome.tif", stack, ome=True, metadata={"axes": "CYX", "Channel": {"Name": names}})
    for name in ("imagej.tif", "ome.ome.tif"):
        with pytest.raises(InputError) as excinfo:
            read_image(tmp_path / name)
        _one_line_error(excinfo, tmp_path / name, "4 channels (1 actin, 2 GFP, 3 mito, 4 DAPI)", "--channel")
        assert np.array_equal(read_image(tmp_path / name, channel="dapi"), stack[3])
        with pytest.raises(InputError, match="no channel named 'Hoechst'"):
            read_image(tmp_path / name, channel="Hoechst")


def test_a_channel_of_an_imagej_hyperstack_is_chosen_by_the_name_every_plane_repeats(tmp_path):
    stack = _random((2, 3, 2, 20, 30), np.uint16)  # T, Z, C: ImageJ labels each of the 12 planes, C fastest
    tifffile.imwrite(tmp_path / "a.tif", stack, imagej=True, metadata={"axes": "TZCYX", "Labels": ["GFP", "DAPI"] * 6})
    read = read_stack(tmp_path / "a.tif", channel="DAPI")
    assert read.plane_axes == "TZ" and np.array_equal(read.planes, stack[:, :, 1].reshape(6, 20, 30))
    with pytest.raises(InputError, match=r"2 channels \(1 GFP, 2 DAPI\)"):
        read_stack(tmp_path / "a.tif")
    labels = [f"plane {i}" for i in range(12)]  # per-plane labels name no channel
    tifffile.imwrite(tmp_path / "b.tif", stack, imagej=True, metadata={"axes": "TZCYX", "Labels": labels})
    with pytest.raises(InputError, match=r"no channel named 'DAPI'; the image has 2 channel\(s\) \(1, 2\)"):
        read_stack(tmp_path / "b.tif", channel="DAPI")


def test_a_chosen_channel_keeps_every_channel_named_for_measurements(tmp_path):
    from nucseg.io.lazy import open_image

    stack = _random((2, 20, 30), np.uint16)
    tifffile.imwrite(tmp_path / "named.tif", stack, imagej=True, metadata={"axes": "CYX", "Labels": ["GFP", "DAPI"]})
    tifffile.imwrite(tmp_path / "numbered.tif", stack, imagej=True, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "gray.tif", stack[0])
    named = read_stack(tmp_path / "named.tif", channel="dapi")
    assert named.channel_name == "DAPI" and named.channel_names == ("GFP", "DAPI")
    assert np.array_equal(named.channels[0], np.moveaxis(stack, 0, -1))  # every channel, for measurements
    assert read_stack(tmp_path / "named.tif", channel=1).channel_name == "GFP"
    numbered = read_stack(tmp_path / "numbered.tif", channel=2)
    assert numbered.channel_name == "ch2" and numbered.intensities()[1] == ["ch1", "ch2"]
    gray = read_stack(tmp_path / "gray.tif", channel=2)  # nothing chosen of one channel
    assert gray.channel_name is None and gray.intensities()[0] is gray.planes and gray.intensities()[1] is None
    lazy = {name: open_image(tmp_path / name, channel=2) for name in ("named.tif", "numbered.tif", "gray.tif")}
    assert [image.channel_name for image in lazy.values()] == ["DAPI", "ch2", None]
    every = lazy["named.tif"].every_channel()
    assert every.channels == 2 and np.array_equal(every.read(slice(0, 20), slice(0, 30)), np.moveaxis(stack, 0, -1))
    assert lazy["gray.tif"].every_channel() is lazy["gray.tif"]
    png = _random((9, 11, 3), np.uint16)
    write_png16(tmp_path / "rgb16.png", png, row_filter=0)
    read = read_stack(tmp_path / "rgb16.png", channel=3)
    assert read.channel_name == "ch3" and np.array_equal(read.planes[0], png[..., 2])


def test_channel_labels_fall_back_to_numbers_where_the_file_repeats_or_lacks_a_name():
    from nucseg.io.channels import channel_labels

    assert channel_labels(3, ["GFP", " DAPI ", "actin"]) == ("GFP", "DAPI", "actin")
    assert all(
        channel_labels(3, names) == ("ch1", "ch2", "ch3")
        for names in (None, ["GFP", "GFP", "DAPI"], ["GFP", "", "DAPI"], ["GFP", "DAPI"])
    )


def test_multichannel_tiff_without_declared_axis_needs_channel_axis(tmp_path):
    stack = _random((3, 20, 30), np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", stack, photometric="minisblack", metadata=None)
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "a.tif")
    _one_line_error(excinfo, tmp_path / "a.tif", "does not declare its channel axis", "channel_axis")
    assert np.array_equal(read_image(tmp_path / "a.tif", channel_axis=0, channel=3), stack[2])
    assert np.array_equal(read_image(tmp_path / "a.tif", channel_axis=-3, channel=1), stack[0])


def test_channel_axis_that_contradicts_the_file_is_an_error(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _random((20, 30, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "a.tif", channel_axis=0)
    _one_line_error(excinfo, tmp_path / "a.tif", "contradicts the file")


def test_channel_axis_out_of_range(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _random((3, 20, 30), np.uint8), photometric="minisblack", metadata=None)
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "a.tif", channel_axis=3)
    _one_line_error(excinfo, tmp_path / "a.tif", "out of range")


def test_a_stack_is_refused_as_one_image_and_read_plane_by_plane_as_a_stack(tmp_path):
    stack = _random((2, 3, 20, 30), np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", stack, metadata={"axes": "ZCYX"}, ome=True)
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "a.tif", channel_axis=0)
    _one_line_error(excinfo, tmp_path / "a.tif", "is a Z-stack", "plane by plane")
    read = read_stack(tmp_path / "a.tif", channel=2)
    assert read.plane_axes == "Z" and read.plane_shape == (2,) and read.plane_names() == ["z=0", "z=1"]
    assert np.array_equal(read.planes, stack[:, 1])
    series = _random((2, 4, 20, 30), np.uint8)
    tifffile.imwrite(tmp_path / "tz.tif", series, imagej=True, metadata={"axes": "TZYX"})
    read = read_stack(tmp_path / "tz.tif")
    assert read.plane_shape == (2, 4) and read.planes.shape == (8, 20, 30)
    assert read.plane_names()[5] == "t=1,z=1" and np.array_equal(read.planes[5], series[1, 1])
    one = read_stack(tmp_path / "a.tif", channel=1)
    assert one.planes.shape == (2, 20, 30)


def test_length_one_axes_are_dropped(tmp_path):
    array = _random((1, 20, 30), np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", array)
    assert np.array_equal(read_image(tmp_path / "a.tif"), array[0])


# --------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "nope.png")
    _one_line_error(excinfo, tmp_path / "nope.png", "does not exist")


def test_folder_is_not_a_file(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "d.png")
    _one_line_error(excinfo, tmp_path / "d.png", "not a file")


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.tif"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / name)
    _one_line_error(excinfo, tmp_path / name, "empty (0 bytes)")


def test_unsupported_format(tmp_path):
    Image.fromarray(_random((4, 4), np.uint8)).save(tmp_path / "a.bmp")
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "a.bmp")
    _one_line_error(excinfo, tmp_path / "a.bmp", "unsupported image format '.bmp'")


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.tif"])
def test_not_an_image(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / name)
    _one_line_error(excinfo, tmp_path / name)


def _write_and_truncate(path: Path, fraction: float) -> None:
    array = _random((64, 64, 3), np.uint8)
    if path.suffix == ".tif":
        tifffile.imwrite(path, array, photometric="rgb", compression="zlib")
    else:
        Image.fromarray(array).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.tif"])
@pytest.mark.parametrize("fraction", [0.1, 0.6, 0.95])
def test_truncated_file(tmp_path, name, fraction):
    _write_and_truncate(tmp_path / name, fraction)
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / name)
    _one_line_error(excinfo, tmp_path / name, "cannot decode")


def test_truncated_16bit_colour_png(tmp_path):
    write_png16(tmp_path / "a.png", _random((40, 40, 3), np.uint16), row_filter=1)
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "a.png")
    _one_line_error(excinfo, tmp_path / "a.png", "cannot decode")


# --------------------------------------------------------------------- labels


def test_read_labels_accepts_gray_stored_as_rgb(tmp_path):
    labels = RNG.integers(0, 200, size=(10, 12)).astype(np.uint8)
    Image.fromarray(np.stack([labels] * 3, axis=-1)).save(tmp_path / "a.png")
    assert np.array_equal(read_labels(tmp_path / "a.png"), labels)


def test_read_labels_rejects_colour(tmp_path):
    Image.fromarray(_random((10, 12, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(InputError) as excinfo:
        read_labels(tmp_path / "a.png")
    _one_line_error(excinfo, tmp_path / "a.png", "must have one channel")


def test_read_labels_rejects_fractions(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.array([[0, 1.5], [2, 3]], dtype=np.float32))
    with pytest.raises(InputError) as excinfo:
        read_labels(tmp_path / "a.tif")
    _one_line_error(excinfo, tmp_path / "a.tif", "non-integer")


def test_read_labels_rejects_negative_values(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.array([[0, -1], [2, 3]], dtype=np.int16))
    with pytest.raises(InputError) as excinfo:
        read_labels(tmp_path / "a.tif")
    _one_line_error(excinfo, tmp_path / "a.tif", "negative")


def test_read_labels_of_integral_floats(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.array([[0, 1], [2, 70000]], dtype=np.float32))
    labels = read_labels(tmp_path / "a.tif")
    assert labels.dtype == np.int32
    assert labels.tolist() == [[0, 1], [2, 70000]]


@pytest.mark.parametrize("max_label, dtype", [(65535, np.uint16), (65536, np.uint32), (4_000_000_000, np.uint32)])
def test_write_labels_dtype_and_round_trip(tmp_path, max_label, dtype):
    labels = RNG.integers(0, 50, size=(40, 50)).astype(np.int64)
    labels[3, 4] = max_label
    path = write_labels(tmp_path / "labels.tif", labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].dtype == dtype
        assert tif.pages[0].compression != tifffile.COMPRESSION.NONE
    assert np.array_equal(read_labels(path), labels)


def test_label_stacks_are_imagej_hyperstacks_that_read_back_with_their_axes(tmp_path):
    labels = np.random.default_rng(0).integers(0, 300, (2, 3, 16, 20))
    write_labels(tmp_path / "tz.tif", labels, axes="TZYX")
    with tifffile.TiffFile(tmp_path / "tz.tif") as tif:  # what Fiji reads: frames and slices
        assert tif.is_imagej and tif.imagej_metadata["frames"] == 2 and tif.imagej_metadata["slices"] == 3
    stack = read_stack(tmp_path / "tz.tif")
    assert stack.plane_axes == "TZ" and np.array_equal(stack.planes, labels.reshape(6, 16, 20))
    many = np.zeros((2, 300, 300), np.int64)
    many[1].flat[:70_000] = np.arange(1, 70_001)  # beyond uint16: no ImageJ file, the axes still stored
    write_labels(tmp_path / "z.tif", many, axes="ZYX")
    assert read_stack(tmp_path / "z.tif").plane_axes == "Z"
    assert np.array_equal(read_stack(tmp_path / "z.tif").planes, many)


def test_write_labels_compresses(tmp_path):
    labels = np.zeros((512, 512), dtype=np.int32)
    labels[100:200, 100:200] = 1
    write_labels(tmp_path / "labels.tif", labels)
    assert (tmp_path / "labels.tif").stat().st_size < labels.size * 2 / 20


@pytest.mark.parametrize(
    "labels",
    [np.zeros((3, 4, 2), np.int32), np.array([[0.5, 1.0]]), np.array([[0, -2]]), np.array([[2**33]], dtype=np.int64)],
)
def test_write_labels_rejects_bad_arrays(tmp_path, labels):
    with pytest.raises(ValueError):
        write_labels(tmp_path / "labels.tif", labels)
    assert not (tmp_path / "labels.tif").exists()


def test_write_labels_refuses_to_overwrite(tmp_path):
    target = tmp_path / "labels.tif"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError) as excinfo:
        write_labels(target, np.ones((4, 4), np.int32), overwrite=False)
    assert isinstance(excinfo.value, FileExistsError) and isinstance(excinfo.value, InputError)
    _one_line_error(excinfo, target, "exists", "--overwrite")
    assert target.read_bytes() == b"precious"


# -------------------------------------------------------------- PNG writing


@pytest.mark.parametrize(
    "shape, dtype", [((5, 6), np.uint8), ((5, 6, 3), np.uint8), ((5, 6, 4), np.uint8), ((5, 6), np.uint16)]
)
def test_write_png_round_trip(tmp_path, shape, dtype):
    array = _random(shape, dtype)
    write_png(tmp_path / "a.png", array)
    assert np.array_equal(read_image(tmp_path / "a.png"), array)


@pytest.mark.parametrize(
    "array", [np.zeros((5, 6), np.float32), np.zeros((5, 6, 3), np.uint16), np.zeros((5, 6, 2), np.uint8)]
)
def test_write_png_rejects_unsupported_arrays(tmp_path, array):
    with pytest.raises(ValueError):
        write_png(tmp_path / "a.png", array)


# -------------------------------------------------------------------- mask crop


def test_read_mask_crop_of_dsb_mask_matches_read_image():
    mask_path = sorted(
        (FIXTURES / "0280fa8f60f6bcae0f97d93c28f60be194f9309ff610dc5845e60455b0f87c21" / "masks").iterdir()
    )[0]
    full = read_image(mask_path) > 0
    crop = read_mask_crop(mask_path)
    rebuilt = np.zeros(crop.shape, dtype=bool)
    rebuilt[crop.slices] = crop.foreground
    assert crop.shape == full.shape
    assert np.array_equal(rebuilt, full)
    rows, cols = np.nonzero(full)
    assert crop.slices == (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))


@pytest.mark.parametrize("name", ["m.png", "m.tif", "green.png", "palette.png"])
def test_read_mask_crop_formats(tmp_path, name):
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[5:9, 20:31] = 255
    mask[7, 12] = 255
    if name == "m.tif":
        tifffile.imwrite(tmp_path / name, mask)
    elif name == "green.png":
        Image.fromarray(np.stack([np.zeros_like(mask), mask, np.zeros_like(mask)], axis=-1)).save(tmp_path / name)
    elif name == "palette.png":
        picture = Image.fromarray((mask > 0).astype(np.uint8), mode="P")
        picture.putpalette([0, 0, 0, 0, 0, 255])  # index 1 is blue: no red at all
        picture.save(tmp_path / name)
    else:
        Image.fromarray(mask).save(tmp_path / name)
    crop = read_mask_crop(tmp_path / name)
    assert crop.shape == (30, 40)
    assert crop.slices == (slice(5, 9), slice(12, 31))
    assert np.array_equal(crop.foreground, mask[5:9, 12:31] > 0)


def test_read_mask_crop_of_empty_mask(tmp_path):
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(tmp_path / "m.png")
    crop = read_mask_crop(tmp_path / "m.png")
    assert crop.shape == (6, 7) and crop.slices is None and crop.foreground.size == 0


@pytest.mark.parametrize("compression", ["lzw", "deflate", "zstd", "packbits"])
def test_compressed_tiffs_read_losslessly(tmp_path, compression):
    array = _random((70, 90), np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", array, compression=compression, tile=(32, 32))
    assert np.array_equal(read_image(tmp_path / "a.tif"), array)


def test_jpeg_compressed_tiff_reads_close_to_its_pixels(tmp_path):
    gray = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (64, 1))
    tifffile.imwrite(tmp_path / "a.tif", gray, compression="jpeg")
    image = read_image(tmp_path / "a.tif")
    assert image.shape == gray.shape and np.abs(image.astype(int) - gray).max() <= 8


@pytest.mark.parametrize(("unit", "microns"), [("um", 0.325), ("micron", 0.325), ("nm", 0.000325), ("mm", 325.0)])
def test_the_pixel_size_of_an_imagej_tiff_is_read_in_microns(tmp_path, unit, microns):
    tifffile.imwrite(
        tmp_path / "a.tif",
        _random((16, 16), np.uint8),
        imagej=True,
        resolution=(1 / 0.325, 1 / 0.325),
        metadata={"unit": unit},
    )
    assert read_pixel_size(tmp_path / "a.tif") == pytest.approx(microns)


def test_an_imagej_tiff_without_a_length_unit_states_no_pixel_size(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _random((16, 16), np.uint8), imagej=True, resolution=(3.0, 3.0))
    assert read_pixel_size(tmp_path / "a.tif") is None


def test_the_pixel_size_of_an_ome_tiff_is_read_in_its_unit(tmp_path):
    tifffile.imwrite(
        tmp_path / "a.ome.tif",
        _random((16, 16), np.uint8),
        ome=True,
        metadata={"PhysicalSizeX": 250.0, "PhysicalSizeXUnit": "nm"},
    )
    assert read_pixel_size(tmp_path / "a.ome.tif") == pytest.approx(0.25)

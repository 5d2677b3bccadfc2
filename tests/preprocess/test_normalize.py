"""Tests of nucseg.preprocess (normalize, resize): channel conversion, percentile normalization, resizing."""

from __future__ import annotations

import numpy as np
import pytest

from nucseg.preprocess.normalize import (
    NormalizationConfig,
    channel_mean,
    equal_channels,
    normalize_percentile,
    percentile_range,
    prepare_image,
    single_colour_channel,
    to_channels,
)
from nucseg.preprocess.resize import resize_image, resize_labels

RNG = np.random.default_rng(7)


# ------------------------------------------------------------------ channels


@pytest.mark.parametrize("shape", [(6, 7), (6, 7, 1)])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_gray_is_replicated_to_n_channels(shape, channels):
    gray = RNG.integers(0, 255, size=shape).astype(np.uint8)
    out = to_channels(gray, channels)
    assert out.shape == (6, 7, channels) and out.dtype == np.uint8
    assert all(np.array_equal(out[..., c], gray.reshape(6, 7)) for c in range(channels))


def test_rgba_loses_alpha():
    rgba = RNG.integers(0, 255, size=(6, 7, 4)).astype(np.uint8)
    assert np.array_equal(to_channels(rgba, 3), rgba[..., :3])


def test_four_channels_kept_when_four_are_asked_for():
    image = RNG.integers(0, 255, size=(6, 7, 4)).astype(np.uint16)
    assert np.array_equal(to_channels(image, 4), image)


def test_rgb_to_one_channel_is_the_mean():
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 60, 90
    out = to_channels(rgb, 1)
    assert out.shape == (2, 2, 1) and np.all(out == 60)


@pytest.mark.parametrize("shape, channels", [((6, 7, 2), 3), ((6, 7, 5), 3), ((6, 7, 3), 2), ((6,), 3)])
def test_unsupported_channel_conversions_raise(shape, channels):
    with pytest.raises(ValueError):
        to_channels(np.zeros(shape, np.uint8), channels)


# ------------------------------------------------------------- normalization


def test_percentiles_map_to_0_and_1_per_channel():
    # Channel values are 0..100 (shuffled) and 1000 + 10 * (0..100): the 10th and
    # 90th percentiles are exactly the values 10, 90 and 1100, 1900.
    values = RNG.permutation(101).astype(np.uint16)
    image = np.stack([values, 1000 + 10 * values], axis=-1).reshape(1, 101, 2)
    out = normalize_percentile(image, low=10, high=90)
    assert out.dtype == np.float32 and out.shape == image.shape
    for c in range(2):
        assert out[0, values == 10, c] == pytest.approx(0.0, abs=1e-6)
        assert out[0, values == 90, c] == pytest.approx(1.0, abs=1e-6)
        assert out[0, values == 50, c] == pytest.approx(0.5, abs=1e-6)
    assert np.allclose(out[..., 0], out[..., 1], atol=1e-6)


def test_values_outside_the_percentiles_are_not_clipped():
    image = np.arange(101, dtype=np.float32).reshape(1, 101)
    out = normalize_percentile(image, low=10, high=90)
    assert out.min() == pytest.approx(-10 / 80)
    assert out.max() == pytest.approx(1 + 10 / 80)


def test_gray_image_keeps_its_shape():
    image = RNG.integers(0, 4096, size=(30, 40)).astype(np.uint16)
    out = normalize_percentile(image)
    assert out.shape == (30, 40) and out.dtype == np.float32


@pytest.mark.parametrize("value", [0, 7, 65535])
def test_constant_image_does_not_divide_by_zero(value):
    out = normalize_percentile(np.full((5, 6, 3), value, dtype=np.uint16))
    assert np.all(np.isfinite(out)) and np.all(out == 0)


@pytest.mark.parametrize("low, high", [(50, 50), (90, 10), (-1, 99), (1, 101)])
def test_bad_percentiles_raise(low, high):
    with pytest.raises(ValueError):
        normalize_percentile(np.zeros((3, 3)), low=low, high=high)
    with pytest.raises(ValueError):
        NormalizationConfig(low_percentile=low, high_percentile=high)


def test_config_rejects_zero_channels():
    with pytest.raises(ValueError):
        NormalizationConfig(channels=0)


def test_prepare_image_converts_then_normalizes():
    gray = np.arange(101, dtype=np.uint8).reshape(1, 101)
    config = NormalizationConfig(low_percentile=10, high_percentile=90, channels=3)
    out = prepare_image(gray, config)
    assert out.shape == (1, 101, 3) and out.dtype == np.float32
    expected = (np.arange(101, dtype=np.float32) - 10) / 80
    assert all(np.allclose(out[0, :, c], expected, atol=1e-6) for c in range(3))


def test_prepare_image_drops_alpha_of_rgba():
    rgba = RNG.integers(0, 255, size=(10, 10, 4)).astype(np.uint8)
    rgba[..., 3] = 255
    assert np.array_equal(prepare_image(rgba), prepare_image(rgba[..., :3]))


# ------------------------------------------------------------------ resizing


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 3)])
def test_resize_image_shape_dtype_and_range(shape):
    image = RNG.integers(100, 4000, size=shape).astype(np.uint16)
    out = resize_image(image, (11, 17))
    assert out.shape == (11, 17) + shape[2:] and out.dtype == np.float32
    assert out.min() >= 100 and out.max() <= 4000


def test_resize_image_keeps_a_constant_image():
    out = resize_image(np.full((20, 30), 1234, dtype=np.uint16), (64, 48))
    assert np.allclose(out, 1234)


def test_resize_labels_upscale_repeats_pixels():
    labels = RNG.integers(0, 50, size=(7, 9)).astype(np.int32)
    out = resize_labels(labels, (14, 18))
    assert out.dtype == np.int32
    assert np.array_equal(out, np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1))


def test_resize_labels_keeps_label_values():
    labels = np.zeros((64, 64), dtype=np.int32)
    labels[5:25, 5:25] = 70000  # beyond uint16, to catch a lossy intermediate dtype
    labels[30:60, 10:50] = 3
    labels[40:50, 52:60] = 12
    out = resize_labels(labels, (37, 23))
    assert out.shape == (37, 23)
    assert set(np.unique(out)) == {0, 3, 12, 70000}


def test_percentile_range_is_per_channel_and_matches_normalization():
    rng = np.random.default_rng(0)
    image = np.stack([rng.uniform(0, 100, (64, 64)), rng.uniform(50, 60, (64, 64))], axis=-1)
    low, high = percentile_range(image, low=2.0, high=98.0)
    assert np.allclose(low, np.percentile(image.reshape(-1, 2), 2.0, axis=0))
    assert np.allclose(high, np.percentile(image.reshape(-1, 2), 98.0, axis=0))
    normalized = normalize_percentile(image, low=2.0, high=98.0)
    assert np.allclose(normalized, (image - low) / (high - low), atol=1e-5)
    assert percentile_range(image[..., 0])[0].shape == (1,)
    with pytest.raises(ValueError, match="percentiles"):
        percentile_range(image, low=50, high=10)


def test_a_colour_image_with_content_in_one_channel_is_that_channel_as_gray(dsb_samples):
    gray = dsb_samples["00071198"].image[:, :, 0]  # fluorescence, stored as gray RGBA
    for channel in (1, 2):  # green-only GFP, blue-only DAPI
        coloured = np.zeros(gray.shape + (3,), np.uint8)
        coloured[:, :, channel] = gray
        coloured[:, :, 0] = np.random.default_rng(channel).integers(0, 3, gray.shape)  # export noise stays empty
        assert single_colour_channel(coloured) == channel
        assert np.array_equal(to_channels(coloured, 3), np.repeat(gray[:, :, None], 3, axis=2))
    he = dsb_samples["00ae65c1"].image[:, :, :3]  # H&E: every channel holds content
    assert single_colour_channel(he) is None and np.array_equal(to_channels(he, 3), he)
    assert single_colour_channel(np.repeat(gray[:, :, None], 3, axis=2)) is None  # gray as RGB stays as it is


@pytest.mark.parametrize(
    "dtype, shape", [(np.uint8, (37, 53, 3)), (np.uint16, (64, 80)), (np.uint8, (1, 1)), (np.uint16, (5, 7, 2))]
)
def test_integer_percentiles_equal_numpy_linear_interpolation(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    image.flat[::7] = np.iinfo(dtype).max // 3  # ties, as real images have
    flat = image.reshape(-1, 1) if image.ndim == 2 else image.reshape(-1, image.shape[-1])
    for low, high in [(1.0, 99.8), (0.0, 100.0), (33.3, 66.6)]:
        expected = np.percentile(flat.astype(np.float64), [low, high], axis=0)
        found = percentile_range(image, low=low, high=high)
        assert all(np.allclose(f, e, rtol=1e-12, atol=1e-9) for f, e in zip(found, expected))


@pytest.mark.parametrize("shape", [(100, 120), (1200, 1500), (3001, 2999)])
def test_statistics_sample_is_small_and_a_fixed_point(shape):
    from nucseg.preprocess.normalize import STATISTICS_PIXELS, statistics_sample

    image = np.zeros(shape, np.uint8)
    sample = statistics_sample(image)
    assert sample.size <= 4 * STATISTICS_PIXELS and (sample.size == image.size or sample.size < image.size / 3)
    assert statistics_sample(sample).shape == sample.shape  # taken again, the same pixels


def test_single_colour_channel_agrees_on_integer_and_float_images(dsb_samples):
    gray = dsb_samples["00071198"].image[:, :, 0]
    he = dsb_samples["00ae65c1"].image[:, :, :3]
    for dtype, factor in ((np.uint8, 1), (np.uint16, 257)):
        blue_only = np.zeros(gray.shape + (3,), dtype)
        blue_only[:, :, 2] = gray.astype(dtype) * factor
        blue_only[:, :, 0] = 2 * factor * np.random.default_rng(0).integers(0, 2, gray.shape)  # export noise
        for image, expected in (
            (blue_only, 2),
            (he.astype(dtype) * factor, None),
            (np.repeat(blue_only[:, :, 2:], 3, axis=2), None),
        ):
            assert single_colour_channel(image) == single_colour_channel(image.astype(np.float32)) == expected


def test_equal_channels_tells_gray_stored_as_colour_from_colour(dsb_samples):
    gray_rgba = dsb_samples["00071198"].image  # fluorescence exported as gray RGBA
    he = dsb_samples["00ae65c1"].image[:, :, :3]
    assert equal_channels(gray_rgba[:, :, :3]) and equal_channels(gray_rgba[:, :, :1])
    assert not equal_channels(he)
    one_pixel_off = gray_rgba[:, :, :3].copy()
    one_pixel_off[5, 7, 2] ^= 1  # a single differing value is colour
    assert not equal_channels(one_pixel_off)


def test_channel_mean_is_numpys_mean_over_the_channels_in_float32():
    for channels, dtype in ((3, np.uint16), (4, np.uint8), (1, np.float64)):
        image = (RNG.random((40, 50, channels)) * 1000).astype(dtype)
        mean = channel_mean(image)
        assert mean.dtype == np.float32 and mean.shape == (40, 50)
        assert np.allclose(mean, image.mean(axis=2), rtol=1e-6)

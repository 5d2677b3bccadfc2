"""Tests of nucseg.training.augment: image and labels stay aligned, crops are reproducible."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from nucseg.training.augment import augment_crop, AugmentConfig, NO_AUGMENTATION, random_crop, random_intensity
from nucseg.training.targets import three_class_target

GEOMETRY_ONLY = dataclasses.replace(NO_AUGMENTATION, flips=True, rotations=True)
SEEDS = range(40)


@pytest.fixture(scope="module")
def fixture_labels(dsb_samples) -> list[np.ndarray]:
    return [sample.labels for sample in dsb_samples.values()]


def image_from_labels(labels: np.ndarray) -> np.ndarray:
    """A 3-channel float image that shows the labels: foreground, label id, constant."""
    return np.stack([labels > 0, labels, np.ones_like(labels)], axis=-1).astype(np.float32)


def geometry(scale: float) -> AugmentConfig:
    return dataclasses.replace(GEOMETRY_ONLY, scale_min=scale, scale_max=scale)


def differs_from_a_4_neighbour(labels: np.ndarray) -> np.ndarray:
    differs = np.zeros(labels.shape, dtype=bool)
    vertical, horizontal = labels[1:] != labels[:-1], labels[:, 1:] != labels[:, :-1]
    differs[1:] |= vertical
    differs[:-1] |= vertical
    differs[:, 1:] |= horizontal
    differs[:, :-1] |= horizontal
    return differs


def test_position_coded_image_and_labels_move_together():
    """Every output pixel shows the same source pixel in the image and in the labels."""
    height, width = 90, 110
    rows, cols = np.mgrid[:height, :width]
    image = np.stack([rows, cols, rows + cols], axis=-1).astype(np.float32)
    labels = (rows * width + cols + 1).astype(np.int32)
    for seed in SEEDS:
        crop, label_crop = augment_crop(image, labels, 64, np.random.default_rng(seed), GEOMETRY_ONLY)
        source_row, source_col = crop[..., 0].astype(np.int64), crop[..., 1].astype(np.int64)
        np.testing.assert_array_equal(label_crop, source_row * width + source_col + 1, err_msg=f"seed {seed}")
        # Flips and rotations keep neighbours neighbours: one step in the crop is one step in the source.
        steps = np.abs(np.diff(source_row, axis=1)) + np.abs(np.diff(source_col, axis=1))
        assert np.all(steps == 1), f"seed {seed}"


def test_geometry_keeps_image_and_labels_aligned_at_native_scale(fixture_labels):
    for labels in fixture_labels:
        image = image_from_labels(labels)
        for seed in SEEDS:
            crop, label_crop = augment_crop(image, labels, 96, np.random.default_rng(seed), GEOMETRY_ONLY)
            np.testing.assert_array_equal(crop[..., 0] > 0.5, label_crop > 0, err_msg=f"seed {seed}")
            np.testing.assert_array_equal(crop[..., 1], label_crop, err_msg=f"seed {seed}")


@pytest.mark.parametrize("scale", [0.6, 0.8, 1.3, 1.7, 2.5])
def test_geometry_keeps_image_and_labels_aligned_when_zooming(fixture_labels, scale):
    """Linear (image) and nearest (labels) resampling may only disagree on the edges of nuclei."""
    mismatched, foreground = 0, 0
    for labels in fixture_labels:
        image = image_from_labels(labels)
        for seed in range(12):
            crop, label_crop = augment_crop(image, labels, 64, np.random.default_rng(seed), geometry(scale))
            image_foreground, label_foreground = crop[..., 0] > 0.5, label_crop > 0
            edges = ndi.binary_dilation(differs_from_a_4_neighbour(label_foreground))
            disagree = image_foreground != label_foreground
            assert not np.any(disagree & ~edges), f"scale {scale}, seed {seed}: mismatch away from an edge"
            mismatched += disagree.sum()
            foreground += label_foreground.sum()
    # A one-pixel shift would put every edge pixel on one side in disagreement (about 10% here).
    assert mismatched < 0.03 * foreground, (scale, mismatched, foreground)


@pytest.mark.parametrize("scale", [0.7, 1.0, 1.4, 2.0])
def test_boundary_target_outlines_the_transformed_nuclei(fixture_labels, scale):
    for labels in fixture_labels:
        source_ids = set(np.unique(labels))
        image = image_from_labels(labels)
        for seed in range(12):
            crop, label_crop = augment_crop(image, labels, 64, np.random.default_rng(seed), geometry(scale))
            target = three_class_target(label_crop)
            different_neighbour = differs_from_a_4_neighbour(label_crop)
            # Nearest-neighbour resampling invents no label ids.
            assert set(np.unique(label_crop)) <= source_ids
            # Interiors are closed off by the boundary; the boundary is one pixel wide at every zoom.
            assert not np.any((target == 1) & different_neighbour)
            assert np.all(different_neighbour[target == 2])
            # Every nucleus of the crop is outlined.
            ids = set(np.unique(label_crop)) - {0}
            assert set(np.unique(label_crop[target == 2])) == ids
            if scale == 1.0:  # the outline sits exactly on the edge of the nuclei drawn in the image
                image_foreground = crop[..., 0] > 0.5
                image_edge = image_foreground & differs_from_a_4_neighbour(image_foreground)
                assert np.all(target[image_edge] == 2)


def test_intensity_augmentation_leaves_labels_alone(fixture_labels):
    labels = fixture_labels[0]
    image = image_from_labels(labels)
    full = AugmentConfig(color_probability=1.0, invert_probability=0.5, blur_probability=0.5)
    geometric = dataclasses.replace(
        NO_AUGMENTATION, flips=full.flips, rotations=full.rotations, scale_min=full.scale_min, scale_max=full.scale_max
    )
    changed = 0
    for seed in range(20):
        crop, label_crop = augment_crop(image, labels, 64, np.random.default_rng(seed), full)
        plain, plain_labels = augment_crop(image, labels, 64, np.random.default_rng(seed), geometric)
        np.testing.assert_array_equal(label_crop, plain_labels)
        changed += not np.allclose(crop, plain)
    assert changed == 20


@pytest.mark.parametrize("config", [AugmentConfig(), GEOMETRY_ONLY, NO_AUGMENTATION])
def test_augment_crop_is_a_function_of_its_seed(fixture_labels, config):
    labels = fixture_labels[0]
    rows, cols = np.mgrid[: labels.shape[0], : labels.shape[1]]
    image = np.stack([rows, cols, labels], axis=-1).astype(np.float32)
    first = augment_crop(image, labels, 64, np.random.default_rng([7, 1, 2]), config)
    again = augment_crop(image, labels, 64, np.random.default_rng([7, 1, 2]), config)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    others = [augment_crop(image, labels, 64, np.random.default_rng([7, 1, i]), config)[0] for i in range(3, 8)]
    assert all(not np.array_equal(first[0], other) for other in others)


@pytest.mark.parametrize("shape", [(256, 320), (20, 30), (7, 5), (1, 1), (1, 40)])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_augment_crop_shapes_and_dtypes(shape, channels):
    rng = np.random.default_rng(0)
    image = rng.random(shape + (channels,)).astype(np.float16)
    labels = rng.integers(0, 5, shape).astype(np.uint16)
    for seed in range(5):
        crop, label_crop = augment_crop(image, labels, 64, np.random.default_rng(seed), AugmentConfig())
        assert crop.shape == (64, 64, channels) and crop.dtype == np.float32
        assert label_crop.shape == (64, 64) and label_crop.dtype == np.int32
        assert np.isfinite(crop).all()
        assert set(np.unique(label_crop)) <= set(np.unique(labels))


@pytest.mark.parametrize("shape", [(20, 30), (40, 9)])
def test_small_images_are_padded_consistently(shape):
    """An image smaller than the crop is reflected at its borders, identically for image and labels."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    labels = (rows * shape[1] + cols + 1).astype(np.int32)
    image = image_from_labels(labels)
    for seed in range(10):
        for scale in (0.5, 1.0):
            crop, label_crop = random_crop(image, labels, 64, np.random.default_rng(seed), scale=scale)
            assert crop.shape == (64, 64, 3) and label_crop.shape == (64, 64)
            if scale == 1.0:
                np.testing.assert_array_equal(crop[..., 1], label_crop)
            assert set(np.unique(label_crop)) <= set(np.unique(labels))


def test_fixed_zoom_is_applied():
    """scale_min == scale_max means exactly that zoom, not none: stripes 10 pixels wide become 10 * scale wide."""
    cols = np.mgrid[:400, :400][1]
    labels = (cols // 10 + 1).astype(np.int32)
    image = image_from_labels(labels)
    for scale in (0.5, 1.0, 2.0):
        config = dataclasses.replace(NO_AUGMENTATION, scale_min=scale, scale_max=scale)
        for seed in range(3):
            _, label_crop = augment_crop(image, labels, 64, np.random.default_rng(seed), config)
            _, widths = np.unique(label_crop[0], return_counts=True)
            whole_stripes = widths[1:-1]  # the first and last may be cut by the crop
            assert len(whole_stripes) and np.all(np.abs(whole_stripes - 10 * scale) <= 1), (scale, seed, widths)


def test_no_augmentation_is_a_plain_crop():
    rng = np.random.default_rng(3)
    image = rng.random((50, 60, 3)).astype(np.float32)
    labels = rng.integers(0, 9, (50, 60)).astype(np.int32)
    crop, label_crop = augment_crop(image, labels, 32, np.random.default_rng(1), NO_AUGMENTATION)
    matches = [
        (y, x) for y in range(50 - 31) for x in range(60 - 31) if np.array_equal(image[y : y + 32, x : x + 32], crop)
    ]
    assert len(matches) == 1
    y, x = matches[0]
    np.testing.assert_array_equal(labels[y : y + 32, x : x + 32], label_crop)


def test_random_intensity_inversion_and_identity():
    image = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(random_intensity(image, np.random.default_rng(0), NO_AUGMENTATION), image)
    invert = dataclasses.replace(NO_AUGMENTATION, invert_probability=1.0)
    np.testing.assert_allclose(random_intensity(image, np.random.default_rng(0), invert), 1.0 - image)
    gray = dataclasses.replace(NO_AUGMENTATION, color_probability=1.0)
    outputs = [random_intensity(image, np.random.default_rng(s), gray) for s in range(10)]
    assert all(
        sorted(out.reshape(-1, 3).sum(0).round(3)) == sorted(image.reshape(-1, 3).sum(0).round(3))
        or np.allclose(out, out[..., :1])
        for out in outputs
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"scale_min": 0.0},
        {"scale_min": 1.5, "scale_max": 1.2},
        {"gamma_min": -1.0},
        {"blur_probability": 1.5},
        {"noise_max": -0.1},
        {"contrast": 1.0},
        {"flips": "yes"},
        {"brightness": float("nan")},
    ],
)
def test_invalid_settings_are_rejected(changes):
    with pytest.raises(ValueError, match=next(iter(changes)).removesuffix("_min").removesuffix("_max")):
        AugmentConfig(**changes)


def test_stain_jitter_changes_colour_crops_and_leaves_gray_ones_alone():
    from nucseg.training.augment import random_stain

    rng = np.random.default_rng(0)
    he_like = np.stack([np.full((32, 32), 0.8), np.full((32, 32), 0.5), np.full((32, 32), 0.75)], axis=2)
    he_like[8:20, 8:20] = (0.35, 0.2, 0.55)  # a purple nucleus on pink stroma
    config = dataclasses.replace(NO_AUGMENTATION, stain_jitter=0.2)
    jittered = random_intensity(he_like, rng, config)
    assert jittered.shape == he_like.shape and np.abs(jittered - he_like).max() > 0.01
    assert np.abs(random_stain(he_like, np.random.default_rng(1), 0.0) - he_like).max() < 0.01  # unmixing round-trips
    gray = np.repeat(he_like.mean(axis=2, keepdims=True), 3, axis=2)
    assert np.array_equal(random_intensity(gray, np.random.default_rng(0), config), gray.astype(np.float32))

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from nucseg.inference.classical import (
    detect_polarity,
    estimate_nucleus_radius,
    segment_classical,
    segment_classical_detailed,
)
from nucseg.datasets.layouts import load_dataset

FIXTURES = Path(__file__).parents[1] / "data" / "dsb2018"
FLUORESCENCE = ("00071198", "0280fa8f")
HISTOLOGY = "00ae65c1"
BRIGHTFIELD = "091944f1"


@pytest.fixture(scope="module")
def samples():
    return {sample.name[:8]: sample for sample in load_dataset(FIXTURES, cache_dir=False)}


def _accuracy_at_half(true: np.ndarray, pred: np.ndarray) -> float:
    """DSB2018 accuracy TP / (TP + FP + FN) at IoU > 0.5 (matches are unique above 0.5)."""
    n_true, n_pred = int(true.max()) + 1, int(pred.max()) + 1
    intersection = np.bincount(true.ravel() * n_pred + pred.ravel(), minlength=n_true * n_pred)
    intersection = intersection.reshape(n_true, n_pred)[1:, 1:]
    area_true = np.bincount(true.ravel(), minlength=n_true)[1:, None]
    area_pred = np.bincount(pred.ravel(), minlength=n_pred)[None, 1:]
    iou = intersection / np.maximum(area_true + area_pred - intersection, 1)
    tp = int((iou > 0.5).sum())
    n_true_objects, n_pred_objects = int((area_true > 0).sum()), int((area_pred > 0).sum())
    return tp / (n_true_objects + n_pred_objects - tp)


def _field(shape=(120, 160), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Separate and touching bright discs on a dark, noisy background: (image uint8, labels)."""
    labels = np.zeros(shape, dtype=np.int32)
    centers = [(20, 20), (20, 70), (60, 30), (60, 50), (95, 100), (95, 121), (30, 130)]
    for label, center in enumerate(centers, start=1):
        labels[disk(center, 10, shape=shape)] = label
    rng = np.random.default_rng(seed)
    image = np.where(labels > 0, 160.0, 20.0) + rng.normal(0, 8, shape)
    return np.clip(ndi.gaussian_filter(image, 1), 0, 255).astype(np.uint8), labels


def test_accuracy_helper_on_known_cases():
    _, labels = _field()
    assert _accuracy_at_half(labels, labels) == 1.0
    assert _accuracy_at_half(labels, np.zeros_like(labels)) == 0.0
    shifted = np.roll(labels, 30, axis=1)
    assert _accuracy_at_half(labels, shifted) < 1.0


def test_synthetic_fluorescence_finds_every_disc():
    image, labels = _field()
    result = segment_classical_detailed(image)
    assert result.polarity == "bright"
    assert result.labels.dtype == np.int32
    assert result.labels.max() == labels.max()
    assert _accuracy_at_half(labels, result.labels) == 1.0
    assert 8 < result.nucleus_radius < 14


def test_dark_nuclei_on_bright_background_and_colour_input():
    image, labels = _field()
    inverted = 255 - image
    rgba = np.dstack([inverted, inverted, inverted, np.full_like(inverted, 255)])
    result = segment_classical_detailed(rgba)
    assert result.polarity == "dark"
    assert _accuracy_at_half(labels, result.labels) == 1.0


def test_explicit_polarity_overrides_detection():
    image, _ = _field()
    wrong = segment_classical(image, polarity="dark")
    assert wrong.max() <= 2  # the background is one (or a few) big objects, not seven nuclei


def test_uint16_and_float_inputs_agree_with_uint8():
    image, labels = _field()
    reference = segment_classical(image)
    assert np.array_equal(segment_classical(image.astype(np.uint16) * 257), reference)
    assert np.array_equal(segment_classical(image.astype(np.float32) / 255), reference)


def test_min_size_and_min_distance():
    image, labels = _field()
    assert segment_classical(image, min_size=400).max() == 0  # every disc is about 317 pixels
    merged = segment_classical(image, min_distance=30)
    assert merged.max() < labels.max()  # seeds too far apart to split touching discs


def test_flat_and_empty_images_give_no_nuclei():
    assert segment_classical(np.full((32, 32), 7, dtype=np.uint8)).max() == 0
    assert segment_classical(np.zeros((32, 32, 3), dtype=np.uint8)).max() == 0


@pytest.mark.parametrize("kwargs", [dict(polarity="up"), dict(phases=4), dict(min_distance=0)])
def test_rejects_bad_options(kwargs):
    image, _ = _field()
    with pytest.raises(ValueError):
        segment_classical(image, **kwargs)


def test_detect_polarity_and_radius_helpers():
    assert detect_polarity(np.eye(4, dtype=bool)) == "bright"
    assert detect_polarity(~np.eye(4, dtype=bool)) == "dark"
    labels = np.zeros((50, 50), dtype=np.int32)
    labels[disk((25, 25), 10, shape=labels.shape)] = 1
    assert estimate_nucleus_radius(labels) == pytest.approx(10, rel=0.03)
    assert estimate_nucleus_radius(np.zeros((5, 5), dtype=np.int32)) == 0.0


@pytest.mark.parametrize("name", FLUORESCENCE)
def test_real_fluorescence(samples, name):
    sample = samples[name]
    result = segment_classical_detailed(sample.image)
    n_true = int(sample.labels.max())
    assert result.polarity == "bright"
    assert 0.65 * n_true <= result.labels.max() <= 1.35 * n_true
    assert _accuracy_at_half(sample.labels, result.labels) > 0.45


def test_real_histology(samples):
    sample = samples[HISTOLOGY]
    result = segment_classical_detailed(sample.image)
    n_true = int(sample.labels.max())
    assert result.polarity == "dark"
    assert 0.7 * n_true <= result.labels.max() <= 1.3 * n_true
    assert _accuracy_at_half(sample.labels, result.labels) > 0.3


def test_real_brightfield_needs_three_phases(samples):
    # Whole cells (gray cytoplasm) stand out from the white background; with
    # two phases Otsu outlines cells, with three it keeps the dark nuclei.
    sample = samples[BRIGHTFIELD]
    two = segment_classical_detailed(sample.image)
    three = segment_classical_detailed(sample.image, phases=3)
    assert two.polarity == three.polarity == "dark"
    accuracy_two = _accuracy_at_half(sample.labels, two.labels)
    accuracy_three = _accuracy_at_half(sample.labels, three.labels)
    assert accuracy_three > 0.12
    assert accuracy_three > 2 * accuracy_two
    assert 0.5 * sample.labels.max() <= three.labels.max() <= 3 * sample.labels.max()

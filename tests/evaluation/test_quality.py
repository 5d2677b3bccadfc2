"""Tests of nucseg.evaluation.quality and nucseg.inference.quality: features, fit, score, flags."""

from __future__ import annotations

import numpy as np
import pytest

from nucseg.evaluation.quality import fit_calibration, quality_relation
from nucseg.inference.quality import assess, QUALITY_FEATURES, quality_features, QualityCalibration


def _discs(count=6, radius=8, shape=(96, 96)):
    from skimage.draw import disk

    labels = np.zeros(shape, dtype=np.int32)
    for i in range(count):
        labels[disk((16 + 30 * (i // 3), 16 + 30 * (i % 3)), radius, shape=shape)] = i + 1
    return labels


def _confident(labels):
    probabilities = np.zeros((3,) + labels.shape, dtype=np.float32)
    probabilities[0] = labels == 0
    probabilities[1] = labels > 0
    return probabilities


def test_confident_round_nuclei_of_the_training_size_look_good():
    labels = _discs()
    good = quality_features(
        labels, _confident(labels), image_kind="fluorescence", training_diameter=16.0, training_kinds=["fluorescence"]
    )
    assert set(good) == set(QUALITY_FEATURES)
    assert good["ambiguous"] == 0 and good["entropy"] < 0.01 and good["irregular"] < 0.1
    assert good["size_offset"] < 0.2 and good["unseen_kind"] == 0 and good["no_nuclei"] == 0
    murky = np.full((3,) + labels.shape, 1 / 3, dtype=np.float32)
    bad = quality_features(
        np.zeros_like(labels), murky, image_kind="histology", training_diameter=16.0, training_kinds=["fluorescence"]
    )
    assert bad["ambiguous"] == 1 and bad["no_nuclei"] == 1 and bad["unseen_kind"] == 1


def test_ragged_shapes_count_as_irregular():
    rings = _discs(radius=10)
    rings[_discs(radius=7) > 0] = 0  # thin rings: outlined texture rather than filled nuclei
    features = quality_features(rings, None, image_kind="histology", training_diameter=16.0)
    assert (
        features["irregular"]
        > quality_features(_discs(), None, image_kind="histology", training_diameter=16.0)["irregular"] + 0.3
    )


def test_fitted_score_ranks_images_by_their_accuracy():
    rng = np.random.default_rng(1)
    rows, ap50 = [], []
    for _ in range(60):
        row = {name: float(rng.random()) for name in QUALITY_FEATURES}
        row |= {
            "sizing_clipped": float(rng.random() < 0.2),
            "unseen_kind": float(rng.random() < 0.2),
            "no_nuclei": 0.0,
        }  # indicators, 0 or 1; images without nuclei are never scored
        rows.append(row)
        ap50.append(float(np.clip(0.95 - 0.6 * row["ambiguous"] - 0.3 * row["irregular"] + rng.normal(0, 0.03), 0, 1)))
    calibration = fit_calibration(rows[:40], ap50[:40], training_kinds=["fluorescence"])
    assert calibration.weights["ambiguous"] < -0.3 and abs(calibration.weights["unseen_kind"]) < 0.1
    relation = quality_relation(rows[40:], ap50[40:], calibration)
    assert relation.spearman > 0.8 and relation.images == 20
    assert relation.flagged == 0 or relation.mean_ap50_flagged < relation.mean_ap50_ok
    assert QualityCalibration.from_dict(calibration.to_dict()) == calibration


def test_a_low_score_is_flagged_with_the_reasons_that_cost_most():
    calibration = QualityCalibration(0.9, {"ambiguous": -0.8, "irregular": -0.1}, 0.5)
    features = dict.fromkeys(QUALITY_FEATURES, 0.0) | {"ambiguous": 0.7, "irregular": 0.5}
    quality = assess(features, calibration)
    assert quality.flag == "check" and quality.score == pytest.approx(0.29)
    assert quality.reason.startswith("many pixels of uncertain class")
    assert assess(dict.fromkeys(QUALITY_FEATURES, 0.0), calibration).flag == "ok"
    assert assess(features, None).flag == "unknown" and assess(features, None).score is None


def test_nothing_found_is_flagged_for_checking_not_scored_ok():
    calibration = QualityCalibration(1.3, {"entropy": -0.9, "no_nuclei": 0.0}, 0.5)  # as a real fit: no empty images
    empty = dict.fromkeys(QUALITY_FEATURES, 0.0) | {"no_nuclei": 1.0}
    quality = assess(empty, calibration)
    assert quality.flag == "check" and quality.score is None and "no nuclei found" in quality.reason


def test_the_shipped_model_flags_an_image_without_nuclei(tmp_path):
    from nucseg.inference.model import load_model

    model = load_model("nuclei")
    flat = np.full((96, 96), 20, np.uint8)
    result = model.segment(flat)
    assert result.labels.max() == 0
    quality = model.assess_quality(flat, result)
    assert quality.flag == "check" and quality.score is None
    with pytest.raises(ValueError, match="unknown quality feature"):
        QualityCalibration.from_dict({"intercept": 1, "weights": {"colour": 1}, "threshold": 0.5})


def _ring_letters(count=6, shape=(96, 96)):
    """Bright hollow rings (an 'O' of burned-in text) as the image, and the filled discs a network outlines."""
    from skimage.draw import disk

    labels, image = _discs(count, radius=9, shape=shape), np.full(shape, 10, np.uint8)
    for i in range(count):
        centre = (16 + 30 * (i // 3), 16 + 30 * (i % 3))
        image[disk(centre, 9, shape=shape)] = 255
        image[disk(centre, 6, shape=shape)] = 10
    return labels, image


def test_hollow_letters_count_as_thin_strokes_and_filled_nuclei_do_not():
    labels, letters = _ring_letters()
    nuclei = np.where(labels > 0, 200, 10).astype(np.uint8)
    options = dict(image_kind="fluorescence", training_diameter=18.0)
    assert quality_features(labels, None, image=letters, **options)["thin_strokes"] == 1.0
    assert quality_features(labels, None, image=nuclei, **options)["thin_strokes"] == 0.0
    assert quality_features(labels, None, **options)["thin_strokes"] == 0.0  # without the image: shapes only
    lines = np.zeros((96, 96), np.int32)
    lines[10:13, 5:60], lines[40:43, 5:60] = 1, 2  # strokes 3 px thick, 55 px long
    assert quality_features(lines, None, **options)["thin_strokes"] == 1.0


def test_thickness_per_object_box_equals_one_transform_of_the_whole_image(dsb_samples):
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    from nucseg.inference.quality import _thickness, nuclear_signal

    def whole_image_thickness(labels: np.ndarray, index: np.ndarray) -> np.ndarray:
        depth = ndi.distance_transform_edt((labels > 0) & ~find_boundaries(labels, mode="inner"))
        return 2.0 * np.asarray(ndi.maximum(depth, labels, index))

    for sample in dsb_samples.values():  # real annotations: touching nuclei, nuclei cut by the image border
        labels = sample.labels
        boxes = ndi.find_objects(labels)
        index = np.unique(labels[labels > 0])
        assert np.array_equal(_thickness(labels, boxes, index), whole_image_thickness(labels, index))
        # the bright part of each nucleus, measured in the nucleus' box, as quality_features does
        signal = nuclear_signal(sample.image, "fluorescence")
        bright = np.where(signal > np.median(signal[labels > 0]), labels, 0)
        bright_index = np.unique(bright[bright > 0])
        assert bright_index.size > 0
        assert np.array_equal(_thickness(bright, boxes, bright_index), whole_image_thickness(bright, bright_index))


def test_nuclei_the_sampled_grid_misses_still_have_their_entropy_measured():
    labels = np.zeros((40, 40), np.int32)
    labels[1, 4:30], labels[21, 4:30] = 1, 2  # one pixel thick, on odd rows: off the every-second-row grid
    uncertain = np.full((3, 40, 40), 1 / 3, np.float32)
    features = quality_features(labels, uncertain, image_kind="fluorescence", training_diameter=18.0)
    assert features["entropy"] == pytest.approx(1.0)


def test_nuclear_signal_is_the_same_however_a_fluorescence_image_is_stored(dsb_samples):
    from nucseg.inference.quality import nuclear_signal
    from nucseg.preprocess.normalize import to_channels

    sample = next(iter(dsb_samples.values()))
    grey = to_channels(sample.image, 1)[..., 0]
    signal = nuclear_signal(grey, "fluorescence")
    assert np.array_equal(signal, grey.astype(np.float32))
    stored = {
        "one channel": grey[..., None],
        "gray as RGBA": np.dstack([grey, grey, grey, np.full_like(grey, 255)]),
        "blue on black": np.dstack([np.zeros_like(grey), np.zeros_like(grey), grey]),
    }
    assert all(np.allclose(nuclear_signal(image, "fluorescence"), signal) for image in stored.values())
    assert np.array_equal(nuclear_signal(grey, "brightfield"), -signal)  # dark nuclei: darkness is the signal


def test_the_sampled_ring_around_each_object_measures_what_the_full_ring_does(dsb_samples):
    from skimage.segmentation import expand_labels

    from nucseg.inference.quality import _inside_and_around, nuclear_signal

    for sample in dsb_samples.values():  # real nuclei and their real surroundings
        labels = sample.labels
        signal = nuclear_signal(sample.image, "fluorescence")
        index = np.unique(labels[labels > 0])
        inside, around = _inside_and_around(labels, index, signal, ring=4.0)
        ring = np.where(labels == 0, expand_labels(labels, distance=4.0), 0)
        full = np.array([signal[ring == label].mean() if (ring == label).any() else np.nan for label in index])
        assert np.allclose(inside, [signal[labels == label].mean() for label in index], rtol=1e-5)
        measured = ~np.isnan(full)
        assert np.isnan(around).sum() <= 0.02 * index.size  # an object with no sampled ring pixel is rare
        both = measured & ~np.isnan(around)
        spread = np.percentile(signal, 99) - np.percentile(signal, 1)
        error = np.abs(around[both] - full[both]) / spread
        # in shares of the image's range: well within FAINT_CONTRAST (0.1), which tells faint objects apart
        assert np.median(error) < 0.02 and np.mean(error < 0.05) >= 0.9


def test_objects_that_do_not_stand_out_are_faint():
    labels = _discs()
    rng = np.random.default_rng(0)
    texture = rng.integers(90, 110, labels.shape).astype(np.uint8)  # outlined objects on an even texture
    nuclei = np.where(labels > 0, 200, 10).astype(np.uint8)
    options = dict(image_kind="fluorescence", training_diameter=16.0)
    assert quality_features(labels, None, image=texture, **options)["faint"] == 1.0
    assert quality_features(labels, None, image=nuclei, **options)["faint"] == 0.0
    dark_nuclei = (255 - nuclei).astype(np.uint8)  # brightfield: nuclei darker than the field stand out
    assert (
        quality_features(labels, None, image=dark_nuclei, image_kind="brightfield", training_diameter=16.0)["faint"]
        == 0.0
    )


def test_beyond_a_not_nuclei_limit_of_its_kind_an_image_is_flagged_whatever_its_score():
    calibration = QualityCalibration(
        0.9,
        {"ambiguous": -0.8},
        0.5,
        limits={"fluorescence": {"thin_strokes": 0.05, "faint": 0.2}, "histology": {"thin_strokes": 0.4}},
    )
    features = dict.fromkeys(QUALITY_FEATURES, 0.0) | {"thin_strokes": 0.3}
    quality = assess(features, calibration, image_kind="fluorescence")
    assert quality.flag == "check" and quality.score == pytest.approx(0.9)
    assert quality.reason == "objects look like text, fibres or thin strokes, not nuclei"
    assert assess(features | {"thin_strokes": 0.05}, calibration, image_kind="fluorescence").flag == "ok"
    assert assess(features, calibration, image_kind="histology").flag == "ok"  # textured nuclei reach further
    assert assess(features, calibration, image_kind="brightfield").flag == "ok"  # no limits for that kind
    assert assess(features, calibration).flag == "ok"  # kind unknown: the loosest limit
    both = assess(features | {"ambiguous": 0.7}, calibration, image_kind="fluorescence")
    assert both.reason.startswith("objects look like text") and "uncertain class" in both.reason
    with pytest.raises(ValueError, match="unknown quality feature"):
        QualityCalibration.from_dict(calibration.to_dict() | {"limits": {"histology": {"ambiguous": 0.1}}})


def test_limits_are_the_largest_values_of_the_well_segmented_fitted_images_of_each_kind():
    rows = [
        dict.fromkeys(QUALITY_FEATURES, 0.0) | {"faint": f, "ambiguous": a}
        for f, a in [(0.1, 0.2), (0.3, 0.5), (0.2, 0.4), (0.6, 0.6), (0.05, 0.1)]
    ]
    rows.append(dict.fromkeys(QUALITY_FEATURES, 0.0) | {"no_nuclei": 1.0, "faint": 0.9})
    ap50 = [0.9, 0.5, 0.6, 0.2, 0.8, 0.0]
    kinds = ["fluorescence"] * 4 + ["histology", "fluorescence"]
    calibration = fit_calibration(rows, ap50, kinds=kinds)
    assert calibration.limits["fluorescence"]["faint"] == pytest.approx(2 * 0.3)  # 0.6 was segmented badly
    assert calibration.limits["histology"]["faint"] == pytest.approx(2 * 0.05)
    assert calibration.limits["fluorescence"]["thin_strokes"] == 0.0
    good = [i for i, a in enumerate(ap50) if a >= 0.5]
    assert all(assess(rows[i], calibration, image_kind=kinds[i]).flag == "ok" for i in good)
    assert fit_calibration(rows, ap50).limits == {}

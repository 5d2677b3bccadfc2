"""Automatic sizing's choice of where to measure (nucseg.inference.sizing), on synthetic nuclei."""

from types import SimpleNamespace

import numpy as np
import pytest
from skimage.draw import disk
from skimage.measure import label

from nucseg.inference import sizing
from nucseg.postprocess.measure import median_nucleus_diameter

SIDE = 1200  # above AUTO_SIZE_CROP_ABOVE: measured on the centre quarter, rows and columns 300-900


def _image(big_diameter: int, spacing: int = 200, debris_in_crop: int = 0) -> np.ndarray:
    """Bright discs of ``big_diameter`` px every ``spacing`` px from (100, 100), and small debris (14 px) between
    the discs of the centre (for ``spacing`` 200)."""
    image = np.zeros((SIDE, SIDE), np.float32)
    for row in range(100, SIDE, spacing):
        for col in range(100, SIDE, spacing):
            image[disk((row, col), big_diameter / 2, shape=image.shape)] = 1.0
    gaps = [(r, c) for r in (400, 600, 800) for c in (400, 600, 800)] + [(320, 500), (500, 320), (880, 700)]
    for row, col in gaps[:debris_in_crop]:
        image[disk((row, col), 7, shape=image.shape)] = 1.0
    return image


def _segment_by_threshold(calls: list):
    def segment_native(part: np.ndarray):
        calls.append(part.shape)
        return SimpleNamespace(labels=label(part > 0.5))

    return segment_native


def test_a_crop_whose_whole_objects_are_debris_is_not_measured():
    # 160 px nuclei: the crop holds 4 of them whole and cuts 12; its 12 whole debris would set the size.
    image = _image(160, debris_in_crop=12)
    calls: list = []
    estimate = sizing.estimate_factor(image, _segment_by_threshold(calls), training_diameter=40.0)
    assert calls == [(600, 600), (SIDE, SIDE)]  # the crop, then the whole image
    assert estimate.measured_diameter == pytest.approx(160, rel=0.02)
    assert estimate.first_pass is not None and estimate.factor == 0.5 and estimate.clipped


def test_a_crop_of_whole_nuclei_is_measured_alone():
    # 60 px nuclei every 100 px: the crop holds 25 whole and cuts 24 (only parts of them, so smaller).
    image = _image(60, spacing=100)
    calls: list = []
    estimate = sizing.estimate_factor(image, _segment_by_threshold(calls), training_diameter=40.0)
    assert calls == [(600, 600)]
    assert estimate.first_pass is None
    assert estimate.measured_diameter == pytest.approx(60, rel=0.02)
    assert estimate.factor == pytest.approx(40 / median_nucleus_diameter([label(image > 0.5)]), rel=0.02)

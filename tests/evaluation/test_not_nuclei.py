"""Tests of nucseg.evaluation.not_nuclei: the built images hold what they say, and the shipped model flags them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nucseg.evaluation.not_nuclei import as_cell_stain, with_stroma, with_text

SAMPLES = Path(__file__).parents[2] / "src" / "nucseg" / "data" / "samples"


@pytest.fixture(scope="module")
def fluorescence():
    return np.asarray(Image.open(SAMPLES / "fluorescence_1b518cd2.png"))


@pytest.fixture(scope="module")
def histology():
    return np.asarray(Image.open(SAMPLES / "histology_0bf33d3d.png"))[..., :3]


def test_text_is_burned_in_white_at_the_top_left_and_nothing_else_changes(fluorescence):
    plain = with_text(fluorescence, text="")
    text = with_text(fluorescence)
    assert text.shape == fluorescence.shape[:2] and text.dtype == np.uint8
    changed = np.argwhere(text != plain)
    assert len(changed) > 500 and (text[text != plain] > plain[text != plain]).mean() > 0.95
    assert changed[:, 0].max() < text.shape[0] // 2 and changed[:, 1].max() < text.shape[1] * 0.8


def test_a_cell_stain_fills_more_of_the_field_than_the_nuclei_and_cells_touch(fluorescence):
    from skimage.filters import threshold_otsu

    stain = as_cell_stain(fluorescence)
    nuclei = with_text(fluorescence, text="")
    assert stain.shape == nuclei.shape and stain.dtype == np.uint8
    assert (stain > threshold_otsu(stain)).mean() > 2 * (nuclei > threshold_otsu(nuclei)).mean()
    assert (stain > 25).mean() > 0.5  # most of this dense field is cells


def test_stroma_darkens_the_tissue_between_the_nuclei_and_leaves_them_be(histology):
    labels = np.zeros(histology.shape[:2], np.int32)
    labels[100:130, 100:140] = 1
    stroma = with_stroma(histology, labels)
    assert np.array_equal(stroma[100:130, 100:140], histology[100:130, 100:140])
    assert stroma[labels == 0].astype(float).mean() < histology[labels == 0].astype(float).mean() - 5


@pytest.fixture(scope="module")
def nuclei_model():
    from nucseg.inference.model import load_model

    return load_model("nuclei")


def _assessed(model, image):
    result = model.segment(image)
    return result, model.assess_quality(image, result)


def test_the_shipped_model_flags_burned_in_text_and_a_cell_stain_by_name(nuclei_model, fluorescence):
    clean_result, clean = _assessed(nuclei_model, fluorescence)
    assert clean.flag == "ok" and clean_result.labels.max() > 50
    result, text = _assessed(nuclei_model, with_text(fluorescence))
    assert text.flag == "check" and "text, fibres or thin strokes" in text.reason
    assert text.features["thin_strokes"] > clean.features["thin_strokes"]
    _, cells = _assessed(nuclei_model, as_cell_stain(fluorescence))
    assert cells.flag == "check" and "whole-cell or cytoplasm stain" in cells.reason


def test_the_shipped_model_flags_stroma_texture_on_h_and_e(nuclei_model, histology):
    result, plain = _assessed(nuclei_model, histology)
    _, stroma = _assessed(nuclei_model, with_stroma(histology, result.labels))
    # flagged by the network's uncertainty ("many pixels of uncertain class", "uncertain nuclei"): stroma
    # between H&E nuclei looks enough like the real thing that no not-nuclei limit names it
    assert plain.flag == "ok" and stroma.flag == "check" and "uncertain" in stroma.reason
    assert all(stroma.features[sign] > plain.features[sign] for sign in ("ambiguous", "entropy", "thin_strokes"))

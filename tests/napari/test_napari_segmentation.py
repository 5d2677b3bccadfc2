"""Tests of nucseg.napari.segmentation, reader and samples: what the widget does, without Qt or napari."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nucseg.errors import InputError
from nucseg.inference.model import load_model
from nucseg.io.images import read_image, write_labels
from nucseg.napari.reader import get_reader, read_outputs
from nucseg.napari.samples import brightfield_sample, fluorescence_sample, histology_sample
from nucseg.napari.segmentation import layer_image, segment_layer


def test_napari_layer_image_takes_gray_rgb_or_a_chosen_plane():
    gray, rgb, planes = np.zeros((8, 9)), np.zeros((8, 9, 3)), np.arange(2 * 8 * 9).reshape(2, 8, 9)
    assert layer_image(gray, rgb=False) is not None and layer_image(rgb, rgb=True).shape == (8, 9, 3)
    assert np.array_equal(layer_image(planes, rgb=False, channel=1), planes[1])
    with pytest.raises(InputError, match="has 2 planes .* choose the nuclear channel"):
        layer_image(planes, rgb=False, name="dapi+actin")
    with pytest.raises(InputError, match="has no channel 2"):
        layer_image(planes, rgb=False, channel=2)
    with pytest.raises(InputError, match="is 4-D"):
        layer_image(np.zeros((2, 2, 8, 9)), rgb=False)


def test_napari_segment_layer_measures_every_nucleus_as_layer_features():
    image = fluorescence_sample()[0][0]
    result = segment_layer(image, load_model("classical"), rgb=image.ndim == 3)
    assert result.labels.shape == image.shape[:2] and result.labels.max() == len(result.table) > 10
    features = result.features
    assert np.array_equal(features["index"], np.arange(1, result.labels.max() + 1))
    assert all(len(column) == len(result.table) for column in features.values())
    assert "area_px" in features and np.all(features["area_px"] > 0)
    assert result.quality is None and "unknown" in result.quality_text  # the classical model has no estimate


def test_napari_samples_are_the_shipped_images():
    for sample in (fluorescence_sample, histology_sample, brightfield_sample):
        [(data, meta)] = sample()
        assert data.ndim in (2, 3) and data.shape[0] > 100 and meta["name"]


def test_napari_reader_opens_labels_with_the_image_beside_them(tmp_path):
    image = read_image(__import__("nucseg.datasets.locations", fromlist=["x"]).sample_image_paths()[0])
    Image.fromarray(image).save(tmp_path / "cells.png")
    labels = np.zeros(image.shape[:2], dtype=np.int32)
    labels[10:20, 10:20] = 1
    write_labels(tmp_path / "out" / "cells_labels.tif", labels)
    assert get_reader(str(tmp_path / "cells.png")) is None
    reader = get_reader(str(tmp_path / "out" / "cells_labels.tif"))
    layers = reader(str(tmp_path / "out" / "cells_labels.tif"))
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    assert np.array_equal(layers[1][0], labels) and layers[0][0].shape == image.shape
    assert all("scale" not in meta for _, meta, _ in layers)  # a PNG states no pixel size
    (tmp_path / "cells.png").unlink()
    alone = read_outputs(str(tmp_path / "out" / "cells_labels.tif"))
    assert [kind for _, _, kind in alone] == ["labels"]


def test_napari_reader_finds_the_image_its_run_recorded_in_summary_csv(tmp_path):
    from nucseg.batch.driver import segment_files

    image = read_image(__import__("nucseg.datasets.locations", fromlist=["x"]).sample_image_paths()[0])
    source = tmp_path / "data" / "plate1" / "well_A1.png"  # not beside the outputs, nor in the folder above
    source.parent.mkdir(parents=True)
    Image.fromarray(image).save(source)
    segment_files([tmp_path / "data"], tmp_path / "results", model="classical")
    labels_path = tmp_path / "results" / "plate1" / "well_A1_labels.tif"  # the output name is plate1/well_A1
    layers = read_outputs(str(labels_path))
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    assert np.array_equal(layers[0][0], image)
    source.rename(source.with_name("moved.png"))  # the recorded image is gone and none has the name
    assert [kind for _, _, kind in read_outputs(str(labels_path))] == ["labels"]


def test_napari_reader_opens_the_recorded_image_from_anywhere_and_never_a_relative_guess(tmp_path, monkeypatch):
    from nucseg.batch.driver import segment_files

    image = read_image(__import__("nucseg.datasets.locations", fromlist=["x"]).sample_image_paths()[0])
    for root, pixels in ((tmp_path, image), (tmp_path / "elsewhere", 255 - image)):  # a same-layout decoy
        (root / "data").mkdir(parents=True)
        Image.fromarray(pixels).save(root / "data" / "well_A1.png")
    monkeypatch.chdir(tmp_path)
    segment_files([Path("data")], Path("results"), model="classical")  # typed as a relative path
    monkeypatch.chdir(tmp_path / "elsewhere")  # napari started elsewhere: data/well_A1.png names the decoy here
    labels_path = str(tmp_path / "results" / "well_A1_labels.tif")
    shown, _ = read_outputs(labels_path)
    assert np.array_equal(shown[0], image)  # summary.csv recorded the absolute path
    summary = tmp_path / "results" / "summary.csv"  # as summaries written before absolute paths were
    summary.write_text(summary.read_text().replace(str(tmp_path / "data" / "well_A1.png"), "data/well_A1.png"))
    assert [kind for _, _, kind in read_outputs(labels_path)] == ["labels"]


def test_napari_reader_opens_a_pyramid_at_the_level_its_labels_were_made_from(tmp_path, pyramid_tiff):
    gray = np.random.default_rng(3).integers(0, 255, (96, 128), dtype=np.uint8)
    pyramid_tiff(tmp_path / "slide.ome.tif", gray, 0.25)
    labels = np.zeros(gray.shape, dtype=np.int32)  # as `nucseg segment --level 1` writes them
    labels[10:20, 30:40] = 1
    write_labels(tmp_path / "slide_labels.tif", labels)
    image, labels_layer = read_outputs(str(tmp_path / "slide_labels.tif"))
    assert np.array_equal(image[0], gray) and np.array_equal(labels_layer[0], labels)
    assert image[1]["scale"] == labels_layer[1]["scale"] == pytest.approx((0.5, 0.5))  # microns of level 1
    Image.fromarray(gray[::2, ::2]).save(tmp_path / "slide.jpg")  # a preview of the same name, first by name
    image, _ = read_outputs(str(tmp_path / "slide_labels.tif"))  # the preview fits no level: the slide is shown
    assert np.array_equal(image[0], gray)
    write_labels(tmp_path / "slide_labels.tif", np.zeros((50, 50), dtype=np.int32))  # labels of no level
    with pytest.warns(UserWarning, match="shown without an image .*has no resolution level of 50 x 50 pixels"):
        [(shown, _, kind)] = read_outputs(str(tmp_path / "slide_labels.tif"))
    assert kind == "labels" and shown.shape == (50, 50)

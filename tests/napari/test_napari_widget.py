"""The napari dock widget in a real (hidden) viewer: it segments a sample into the labels of ``nucseg segment``.

Needs napari (``pip install "nucseg[napari]"``) and a display; CI runs these under ``xvfb-run``
(``.ci/run``). Select them with ``pytest -k napari``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="the napari extra is not installed (pip install 'nucseg[napari]')")
if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
    pytest.skip("napari's canvas needs a display: run under xvfb-run (as .ci/run does)", allow_module_level=True)

from nucseg.cli import main as nucseg_main  # noqa: E402
from nucseg.datasets.locations import sample_image_paths  # noqa: E402
from nucseg.io.images import read_labels  # noqa: E402

SCREENSHOT = os.environ.get("NUCSEG_NAPARI_SCREENSHOT")  # where to save the README's screenshot, when set


@pytest.fixture
def viewer():
    viewer = napari.Viewer(show=False)
    yield viewer
    viewer.close()


def _dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("nucseg", "Segment nuclei")
    return widget


def _wait(widget, timeout=120.0):
    from qtpy.QtWidgets import QApplication

    deadline = time.time() + timeout
    while widget.worker is not None and not widget.segment_button.isEnabled() and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()
    assert widget.segment_button.isEnabled(), "segmentation did not finish"


def test_napari_widget_segments_a_sample_as_nucseg_segment_does(viewer, tmp_path):
    viewer.open_sample("nucseg", "fluorescence")
    widget = _dock(viewer)
    assert widget.image_box.currentText() == viewer.layers[0].name
    widget.segment()
    _wait(widget)
    name = f"{viewer.layers[0].name} nuclei"
    assert name in viewer.layers and isinstance(viewer.layers[name], napari.layers.Labels)
    labels = np.asarray(viewer.layers[name].data)
    assert labels.max() > 10
    features = viewer.layers[name].features
    assert len(features) == labels.max() and "area_px" in features.columns
    assert "quality" in widget.status.text()  # the image's quality flag

    source = next(p for p in sample_image_paths() if p.name.startswith("fluorescence_"))
    assert nucseg_main(["segment", str(source), "--out", str(tmp_path / "cli")]) == 0
    assert np.array_equal(labels, read_labels(tmp_path / "cli" / f"{source.stem}_labels.tif"))

    if SCREENSHOT:
        Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(SCREENSHOT)
    saved = widget.save_measurements(tmp_path / "nuclei.csv")
    assert saved is not None and len(saved.read_text().splitlines()) == labels.max() + 1


def test_napari_widget_reports_errors_in_one_line(viewer, monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    widget = _dock(viewer)
    widget.segment()  # no image layer
    assert len(shown) == 1 and "no image layer" in shown[0] and "\n" not in shown[0]
    viewer.add_image(np.random.default_rng(0).random((2, 64, 64)), name="two planes")
    widget.set_model("/nonexistent/model")
    widget.segment()
    _wait(widget)
    assert len(shown) == 2 and "no such model folder" in shown[1] and "\n" not in shown[1]
    assert widget.channel_box.isEnabled() and widget.channel_box.maximum() == 1


def test_napari_sample_data_and_reader_are_registered(viewer, tmp_path):
    for key in ("fluorescence", "histology", "brightfield"):
        viewer.open_sample("nucseg", key)
    assert len(viewer.layers) == 3
    labels = np.zeros((32, 32), dtype=np.int32)
    labels[4:12, 4:12] = 1
    from nucseg.io.images import write_labels

    path = write_labels(tmp_path / "cells_labels.tif", labels)
    layers = viewer.open(str(path), plugin="nucseg")
    assert isinstance(layers[-1], napari.layers.Labels) and np.array_equal(layers[-1].data, labels)

"""The correct-and-retrain widget in a real (hidden) viewer: segment, correct, add, train, segment with the new model.

Needs napari and a display, as ``test_napari_widget.py``: ``xvfb-run -a python -m pytest -q -k napari``.
The training is tiny (one epoch of four 64-pixel crops) so that the test takes seconds, not minutes.
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

from scipy import ndimage as ndi  # noqa: E402

from nucseg.io.images import read_labels  # noqa: E402
from nucseg.models.folder import read_model_config  # noqa: E402
from nucseg.models.registry import DEFAULT_MODEL  # noqa: E402

SCREENSHOT = os.environ.get("NUCSEG_NAPARI_RETRAIN_SCREENSHOT")  # where to save the README's screenshot, when set
TINY = {"epochs": 1, "samples_per_epoch": 4, "batch_size": 2, "crop_size": 64, "device": "cpu", "snapshot_images": 1}

pytestmark = pytest.mark.usefixtures("training_environment")


@pytest.fixture
def viewer():
    viewer = napari.Viewer(show=bool(SCREENSHOT))
    yield viewer
    viewer.close()


def _process_until(done, timeout=600.0):
    from qtpy.QtWidgets import QApplication

    deadline = time.time() + timeout
    while not done() and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()
    assert done(), "the worker did not finish"


def _segment(widget):
    widget.segment()
    _process_until(lambda: widget.segment_button.isEnabled())
    return widget.labels_layer()


def _stroke(widget, points):
    widget.start_stroke()
    widget.viewer.layers["nucseg strokes"].add_paths([np.asarray(points, dtype=float)])


def _two_nearest(labels):
    ids = [int(i) for i in np.unique(labels) if i]
    centres = dict(zip(ids, ndi.center_of_mass(labels > 0, labels, ids)))
    _, a, b = min((np.hypot(*np.subtract(centres[a], centres[b])), a, b) for a in ids for b in ids if a < b)
    return (a, centres[a]), (b, centres[b])


def test_napari_correct_add_train_and_segment_with_the_new_model(viewer, tmp_path):
    viewer.open_sample("nucseg", "brightfield")
    _, widget = viewer.window.add_plugin_dock_widget("nucseg", "Correct and retrain")
    assert widget.model_box.currentText() == DEFAULT_MODEL
    layer = _segment(widget)
    first = np.asarray(layer.data).copy()
    assert first.max() > 5

    # Merge the two closest nuclei with a stroke between their centres ...
    (a, centre_a), (b, centre_b) = _two_nearest(first)
    _stroke(widget, [centre_a, centre_b])
    widget.edit("merge")
    merged = np.asarray(layer.data)
    assert not np.any(merged == max(a, b)) and np.all(merged[first == max(a, b)] == min(a, b))
    assert len(viewer.layers["nucseg strokes"].data) == 0, "the stroke is used up"
    # ... split the largest nucleus across its centre, and erase one (as napari's eraser would).
    sizes = np.bincount(merged.ravel())
    sizes[0] = 0
    big = int(np.argmax(sizes))
    rows, columns = np.nonzero(merged == big)
    _stroke(widget, [[rows.min() - 3, columns.mean()], [rows.max() + 3, columns.mean()]])
    widget.edit("split")
    corrected = np.asarray(layer.data).copy()
    assert corrected.max() == merged.max() + 1 and "split" in widget.status.text()
    corrected[corrected == corrected.max()] = 0
    layer.data = corrected

    # Add to the training set; a second add of the same image is refused, not overwritten.
    project = tmp_path / "project"
    widget.project_edit.setText(str(project))
    example = widget.add_to_training_set()
    assert example is not None and np.array_equal(read_labels(example.mask_path), corrected)
    assert example.image_path.parent == project / "images"
    assert widget.add_to_training_set() is None and np.array_equal(read_labels(example.mask_path), corrected)

    # Train (tiny); the new model is published in the project and becomes the widget's model.
    widget.train_settings = TINY
    widget.train()
    assert widget.cancel_button.isEnabled()
    _process_until(lambda: widget.train_button.isEnabled())
    result = widget.trained
    assert result is not None and result.model_dir is not None, widget.train_status.text()
    assert widget.model_box.currentText() == str(result.model_dir)
    assert widget.train_progress.value() == 100 and "now the model" in widget.train_status.text()
    config, _ = read_model_config(result.model_dir)
    assert config.training["init_from"] == DEFAULT_MODEL and config.split["train"] == [example.name]
    assert sorted(p.name for p in project.iterdir()) == ["images", "masks", "models", "runs"]
    assert (result.model_dir / "MODEL_CARD.md").is_file()

    # Segment again: with the new model.
    again = _segment(widget)
    assert [lay.name for lay in viewer.layers if isinstance(lay, napari.layers.Labels)] == [again.name], (
        "the result replaces the labels"
    )
    assert str(result.model_dir) in widget.status.text()
    assert np.asarray(again.data).max() > 0

    if SCREENSHOT:
        from qtpy.QtWidgets import QApplication

        _stroke(widget, [centre_a, centre_b])
        viewer.window._qt_window.resize(1700, 1000)  # room for the canvas beside the dock widget
        viewer.reset_view()
        QApplication.processEvents()
        Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(SCREENSHOT)

"""The nucseg dock widget for napari: pick a model, an image layer and its channel; Segment.

Segmentation runs in a worker thread (:func:`napari.qt.threading.create_worker`),
so the viewer never freezes; the result is a Labels layer named after the
image, with the per-nucleus measurements as its features. Errors become
one-line napari notifications.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from nucseg.errors import first_line
from nucseg.inference.options import SegmentOptions
from nucseg.inference.sizing import AUTO_DIAMETER
from nucseg.models.registry import DEFAULT_MODEL, REGISTERED_MODELS
from nucseg.napari.segmentation import LayerSegmentation, segment_layer

BROWSE = "model folder..."


class SegmentWidget(QWidget):
    """Dock widget: model, image layer, channel, diameter, TTA; Segment; Save measurements."""

    def __init__(self, napari_viewer: Any):  # napari passes the viewer by this name
        super().__init__()
        self.viewer = viewer = napari_viewer
        self._models: dict[str, Any] = {}
        self.worker = None
        self.result: LayerSegmentation | None = None
        self.result_layer = None

        self.model_box = QComboBox()
        self.model_box.addItems([DEFAULT_MODEL, *(n for n in REGISTERED_MODELS if n != DEFAULT_MODEL), BROWSE])
        self.model_box.activated.connect(self._model_chosen)
        self.model_box.setToolTip("a shipped model, or a model folder written by nucseg train")
        self.image_box = QComboBox()
        self.image_box.currentIndexChanged.connect(self._layer_chosen)
        self.channel_box = QSpinBox()
        self.channel_box.setToolTip("for a layer of several planes: the plane (first axis) that shows the nuclei")
        self.diameter_box = QDoubleSpinBox()
        self.diameter_box.setRange(0.0, 1000.0)
        self.diameter_box.setSpecialValueText("auto")  # 0 means: size the image automatically
        self.diameter_box.setSuffix(" px")
        self.diameter_box.setToolTip("typical nucleus diameter in pixels; auto measures it")
        self.tta_box = QCheckBox("test-time augmentation (slower, a little more accurate)")
        self.segment_button = QPushButton("Segment")
        self.segment_button.clicked.connect(self.segment)
        self.save_button = QPushButton("Save measurements (CSV)...")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._save_clicked)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("model", self.model_box)
        form.addRow("image", self.image_box)
        form.addRow("channel", self.channel_box)
        form.addRow("diameter", self.diameter_box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for widget in (self.tta_box, self.segment_button, self.progress, self.status, self.save_button):
            layout.addWidget(widget)
        layout.addStretch()

        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ inputs

    def _image_layers(self) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_layers(self, *_: Any) -> None:
        current = self.image_box.currentText()
        names = [layer.name for layer in self._image_layers()]
        self.image_box.blockSignals(True)
        self.image_box.clear()
        self.image_box.addItems(names)
        if current in names:
            self.image_box.setCurrentText(current)
        self.image_box.blockSignals(False)
        self._layer_chosen()

    def _layer_chosen(self, *_: Any) -> None:
        layer = self.selected_layer()
        planes = np.shape(layer.data)[0] if layer is not None and layer.ndim == 3 and not layer.rgb else 0
        self.channel_box.setEnabled(planes > 0)
        self.channel_box.setRange(0, max(planes - 1, 0))

    def _model_chosen(self, *_: Any) -> None:
        if self.model_box.currentText() != BROWSE:
            return
        folder = QFileDialog.getExistingDirectory(self, "nucseg model folder")
        if folder:
            self.set_model(folder)
        else:
            self.model_box.setCurrentIndex(0)

    def set_model(self, name_or_folder: str) -> None:
        """Choose a shipped model by name, or a model folder (added to the list)."""
        if self.model_box.findText(name_or_folder) < 0:
            self.model_box.insertItem(self.model_box.count() - 1, name_or_folder)
        self.model_box.setCurrentText(name_or_folder)

    def selected_layer(self):
        """The image layer chosen in the widget, or None."""
        name = self.image_box.currentText()
        return next((layer for layer in self._image_layers() if layer.name == name), None)

    # -------------------------------------------------------------- segmenting

    def segment(self) -> None:
        """Segment the chosen layer in a worker thread; the result arrives as a Labels layer."""
        from napari.qt.threading import create_worker

        layer = self.selected_layer()
        if layer is None:
            self._error("no image layer to segment: open an image (or File > Open Sample > nucseg) first")
            return
        model_name = self.model_box.currentText()
        channel = self.channel_box.value() if self.channel_box.isEnabled() else None
        diameter = self.diameter_box.value() or AUTO_DIAMETER
        tta = self.tta_box.isChecked()
        data, rgb, name = layer.data, layer.rgb, layer.name
        self.segment_button.setEnabled(False)
        self.progress.setRange(0, 0)  # busy
        self.status.setText(f"segmenting {name} with {model_name}...")

        def work() -> LayerSegmentation | str:
            # Errors come back as a value: an exception leaving the thread would reach napari's traceback dialog.
            try:
                model = self._model(model_name)
                options = SegmentOptions(diameter=diameter, tta=tta and model.name != "classical")
                return segment_layer(data, model, rgb=rgb, channel=channel, options=options, name=name)
            except Exception as exc:  # noqa: BLE001 - any failure is shown to the user in one line
                return first_line(exc)

        self.worker = create_worker(work)
        self.worker.returned.connect(
            lambda result: (
                self._show(result, layer, model_name) if isinstance(result, LayerSegmentation) else self._error(result)
            )
        )
        self.worker.finished.connect(self._finished)
        self.worker.start()

    def _model(self, name_or_folder: str):
        from nucseg.inference.model import load_model

        if name_or_folder not in self._models:
            self._models[name_or_folder] = load_model(name_or_folder)
        return self._models[name_or_folder]

    def _show(self, result: LayerSegmentation, layer, model_name: str) -> None:
        name = f"{layer.name} nuclei"
        if name in self.viewer.layers:
            existing = self.viewer.layers[name]
            existing.data, existing.features = result.labels, result.features
            self.result_layer = existing
        else:
            self.result_layer = self.viewer.add_labels(
                result.labels,
                name=name,
                features=result.features,
                scale=layer.scale[-2:],
                translate=layer.translate[-2:],
            )
        self.result = result
        self.save_button.setEnabled(True)
        scale = "" if result.scale is None else f", ran at scale {result.scale:.2f}"
        self.status.setText(
            f"{len(result.table)} nuclei in {layer.name} ({model_name}{scale}, "
            f"{result.seconds:.1f} s); {result.quality_text}"
        )

    def _finished(self) -> None:
        self.segment_button.setEnabled(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(message)
        show_error(message)

    # ----------------------------------------------------------------- saving

    def _save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save nucleus measurements", "nuclei.csv", "CSV (*.csv)")
        if path:
            self.save_measurements(path)

    def save_measurements(self, path: str | Path) -> Path | None:
        """Write the last result's measurements as CSV (the columns of ``nucseg segment --measure``)."""
        from nucseg.postprocess.measure import write_measurements_csv

        if self.result is None:
            self._error("nothing to save yet: segment an image first")
            return None
        try:
            written = write_measurements_csv(self.result.table, path)
        except OSError as exc:
            self._error(f"{path}: {first_line(exc)}")
            return None
        self.status.setText(f"saved {len(self.result.table)} nuclei to {written}")
        return written

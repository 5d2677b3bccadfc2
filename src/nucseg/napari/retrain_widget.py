"""The correct-and-retrain dock widget: segment, correct, add to a training set, fine-tune, segment better.

It is the Segment widget (:class:`nucseg.napari.widget.SegmentWidget`) with
three more parts: **Correct** (merge the nuclei under a stroke, split one
along a line, both drawn in a Shapes layer; napari's own label tools paint,
erase and fill), **Training set** (a project folder; **Add to training set**
stores the image and its corrected labels) and **Train** (fine-tunes the
current model on the project in a worker thread, with a progress bar, the
score of every epoch, a time budget and **Cancel**). The model it publishes
becomes the widget's model for the next segmentation.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from nucseg.errors import first_line
from nucseg.models.registry import DEFAULT_MODEL
from nucseg.napari.correction import add_correction, edit_labels, epoch_text, result_text
from nucseg.napari.widget import SegmentWidget

STROKES = "nucseg strokes"


class RetrainWidget(SegmentWidget):
    """Segment, correct, add to the training set, train; the new model segments next."""

    epoch_reported = Signal(object)  # an EpochReport, emitted from the training thread

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.train_worker = None
        self.cancel_event: threading.Event | None = None
        self.trained = None  # the last FineTuneResult
        #: TrainConfig settings over the project defaults (tests make the training tiny).
        self.train_settings: dict[str, Any] = {}

        correct = QGroupBox("Correct")
        self.stroke_button = QPushButton("Draw a stroke")
        self.stroke_button.setToolTip(f"adds the Shapes layer '{STROKES}' in path mode: draw across nuclei")
        self.stroke_button.clicked.connect(self.start_stroke)
        self.merge_button = QPushButton("Merge nuclei under stroke")
        self.merge_button.clicked.connect(lambda: self.edit("merge"))
        self.split_button = QPushButton("Split nucleus along stroke")
        self.split_button.clicked.connect(lambda: self.edit("split"))
        column = QVBoxLayout(correct)
        column.addWidget(
            QLabel("paint, erase and fill with napari's label tools; for merging and splitting, draw a stroke, then:")
        )
        row = QHBoxLayout()
        for button in (self.merge_button, self.split_button):
            row.addWidget(button)
        column.addWidget(self.stroke_button)
        column.addLayout(row)

        training_set = QGroupBox("Training set")
        self.project_edit = QLineEdit()
        self.project_edit.setPlaceholderText("project folder (images/ + masks/)")
        browse = QPushButton("...")
        browse.clicked.connect(self._browse_project)
        self.overwrite_box = QCheckBox("replace an earlier correction of the same image")
        self.add_button = QPushButton("Add to training set")
        self.add_button.clicked.connect(self.add_to_training_set)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.project_edit)
        folder_row.addWidget(browse)
        column = QVBoxLayout(training_set)
        column.addLayout(folder_row)
        for widget in (self.overwrite_box, self.add_button):
            column.addWidget(widget)

        train = QGroupBox("Train")
        self.minutes_box = QDoubleSpinBox()
        self.minutes_box.setRange(0.5, 600.0)
        self.minutes_box.setValue(5.0)
        self.minutes_box.setSuffix(" min")
        self.minutes_box.setToolTip("time budget: no epoch starts that would end after it")
        self.train_button = QPushButton("Train")
        self.train_button.setToolTip("fine-tune the current model on every image of the training set")
        self.train_button.clicked.connect(self.train)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("stop now and keep the best epoch so far")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.train_progress = QProgressBar()
        self.train_progress.setRange(0, 100)
        self.train_status = QLabel("")
        self.train_status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("budget", self.minutes_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        column = QVBoxLayout(train)
        column.addLayout(form)
        column.addLayout(buttons)
        column.addWidget(self.train_progress)
        column.addWidget(self.train_status)

        layout = self.layout()
        for group in (correct, training_set, train):
            layout.insertWidget(layout.count() - 1, group)  # above the closing stretch
        self.epoch_reported.connect(self._show_epoch)

    # ---------------------------------------------------------------- correcting

    def labels_layer(self):
        """The Labels layer of the chosen image (``<image> nuclei``), or None."""
        layer = self.selected_layer()
        name = None if layer is None else f"{layer.name} nuclei"
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def start_stroke(self) -> None:
        """Add (or select) the strokes layer, in path-drawing mode."""
        if STROKES not in self.viewer.layers:
            self.viewer.add_shapes(name=STROKES, edge_color="yellow", edge_width=2, face_color="transparent")
        strokes = self.viewer.layers[STROKES]
        self.viewer.layers.selection.active = strokes
        strokes.mode = "add_path"

    def edit(self, action: str) -> None:
        """``merge`` or ``split`` the chosen image's labels along the last stroke, which is then removed."""
        labels_layer = self.labels_layer()
        strokes = self.viewer.layers[STROKES] if STROKES in self.viewer.layers else None
        if labels_layer is None:
            self._error("nothing to correct: segment the image first")
            return
        if strokes is None or not len(strokes.data):
            self._error("no stroke: click 'Draw a stroke', draw across the nuclei, then merge or split")
            return
        stroke = np.asarray(strokes.data[-1])[:, -2:]
        points = np.array([labels_layer.world_to_data(strokes.data_to_world(p)) for p in stroke])[:, -2:]
        result = edit_labels(labels_layer.data, points, action)
        if result.changed:
            labels_layer.data = result.labels
        strokes.data = list(strokes.data)[:-1]
        self.status.setText(result.message)

    # ---------------------------------------------------------------- training set

    def _browse_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "training project folder")
        if folder:
            self.project_edit.setText(folder)

    def project_folder(self) -> Path | None:
        text = self.project_edit.text().strip()
        return Path(text).expanduser() if text else None

    def add_to_training_set(self):
        """Store the chosen image and its corrected labels in the project; the stored example, or None."""
        layer, labels_layer, folder = self.selected_layer(), self.labels_layer(), self.project_folder()
        if folder is None:
            self._error("choose a training project folder first")
            return None
        if layer is None or labels_layer is None:
            self._error("nothing to add: segment an image and correct its nuclei first")
            return None
        channel = self.channel_box.value() if self.channel_box.isEnabled() else None
        try:
            example = add_correction(
                folder,
                layer.data,
                labels_layer.data,
                rgb=layer.rgb,
                channel=channel,
                name=layer.name,
                overwrite=self.overwrite_box.isChecked(),
            )
        except Exception as exc:  # noqa: BLE001 - an earlier correction, a full disk: one line to the user
            self._error(first_line(exc))
            return None
        self.train_status.setText(f"added {example.name} to {folder}")
        return example

    # ---------------------------------------------------------------- training

    def train(self) -> None:
        """Fine-tune the current model on the project in a worker thread."""
        from napari.qt.threading import create_worker

        # Building an optimizer imports torch's compiler, which imports triton if it is installed. Triton's LLVM
        # clashes with the one that napari's OpenGL (Mesa) has loaded: a segmentation fault. Eager training never
        # needs triton, so in napari torch is told that it is absent.
        sys.modules.setdefault("triton", None)

        from nucseg.training.finetune import fine_tune

        folder = self.project_folder()
        if folder is None:
            self._error("choose a training project folder first")
            return
        model = self.model_box.currentText()
        if model == "classical":
            self._error("the classical model has no network to train: choose a network model")
            return
        minutes, settings = self.minutes_box.value(), dict(self.train_settings)
        self.cancel_event = cancel = threading.Event()
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.train_progress.setValue(0)
        self.train_status.setText(f"fine-tuning {model} on {folder}...")

        def work():
            try:
                return fine_tune(
                    folder,
                    base_model=model or DEFAULT_MODEL,
                    minutes=minutes,
                    settings=settings,
                    on_epoch=self.epoch_reported.emit,
                    cancel=cancel,
                )
            except Exception as exc:  # noqa: BLE001 - shown to the user in one line
                return first_line(exc)

        self.train_worker = create_worker(work)
        self.train_worker.returned.connect(self._trained)
        self.train_worker.finished.connect(self._training_finished)
        self.train_worker.start()

    def cancel(self) -> None:
        """Stop the training between two batches; the best epoch so far is kept."""
        if self.cancel_event is not None:
            self.cancel_event.set()
            self.train_status.setText("cancelling: the best epoch so far is kept...")

    def _show_epoch(self, report) -> None:
        self.train_progress.setValue(int(round(100 * report.fraction)))
        self.train_status.setText(epoch_text(report))

    def _trained(self, result) -> None:
        if isinstance(result, str):
            self._error(result)
            return
        self.trained = result
        if result.model_dir is not None:
            self.set_model(str(result.model_dir))
            self.train_progress.setValue(100)
        self.train_status.setText(result_text(result))

    def _training_finished(self) -> None:
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.cancel_event = None

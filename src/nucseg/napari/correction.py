"""What the correct-and-retrain widget does, without Qt: store a corrected layer, edit labels, describe progress.

The widget (:mod:`nucseg.napari.retrain_widget`) only gathers the layers and
the clicks; the corrections go to a :class:`~nucseg.datasets.project.TrainingProject`
and the training is :func:`nucseg.training.finetune.fine_tune`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nucseg.datasets.project import example_name, ProjectExample, TrainingProject
from nucseg.napari.segmentation import layer_image
from nucseg.postprocess.edit import LabelEdit, merge_under_stroke, split_along_line

EDITS = {"merge": merge_under_stroke, "split": split_along_line}


def add_correction(
    project: str | Path, data: Any, labels: Any, *, rgb: bool, channel: int | None, name: str, overwrite: bool = False
) -> ProjectExample:
    """Store the image of a layer (the plane that was segmented) and its corrected labels in ``project``.

    Parameters
    ----------
    project
        The training project's folder (created if new).
    data, rgb, channel, name
        As for :func:`nucseg.napari.segmentation.layer_image`; ``name`` (the
        image layer's) also names the example.
    labels : array-like of int, shape (H, W)
        The Labels layer's data after correction.
    overwrite
        Replace an earlier correction of the same image.

    Raises
    ------
    InputError
        As :meth:`~nucseg.datasets.project.TrainingProject.add` (an earlier correction without ``overwrite``:
        :class:`~nucseg.io.atomic.OutputExistsError`).
    """
    image = layer_image(data, rgb=rgb, channel=channel, name=name)
    example = example_name(name) if channel is None else example_name(f"{name}_ch{channel}")
    return TrainingProject(Path(project)).add(image, np.asarray(labels), name=example, overwrite=overwrite)


def edit_labels(labels: Any, points: np.ndarray, action: str) -> LabelEdit:
    """``merge`` the nuclei under a stroke or ``split`` one along it; ``points`` (N, 2) in the labels' pixels."""
    return EDITS[action](np.asarray(labels), np.asarray(points, dtype=float))


def epoch_text(report) -> str:
    """One line on an epoch of :func:`~nucseg.training.finetune.fine_tune` (an ``EpochReport``)."""
    budget = "" if report.budget_seconds is None else f" of {_clock(report.budget_seconds)}"
    best = ", best so far" if report.best else ""
    return (
        f"epoch {report.epoch}/{report.epochs}: AP@0.5 {report.ap50:.3f} on the training set{best} "
        f"({_clock(report.seconds)}{budget})"
    )


def result_text(result) -> str:
    """One line on a finished :func:`~nucseg.training.finetune.fine_tune` (a ``FineTuneResult``)."""
    if result.model_dir is None:
        return "training cancelled before the first epoch ended: nothing kept, the model is unchanged"
    how = "cancelled; kept" if result.cancelled else "trained; kept"
    return (
        f"{how} epoch {result.best_epoch} of {result.epochs_run} (AP@0.5 {result.best_ap50:.3f} on the "
        f"{len(result.images)} training images) in {_clock(result.seconds)}: {result.model_dir} is now the model"
    )


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}"

"""What the napari widget does to a layer, without Qt: choose the plane, segment, measure.

Kept apart from the widget so that it is tested without a display, and so
that the widget's labels are those of ``nucseg segment``: the layer's pixels
go through :meth:`nucseg.inference.model.Model.segment` exactly as a file's do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from nucseg.errors import InputError
from nucseg.inference.model import Model
from nucseg.inference.options import SegmentOptions
from nucseg.inference.quality import Quality
from nucseg.postprocess.measure import measure_nuclei, NucleusTable


@dataclass
class LayerSegmentation:
    """The nuclei found in one image layer.

    Attributes
    ----------
    labels : ndarray of int32, shape (H, W)
        0 background, nuclei 1..N.
    table
        One row of measurements per nucleus (:func:`nucseg.postprocess.measure.measure_nuclei`).
    scale
        Resize factor the network ran at (None for the classical model).
    seconds
        Time spent segmenting and measuring.
    quality
        How far to trust it (:class:`nucseg.inference.quality.Quality`; None for the classical model).
    """

    labels: np.ndarray
    table: NucleusTable
    scale: float | None
    seconds: float
    quality: Quality | None = None

    @property
    def quality_text(self) -> str:
        """The quality flag in words: ``quality 0.82 (ok)``, or ``check: <reason>``."""
        if self.quality is None:
            return "quality: unknown (the model has no quality calibration)"
        if self.quality.score is None:
            return f"quality: {self.quality.flag} ({self.quality.reason})"
        text = f"quality {self.quality.score:.2f} ({self.quality.flag})"
        return text if not self.quality.reason else f"{text}: {self.quality.reason}"

    @property
    def features(self) -> dict[str, np.ndarray]:
        """The measurements as napari layer features: one column per measurement, ``index`` = label."""
        columns = {name: self.table.column(name) if self.table.rows else np.zeros(0) for name in self.table.columns}
        return {"index": columns["label"].astype(np.int64), **columns}


def layer_image(data: Any, *, rgb: bool, channel: int | None = None, name: str = "layer") -> np.ndarray:
    """The 2-D image (gray, or RGB/RGBA) that an image layer's data holds.

    Parameters
    ----------
    data : array-like
        ``layer.data``: (H, W), (H, W, 3|4) with ``rgb``, or (C, H, W).
    rgb
        ``layer.rgb``.
    channel
        For (C, H, W) data: the plane along the first axis to segment
        (the nuclear channel). Required then; ignored otherwise.
    name
        The layer's name, for error messages.

    Raises
    ------
    InputError
        Data of another shape, or a 3-D layer without a channel (or with one out of range).
    """
    array = np.asarray(data)
    if array.ndim == 2 or (rgb and array.ndim == 3):
        return array
    if array.ndim == 3:
        if channel is None:
            raise InputError(name, f"has {array.shape[0]} planes (shape {array.shape}); choose the nuclear channel")
        if not 0 <= channel < array.shape[0]:
            raise InputError(name, f"has no channel {channel} (it has {array.shape[0]}: 0 to {array.shape[0] - 1})")
        return array[channel]
    raise InputError(
        name, f"is {array.ndim}-D (shape {array.shape}); segment a 2-D image layer (or split its channels into layers)"
    )


def segment_layer(
    data: Any,
    model: Model,
    *,
    rgb: bool = False,
    channel: int | None = None,
    options: SegmentOptions | None = None,
    name: str = "layer",
) -> LayerSegmentation:
    """Segment and measure the image of one layer.

    Parameters
    ----------
    data, rgb, channel, name
        As for :func:`layer_image`.
    model
        A loaded model (:func:`nucseg.load_model`).
    options
        The segment options (:class:`~nucseg.inference.options.SegmentOptions`:
        the widget's diameter and test-time augmentation); None: the defaults.
        Their ``channel`` is not the layer's: ``channel`` chooses the plane.

    Raises
    ------
    InputError
        As :func:`layer_image`; ``ValueError`` for options the model does not take.
    """
    started = time.perf_counter()
    image = layer_image(data, rgb=rgb, channel=channel, name=name)
    result = model.segment(image, options=options)
    intensities = image[:, :, :3] if image.ndim == 3 and image.shape[2] == 4 else image  # alpha is not intensity
    table = measure_nuclei(result.labels, intensities)
    return LayerSegmentation(
        result.labels, table, result.scale, time.perf_counter() - started, model.assess_quality(image, result)
    )

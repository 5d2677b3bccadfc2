"""The model of a block-wise run, alike for every block.

:func:`nucseg.batch.blockwise.segment_large` takes a model, a model name or
folder, or a plain function (:func:`as_model`), refuses one that cannot run
block by block (:func:`check_model`) and records which it was in the scratch
group (:func:`describe_model`). So that every block is segmented alike, a
network model's blocks are normalized with intensity percentiles of the whole
image (:func:`global_intensity_range`, from a strided sample of every block),
and automatic sizing and the settings per image kind are decided once, on the
centre block (:func:`one_scale_for_all_blocks`). The image's quality is pooled
from its blocks' (:func:`pooled_quality`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.batch.block_outputs import region_pixels, task_input
from nucseg.batch.scratch import write_attributes
from nucseg.batch.whole import warn_if_sizing_clipped
from nucseg.errors import ModelError, NucsegError
from nucseg.inference.model import load_model, Model, SegmentationResult
from nucseg.inference.options import SegmentOptions
from nucseg.inference.quality import assess, pooled_features, Quality, QUALITY_FEATURES
from nucseg.io.opened import OpenedImage
from nucseg.preprocess.normalize import to_channels, working_float
from nucseg.scale.blocks import Block, BlockGrid
from nucseg.scale.executors import Executor

#: Pixels sampled over the whole image for its intensity percentiles (network models).
NORMALIZATION_SAMPLES = 4_000_000


class _CallableModel(Model):
    """A plain function ``block image -> labels`` used as a model (no options)."""

    def __init__(self, function: Callable[[np.ndarray], np.ndarray]):
        self.function = function
        self.name = getattr(function, "__name__", "function")
        self.path = None

    def check_options(self, options: SegmentOptions) -> None:
        given = sorted(options.for_planes().to_dict())  # the channel is chosen by the reader
        if given:
            raise TypeError(f"segment options ({', '.join(given)}) need a Model, not a plain callable")

    def segment(
        self,
        image: np.ndarray,
        options: SegmentOptions | None = None,
        *,
        intensity_range: tuple[np.ndarray, np.ndarray] | None = None,
        on_tile: Callable[[int, int], None] | None = None,
        **keywords: Any,
    ) -> SegmentationResult:
        self.check_options(SegmentOptions.for_array(options, **keywords))
        return SegmentationResult(np.asarray(self.function(image)))

    def __repr__(self) -> str:
        return f"_CallableModel({self.function!r})"


def as_model(model: Model | str | Path | Callable | None) -> Model:
    """The model that ``model`` names (None: the default model); a plain function ``block image -> labels`` as one."""
    if model is None or isinstance(model, (str, Path)):
        return load_model(model)
    if isinstance(model, Model):
        return model
    if callable(model):
        return _CallableModel(model)
    raise TypeError(f"model must be a Model, a model name or folder, or a function, got {type(model).__name__}")


def segment_block_image(
    model: Model, image: np.ndarray, options: SegmentOptions, intensity_range: tuple[np.ndarray, np.ndarray] | None
) -> SegmentationResult:
    """The segmentation of one block's read region (``options``: those of a plane, ``SegmentOptions.for_planes``)."""
    if intensity_range is not None:
        return model.segment(image, options=options, intensity_range=intensity_range)
    return model.segment(image, options=options)


def check_model(model: Model, options: SegmentOptions) -> None:
    """Refuse a model that resizes every image to a fixed size, and options the model cannot honour."""
    if model.resize_to is not None:
        raise ModelError(
            model.path,
            f"the model resizes every image to {model.resize_to} x {model.resize_to} "
            "pixels; block-wise segmentation needs a model that runs at native resolution",
        )
    try:
        model.check_options(options)
    except ValueError as exc:
        raise NucsegError(str(exc)) from None


def describe_model(model: Model) -> str:
    """The model, as the scratch group records it: a changed model folder starts the blocks again."""
    if model.path is not None and (Path(model.path) / "config.json").is_file():
        folder = Path(model.path).resolve()
        return f"{folder} {(folder / 'config.json').stat().st_mtime_ns}"
    return repr(model)


def global_intensity_range(
    source: OpenedImage | np.ndarray, grid: BlockGrid, model: Model, executor: Executor, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel intensities at the model's normalization percentiles, over the whole image."""
    normalization = model.normalization
    height, width = grid.shape
    step = max(1, int(np.sqrt(height * width / NORMALIZATION_SAMPLES)))
    arguments = [(task_input(source, block.core), block, step, normalization.channels) for block in grid]
    samples = executor.run(_sample_task, arguments, description="sampling intensities", progress=progress)
    pooled = np.concatenate(samples, axis=0)
    low, high = np.percentile(pooled, [normalization.low_percentile, normalization.high_percentile], axis=0)
    return low, high


def _sample_task(source: OpenedImage | np.ndarray, block: Block, step: int, channels: int) -> np.ndarray:
    """A strided sample of the block's core: (n, channels) float32 (float64 for wide integer types)."""
    pixels = region_pixels(source, block.core)
    return to_channels(pixels[::step, ::step], channels).reshape(-1, channels).astype(working_float(pixels.dtype))


def one_scale_for_all_blocks(
    model: Any,
    source: OpenedImage | np.ndarray,
    grid: BlockGrid,
    options: SegmentOptions,
    intensity_range: tuple[np.ndarray, np.ndarray] | None,
    scratch: Path,
    attributes: dict[str, Any],
    named: Path,
) -> tuple[SegmentOptions, float | None]:
    """The segment options with automatic sizing replaced by one factor, and that factor.

    The factor is estimated on the centre block and stored in the scratch group, so that a resumed
    run keeps it (``named``, the image's file, is warned about when sizing stops at a limit of its range).
    A model's settings per image kind are chosen once too, by the centre block's kind, so that every
    block is cut alike. Returns ``(options, None)`` for models without a network.
    """
    if not model.has_network:
        return options, None
    rows, cols = grid.grid_shape
    centre = grid.block(rows // 2, cols // 2)
    centre_pixels = None
    if model.postprocess_by_kind:
        centre_pixels = region_pixels(task_input(source, centre.read), centre.read)
        options = options.replace(postprocess=options.postprocess.apply(model.postprocess_for(centre_pixels)).to_dict())
    factor = model.fixed_scale(options)
    if factor is not None:
        return options, factor
    if "scale" in attributes:
        factor = float(attributes["scale"])
    else:
        if centre_pixels is None:
            centre_pixels = region_pixels(task_input(source, centre.read), centre.read)
        estimate = model.estimate_size(centre_pixels, options=options, intensity_range=intensity_range)
        warn_if_sizing_clipped([estimate], named)
        factor = estimate.factor
        write_attributes(scratch, {"scale": factor})
    return options.replace(scale=factor), factor


def pooled_quality(model: Model, stored: np.ndarray) -> Quality | None:
    """The image's quality from its blocks' (``stored``: the scratch group's ``quality``), or None when the
    model gives none."""
    rows = stored.reshape(-1, stored.shape[-1])
    rows = rows[~np.isnan(rows[:, 0])]
    if not len(rows):
        return None
    features = pooled_features([dict(zip(QUALITY_FEATURES, row[1:])) for row in rows], rows[:, 0])
    return assess(features, model.quality_calibration())

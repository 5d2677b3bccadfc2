"""The one batch driver: every input image, whole or block-wise, on any executor.

::

    from nucseg.batch.driver import segment_files

    report = segment_files(["images/"], "out/", model="dsb2018", overlay=True, measure=True)
    print(report.format_summary())

:func:`segment_files` finds the images (:func:`nucseg.batch.inputs.find_images`),
decides for each whether it is segmented whole or block by block
(:func:`plan_images`), checks every option and every output it would
refuse *before* any work, and then runs one task per whole image
(:mod:`nucseg.batch.whole`) and the block tasks of each large image
(:mod:`nucseg.batch.blockwise`) on an executor: in this process by default,
or on a Dask cluster (:class:`nucseg.scale.executors.DaskExecutor`). Every
output is written atomically; images whose outputs exist are skipped
unless ``overwrite``, so the same command run again after a crash does
only what is missing. An image that fails is reported with its reason and
the others go on.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.batch.blockwise import segment_large
from nucseg.batch.inputs import find_images, ImageInput
from nucseg.batch.report import (
    BatchReport,
    describe_failure,
    ImageReport,
    merge_earlier_summary,
    SUMMARY_FILE,
    write_summary_csv,
)
from nucseg.batch.whole import (
    completes_from_labels,
    labels_of_report,
    open_input,
    physical_settings,
    segment_file,
    skipped_report,
    with_quality,
)
from nucseg.batch.writers import NucleiPiece, output_paths, RLE_WRITER
from nucseg.errors import InputError, NucsegError
from nucseg.inference.model import load_model, Model
from nucseg.inference.options import SegmentOptions
from nucseg.io.atomic import OutputExistsError, remove_stale_temporaries
from nucseg.io.formats import is_zarr
from nucseg.io.opened import OpenedImage
from nucseg.inference.runners import default_threads
from nucseg.scale.blocks import (
    check_block_settings,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_MARGIN,
    default_max_memory,
    needs_blocks,
    whole_image_bytes,
)
from nucseg.scale.executors import Executor, InProcessExecutor, resolve_model, TaskFailed


@dataclass(frozen=True)
class PlannedImage:
    """An input image and how it will be segmented.

    Attributes
    ----------
    image
        Its name and path (see :func:`nucseg.batch.inputs.find_images`).
    blockwise
        True: block by block (:func:`nucseg.batch.blockwise.segment_large`);
        False: whole, in memory.
    memory
        Estimated peak memory of a whole-image run, bytes
        (:func:`nucseg.scale.blocks.whole_image_bytes`, with all its planes
        for a stack; 0 when its header could not be read, or for a block-wise
        image).
    opened
        The image file opened (:func:`nucseg.batch.whole.open_input`): its
        header and metadata, read once for the plan and the run; None when
        it could not be opened (its run opens it again and reports why).
    """

    image: ImageInput
    blockwise: bool
    memory: int = 0
    opened: OpenedImage | None = None


def plan_images(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    blockwise: bool | None = None,
    max_memory: float | None = None,
    options: SegmentOptions | None = None,
) -> list[PlannedImage]:
    """Expand inputs into named images (as :func:`nucseg.batch.inputs.find_images`) and choose how to segment each.

    Zarr stores are inputs of their own (named by their stem) and always go
    block-wise. With ``blockwise=None``, other images go block-wise when a
    whole-image run of the size their header states would need more than
    ``max_memory`` bytes (:func:`nucseg.scale.blocks.needs_blocks`; None:
    :func:`nucseg.scale.blocks.default_max_memory`). Z-stacks and time
    series run in memory, plane by plane, with an estimate that counts all
    their planes; a warning says so when block-wise was asked for or the
    estimate is above the budget. Each image is opened here, once
    (:func:`nucseg.batch.whole.open_input` with the axes, channel and
    resolution level of ``options``; None: the defaults), for the plan and
    its run.

    Raises
    ------
    InputError
        As :func:`nucseg.batch.inputs.find_images`, or a Zarr store with ``blockwise=False``.
    """
    options = SegmentOptions() if options is None else options
    zarr_inputs = [Path(item) for item in inputs if is_zarr(item)]
    if zarr_inputs and blockwise is False:
        raise InputError(zarr_inputs[0], "Zarr images are only segmented block-wise")
    others = [item for item in inputs if not is_zarr(item)]
    images = find_images(others, exclude=out_dir) if others else []
    names = {image.name for image in images}
    for path in zarr_inputs:
        if path.stem in names:
            raise InputError(path, f"has the same output name {path.stem!r} as another input")
        names.add(path.stem)
    planned = [PlannedImage(ImageInput(path.stem, path), True, opened=_opened(path, options)) for path in zarr_inputs]
    max_memory = default_max_memory() if max_memory is None else max_memory
    for image in images:
        opened = _opened(image.path, options)
        planes, (height, width) = (1, (0, 0)) if opened is None else (int(np.prod(opened.plane_shape)), opened.shape)
        if planes > 1:
            planned.append(
                _planned_stack(image, planes, height, width, blockwise=blockwise, max_memory=max_memory, opened=opened)
            )
            continue
        large = needs_blocks(height, width, max_memory) if blockwise is None else blockwise
        planned.append(PlannedImage(image, large, 0 if large else whole_image_bytes(height, width), opened))
    return planned


def _opened(path: Path, options: SegmentOptions) -> OpenedImage | None:
    """The image file opened, or None when it cannot be: the path it takes then opens it again and says why."""
    try:
        return open_input(path, options)
    except InputError:
        return None


def _planned_stack(
    image: ImageInput,
    planes: int,
    height: int,
    width: int,
    *,
    blockwise: bool | None,
    max_memory: float,
    opened: OpenedImage | None,
) -> PlannedImage:
    """A Z-stack or time series runs in memory, plane by plane (block-wise runs take 2-D images): said when
    block-wise was asked for or its estimate is above the budget."""
    memory = whole_image_bytes(height, width, planes=planes)
    if blockwise:
        warnings.warn(
            f"{image.path}: a stack of {planes} planes; block-wise segmentation takes 2-D images, so its "
            "planes are segmented one by one in memory",
            stacklevel=3,
        )
    elif memory > max_memory:
        warnings.warn(
            f"{image.path}: a stack of {planes} planes of {height} x {width} needs about "
            f"{memory / 2**30:.1f} GB, above the memory budget of {max_memory / 2**30:.1f} GB "
            "(block-wise segmentation takes 2-D images); segmenting it in memory, plane by plane",
            stacklevel=3,
        )
    return PlannedImage(image, False, memory, opened)


def blockwise_output_path(out_dir: str | Path, name: str, *, zarr: bool = False) -> Path:
    """Label image of a block-wise segmented image: ``X_labels.tif``, or ``X_labels.zarr``."""
    return Path(out_dir) / f"{name}_labels.{'zarr' if zarr else 'tif'}"


def _outputs(
    out_dir: Path, name: str, *, blockwise: bool, outputs: Collection[str], zarr_labels: bool
) -> dict[str, Path]:
    """The output files of one image (:func:`nucseg.batch.writers.output_paths`; block-wise labels may be Zarr)."""
    paths = output_paths(out_dir, name, outputs=outputs)
    if blockwise:
        paths["labels"] = blockwise_output_path(out_dir, name, zarr=zarr_labels)
    return paths


def segment_files(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    model: Model | str | Path | None = None,
    executor: Executor | None = None,
    overlay: bool = False,
    measure: bool = False,
    outputs: Collection[str] = (),
    pixel_size: float | None = None,
    rle_path: str | Path | None = None,
    overwrite: bool = False,
    stitch_threshold: float | None = None,
    progress: bool = False,
    blockwise: bool | None = None,
    max_memory: float | None = None,
    block_size: int | None = None,
    margin: int | None = None,
    zarr_labels: bool = False,
    outline_width: int = 1,
    options: SegmentOptions | None = None,
    **segment_options: Any,
) -> BatchReport:
    """Segment image files and write label images, overlays, measurements and a summary.

    For every image ``X`` (see :func:`nucseg.batch.inputs.find_images` for names) this writes

    ``OUT/X_labels.tif``
        instance labels, uint16 (uint32 above 65,535 nuclei), 0 background
        (a tiled TIFF, or ``X_labels.zarr`` with ``zarr_labels``, for images
        segmented block-wise);
    ``OUT/X_overlay.png``
        with ``overlay``: nucleus outlines on the image as a person sees it
        (:func:`nucseg.visualize.outline_overlay`, ``outline_width`` pixels wide);
    ``OUT/X_nuclei.csv``
        with ``measure``: one row of measurements per nucleus
        (:func:`nucseg.postprocess.measure.measure_nuclei`);
    ``OUT/X_nuclei.geojson``, ``OUT/X_rois.zip``, ``OUT/X.ome.zarr``
        with ``geojson``, ``rois``, ``ome_zarr`` in ``outputs``: the outlines
        for QuPath and Fiji, and the image with its labels as OME-Zarr
        (:mod:`nucseg.batch.writers`);

    and, for the batch, ``OUT/summary.csv`` (image, path, status, nuclei,
    mean area in pixels, the resize factor the network ran at, seconds,
    error) and, with ``rle_path``, a Kaggle DSB2018 submission CSV. An image
    that cannot be read or segmented is reported (status ``failed`` and the
    reason) and the others still run. An image with any existing output is
    skipped (status ``skipped``) unless ``overwrite``, so a re-run after a
    crash only does what is missing. ``summary.csv`` is rewritten with
    this run's rows first: a skipped image keeps the numbers of the run
    that wrote its outputs, and the rows of images of earlier runs into the
    same folder are kept after them
    (:func:`nucseg.batch.report.merge_earlier_summary`).

    Parameters
    ----------
    inputs
        Image files, folders, DSB2018 datasets and Zarr stores.
    out_dir
        Output folder (created).
    model
        A :class:`~nucseg.inference.model.Model`, or a name or folder for
        :func:`~nucseg.inference.model.load_model` (loaded once here, and once
        per worker of a Dask executor).
    executor
        Where the tasks run (:mod:`nucseg.scale.executors`); None: in this process.
    overlay, measure
        Also write outline overlays / per-nucleus measurements (of a block-wise
        image: measured block by block, and an overview overlay of the shrunk image).
    outputs
        Names of more outputs to write (:data:`nucseg.batch.writers.OUTPUTS`:
        ``overlay``, ``nuclei``, ``geojson``, ``rois``, ``ome_zarr``);
        block-wise images write them block by block.
    pixel_size
        Microns per pixel for the measurements (areas in µm², lengths in µm);
        None: what each file states, of the level read.
    rle_path
        Write a Kaggle submission CSV of run-length encodings here.
    overwrite
        Replace existing outputs.
    progress
        Show progress bars (on stderr).
    blockwise
        True: every image block-wise; False: none; None: the images that a
        whole-image run would need more than ``max_memory`` for, and Zarr
        stores (see :func:`plan_images`).
    max_memory
        Memory budget of a whole-image run, bytes (None: a quarter of this
        machine's memory); images segmented side by side in this process
        (as many as there are cores, with the default executor) share it.
    block_size, margin
        Block settings of :func:`nucseg.batch.blockwise.segment_large` (None: its defaults).
    zarr_labels
        Write the labels of block-wise images as ``X_labels.zarr`` instead
        of a tiled ``X_labels.tif``.
    options, **segment_options
        Every segment setting (:class:`~nucseg.inference.options.SegmentOptions`),
        or its fields as keywords (which replace those of ``options``):

        ``channel``
            The channel that shows the nuclei, of multi-channel images: a number
            counted from 1 (as Fiji numbers channels) or a channel name stored in
            the file (see :mod:`nucseg.io.channels`). A multi-channel microscopy
            image without it fails with a line that lists its channels.
        ``channel_axis``
            Channel axis of multi-channel TIFFs that do not declare it.
        ``axes``
            Instead of ``channel_axis``: the letters of the axes of files that
            do not declare them (StarDist's convention: ``ZYX``, ``CYX``,
            ``YXC``, ``TZYX``, ...; see :func:`nucseg.io.axes.given_axes`). Z and T
            axes are planes, segmented one by one.
        ``level``
            The resolution level of pyramids (slides, pyramidal OME-TIFFs,
            OME-Zarr multiscale images) to segment: 0, full resolution (the
            default), 1 the next, ... Labels, measurements and pixel sizes
            are of that level; a file without that level fails, saying how
            many it has.
        ``diameter``
            As for :meth:`~nucseg.inference.model.NetworkModel.segment`, or in
            microns (``"8um"``) with each image's pixel size.
        ``scale``, ``tile_size``, ``overlap``, ``batch_size``, ``tta``, ``backend``, ``postprocess``
            As for :meth:`~nucseg.inference.model.NetworkModel.segment`.

    Returns
    -------
    BatchReport
        Its ``exit_code`` is 1 if any image failed.

    Raises
    ------
    TypeError
        A keyword that is no option.
    InputError
        Missing inputs, no images, clashing names, an output folder that is
        a file, bad block settings, a segment option that cannot be right
        (:class:`~nucseg.inference.options.OptionsError`), or the RLE file
        existing without ``overwrite``: all checked before any work.
    ModelError
        The model cannot be loaded, or cannot honour the options.
    """
    started = time.perf_counter()
    options = SegmentOptions.from_keywords(options, **segment_options)
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise InputError(None, f"pixel size must be a positive number of microns, got {pixel_size}")
    if isinstance(outline_width, bool) or not isinstance(outline_width, int) or outline_width < 1:
        raise InputError(None, f"outline width must be a whole number of pixels, at least 1, got {outline_width!r}")
    try:
        outputs = set(output_paths(out_dir, "", overlay=overlay, measure=measure, outputs=outputs)) - {"labels"}
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    if stitch_threshold is not None and not 0.0 < stitch_threshold <= 1.0:
        raise InputError(None, f"stitch threshold must be an IoU in (0, 1], got {stitch_threshold}")
    block_size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
    margin = DEFAULT_MARGIN if margin is None else margin
    try:
        check_block_settings(block_size, margin)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output path exists and is not a folder")
    rle_path = None if rle_path is None else Path(rle_path)
    if rle_path is not None and rle_path.exists() and not overwrite:
        raise OutputExistsError(rle_path, "exists (use --overwrite to replace it)")
    max_memory = default_max_memory() if max_memory is None else max_memory
    planned = plan_images(
        inputs,
        out_dir,
        blockwise=blockwise,
        max_memory=max_memory,
        options=options,
    )
    if not isinstance(model, Model):
        model = load_model(model)
    try:  # a diameter in microns becomes pixels per image; any number stands in for it here
        model.check_options(options.in_pixels(1.0))
    except ValueError as exc:
        raise NucsegError(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)

    reports: dict[str, ImageReport] = {}
    whole: list[PlannedImage] = []
    for item in planned:
        paths = _outputs(out_dir, item.image.name, blockwise=item.blockwise, outputs=outputs, zarr_labels=zarr_labels)
        existing = [path for path in paths.values() if path.exists()]
        if existing and not overwrite and (item.blockwise or not completes_from_labels(paths)):
            reports[item.image.name] = skipped_report(item.image, existing[0])
        elif not item.blockwise:
            whole.append(item)
    whole_executor, threads = _whole_image_executor(
        executor, model, len(whole), max_memory=max_memory, backend=options.backend
    )
    if len(reports) < len(planned):  # work to do: a backend that cannot start fails once, here
        try:
            with model.threads_per_call(threads):
                model.prepare(backend=options.backend)
        except ValueError as exc:
            raise NucsegError(str(exc)) from None
    if whole:
        settings = {
            "outputs": outputs,
            "pixel_size": pixel_size,
            "overwrite": overwrite,
            "stitch_threshold": stitch_threshold,
            "options": options,
            "outline_width": outline_width,
            # tiles are reported where stderr is the user's, one image at a time: not from threads
            # side by side, nor from the workers of a cluster
            "progress": progress and isinstance(whole_executor, InProcessExecutor) and whole_executor.workers == 1,
        }
        shared = whole_executor.share_model(model)
        tasks = [(item.image, out_dir, shared, settings, item.opened) for item in whole]
        with model.threads_per_call(threads):
            results = whole_executor.run(
                _segment_file_task,
                tasks,
                description="segmenting",
                progress=progress,
                collect_failures=True,
                memory=[item.memory for item in whole],
            )
        for item, result in zip(whole, results):
            reports[item.image.name] = _failed(item.image, result.error) if isinstance(result, TaskFailed) else result
    executor = InProcessExecutor() if executor is None else executor
    for item in planned:
        if item.blockwise and item.image.name not in reports:
            reports[item.image.name] = _segment_blockwise_image(
                executor,
                item.image,
                out_dir,
                model,
                block_size=block_size,
                margin=margin,
                zarr_labels=zarr_labels,
                overwrite=overwrite,
                pixel_size=pixel_size,
                outputs=outputs,
                progress=progress,
                options=options,
                outline_width=outline_width,
                opened=item.opened,
            )
    report = BatchReport([reports[item.image.name] for item in planned], out_dir, out_dir / SUMMARY_FILE, rle_path)
    if rle_path is not None:
        RLE_WRITER.write(
            rle_path,
            (RLE_WRITER.fragment(NucleiPiece(labels, name=name)) for name, labels in labels_of_report(report)),
            overwrite=overwrite,
        )
    report.seconds = time.perf_counter() - started
    write_summary_csv(report, report.summary_path, overwrite=True, kept=merge_earlier_summary(report))
    return report


def _whole_image_executor(
    executor: Executor | None, model: Model, images: int, *, max_memory: float, backend: str | None
) -> tuple[Executor, int | None]:
    """Where the whole images run, and the CPU threads of each network call (None: every core).

    The executor given, or in this process as many images side by side as
    there are cores, one thread each, within ``max_memory`` together, where
    the model gains by it (:meth:`~nucseg.inference.base.Model.segments_side_by_side`):
    the single-threaded steps around the network (decoding, normalization,
    the watershed, writing) then overlap with another image's network pass.
    """
    cores = default_threads()
    if executor is None:
        workers = min(cores, images) if model.segments_side_by_side(backend=backend) else 1
        executor = InProcessExecutor(max(workers, 1), max_memory=max_memory)
    if isinstance(executor, InProcessExecutor) and executor.workers > 1:
        return executor, max(1, cores // executor.workers)
    return executor, None


def _failed(image: ImageInput, exc: BaseException) -> ImageReport:
    if type(exc).__name__ == "KilledWorker":
        reason = f"{image.path}: the worker segmenting it died repeatedly (out of memory?)"
    else:
        reason = describe_failure(exc, image.path)
    return ImageReport(image.name, image.path, "failed", error=reason)


def _segment_file_task(
    image: ImageInput, out_dir: Path, model: Any, settings: dict[str, Any], opened: OpenedImage | None = None
) -> ImageReport:
    """Segment one image file, opened by the plan, and write its outputs (runs where the executor runs it)."""
    paths = output_paths(out_dir, image.name, outputs=settings["outputs"])
    remove_stale_temporaries(paths.values())
    return segment_file(
        image,
        out_dir,
        model=resolve_model(model),
        outputs=settings["outputs"],
        pixel_size=settings["pixel_size"],
        overwrite=settings["overwrite"],
        stitch_threshold=settings["stitch_threshold"],
        progress=settings["progress"],
        outline_width=settings["outline_width"],
        options=settings["options"],
        opened=opened,
    )


def _segment_blockwise_image(
    executor: Executor,
    image: ImageInput,
    out_dir: Path,
    model: Model,
    *,
    block_size: int,
    margin: int,
    zarr_labels: bool,
    overwrite: bool,
    pixel_size: float | None,
    outputs: Collection[str],
    progress: bool,
    options: SegmentOptions,
    outline_width: int = 1,
    opened: OpenedImage | None = None,
) -> ImageReport:
    started = time.perf_counter()
    paths = _outputs(out_dir, image.name, blockwise=True, outputs=outputs, zarr_labels=zarr_labels)
    try:
        opened = open_input(image.path, options) if opened is None else opened
        pixel_size, options = physical_settings(opened, pixel_size, options)
        result = segment_large(
            opened,
            paths["labels"],
            model=model,
            executor=executor,
            block_size=block_size,
            margin=margin,
            overwrite=overwrite,
            outputs={key: path for key, path in paths.items() if key != "labels"},
            pixel_size=pixel_size,
            progress=progress,
            outline_width=outline_width,
            options=options,
        )
    except Exception as exc:  # one bad image must not stop the batch
        report = _failed(image, exc)
        report.seconds = time.perf_counter() - started
        return report
    return with_quality(
        ImageReport(
            image.name,
            image.path,
            "ok",
            nuclei=result.nuclei,
            mean_area=result.mean_area,
            scale=result.scale,
            median_diameter=result.median_diameter,
            seconds=time.perf_counter() - started,
            pixel_size=pixel_size,
            outputs=list(paths.values()),
        ),
        result.quality,
    )

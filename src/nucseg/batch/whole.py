"""Segmenting one whole image file and writing its outputs (:data:`nucseg.batch.writers.OUTPUTS`)."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.batch.inputs import ImageInput
from nucseg.batch.report import BatchReport, describe_failure, ImageReport
from nucseg.batch.writers import (
    LABELS_WRITER,
    MEASUREMENTS_WRITER,
    NucleiPiece,
    OUTLINE_WRITERS,
    output_paths,
    OverlayWriter,
    write_ome_zarr,
)
from nucseg.inference.model import Model
from nucseg.inference.options import SegmentOptions
from nucseg.inference.quality import Quality
from nucseg.inference.sizing import SizeEstimate
from nucseg.errors import InputError
from nucseg.io.atomic import remove_output
from nucseg.io.images import read_labels, read_stack
from nucseg.io.opened import ImageStack, open_image, OpenedImage
from nucseg.postprocess import measure as nucleus_measure
from nucseg.postprocess.measure import NucleusTable, measure_nuclei, median_diameter_of_areas
from nucseg.postprocess.stitch import link_planes
from nucseg.scale.executors import TileProgress


def _segment_one(
    image: ImageInput,
    out_dir: Path,
    model: Model,
    *,
    outputs: Collection[str],
    pixel_size: float | None,
    overwrite: bool,
    stitch_threshold: float | None,
    options: SegmentOptions,
    progress: bool = False,
    outline_width: int = 1,
    opened: OpenedImage | None = None,
) -> ImageReport:
    started = time.perf_counter()
    paths = output_paths(out_dir, image.name, outputs=outputs)
    existing = [path for path in paths.values() if path.exists()]
    if existing and not overwrite:
        if completes_from_labels(paths):
            return _complete_from_labels(
                image,
                paths,
                pixel_size=pixel_size,
                options=options,
                started=started,
                outline_width=outline_width,
                opened=opened,
            )
        return skipped_report(image, existing[0])
    written: list[Path] = []
    try:
        opened = open_input(image.path, options) if opened is None else opened
        stack = opened.read_stack()
        pixel_size, options = physical_settings(opened, pixel_size, options)
        on_tile = {"on_tile": TileProgress(image.path.name)} if progress else {}
        results, qualities = [], []
        for plane in stack.planes:
            result = model.segment(plane, options=options.for_planes(), **on_tile)
            qualities.append(model.assess_quality(plane, result))
            result.probabilities = None  # not needed further; those of a whole stack need not fit in memory
            results.append(result)
        warn_if_sizing_clipped([result.size_estimate for result in results], image.path)
        labels = np.stack([result.labels for result in results])
        if stitch_threshold is not None and "Z" in stack.plane_axes:
            labels = _linked(labels, stack, stitch_threshold)
        written.append(
            LABELS_WRITER.write(
                paths["labels"],
                labels.reshape(stack.plane_shape + labels.shape[1:]),
                axes=stack.plane_axes + "YX",
                overwrite=overwrite,
            )
        )
        written += _write_views(
            image.path, stack, labels, paths, pixel_size, overwrite=overwrite, outline_width=outline_width
        )
    except Exception as exc:  # one bad image must not stop the batch; the reason is reported
        return _failed(image, exc, started, written)
    plane_reports = [
        with_quality(_report(image.name, image.path, plane_labels, result.scale, pixel_size), quality)
        for plane_labels, result, quality in zip(labels, results, qualities)
    ]
    if not stack.plane_axes:
        report = plane_reports[0]
    else:
        report = _report(image.name, image.path, labels, None, pixel_size)
        worst = min(plane_reports, key=lambda plane: 2.0 if plane.quality is None else plane.quality)
        report.quality, report.flag, report.flag_reason = worst.quality, worst.flag, worst.flag_reason
        if stitch_threshold is not None and "Z" in stack.plane_axes:  # 3-D nuclei: count each once per time point
            report.nuclei = sum(int(np.count_nonzero(np.unique(series))) for series in _by_time(labels, stack))
        report.planes = [
            dataclasses.replace(plane, name=name) for plane, name in zip(plane_reports, stack.plane_names())
        ]
    report.seconds, report.outputs = time.perf_counter() - started, written
    return report


def _write_views(
    path: Path,
    stack: ImageStack,
    labels: np.ndarray,
    paths: Mapping[str, Path],
    pixel_size: float | None,
    *,
    overwrite: bool,
    outline_width: int = 1,
) -> list[Path]:
    """Write the outputs but the label image that ``paths`` ask for, of labels (planes, H, W) of ``stack``."""
    written = []
    if "overlay" in paths:  # of the middle plane for a stack
        middle = len(labels) // 2
        writer = OverlayWriter(labels.shape[1:], outline_width=outline_width)
        piece = NucleiPiece(labels[middle], pixels=stack.planes[middle])
        written.append(writer.write(paths["overlay"], [writer.fragment(piece)], overwrite=overwrite))
    planes, names = stack.intensities()
    tables = None
    if "nuclei" in paths or "geojson" in paths:
        tables = [
            measure_pixels(plane_labels, plane, path, channel_names=names, pixel_size=pixel_size)
            for plane, plane_labels in zip(planes, labels)
        ]
    plane_names = stack.plane_names()

    def pieces() -> Iterator[NucleiPiece]:
        for i, plane_labels in enumerate(labels):
            yield NucleiPiece(
                plane_labels,
                table=None if tables is None else tables[i],
                plane=i if stack.plane_axes else None,
                plane_name=plane_names[i] if stack.plane_axes else None,
            )

    for key, writer in {"nuclei": MEASUREMENTS_WRITER, **OUTLINE_WRITERS}.items():
        if key in paths:
            written.append(writer.write(paths[key], map(writer.fragment, pieces()), overwrite=overwrite))
    if "ome_zarr" in paths:
        shape = stack.plane_shape
        planes, names = without_png_alpha(planes, names, path)
        written.append(
            write_ome_zarr(
                paths["ome_zarr"],
                planes.reshape(shape + planes.shape[1:]),
                labels.reshape(shape + labels.shape[1:]),
                plane_shape=shape,
                plane_axes=stack.plane_axes,
                pixel_size=pixel_size,
                channel_names=names,
                name=path.stem,
                overwrite=overwrite,
            )
        )
    return written


def completes_from_labels(paths: Mapping[str, Path]) -> bool:
    """Whether an image's labels exist and only an overlay or measurements it now asks for are missing."""
    return paths["labels"].exists() and not all(path.exists() for path in paths.values())


def skipped_report(image: ImageInput, existing: Path) -> ImageReport:
    """The report of an image not segmented because ``existing``, one of its outputs, is there."""
    return ImageReport(image.name, image.path, "skipped", error=f"{existing} exists (use --overwrite to replace it)")


def _failed(image: ImageInput, exc: Exception, started: float, partial: Collection[Path]) -> ImageReport:
    """The report of an image that failed (``started``: its ``perf_counter`` start), ``partial`` outputs removed:
    a failed image leaves no partial set of outputs."""
    for path in partial:
        remove_output(path)
    return ImageReport(
        image.name, image.path, "failed", seconds=time.perf_counter() - started, error=describe_failure(exc, image.path)
    )


def _complete_from_labels(
    image: ImageInput,
    paths: Mapping[str, Path],
    *,
    pixel_size: float | None,
    options: SegmentOptions,
    started: float,
    outline_width: int = 1,
    opened: OpenedImage | None = None,
) -> ImageReport:
    """Write an image's missing overlay or measurements from the labels an earlier run wrote; never re-segment.

    The report is ``ok`` with the labels' numbers; what only segmenting tells
    (the factor, the quality) comes from the earlier ``summary.csv``
    (:func:`nucseg.batch.report.merge_earlier_summary`).
    """
    missing = {key: path for key, path in paths.items() if not path.exists()}
    try:
        opened = open_input(image.path, options) if opened is None else opened
        stack = opened.read_stack()
        labels = read_stack(paths["labels"]).planes  # (planes, H, W), as written
        if labels.shape != stack.planes.shape[:3]:
            raise InputError(
                paths["labels"],
                f"labels of shape {labels.shape} do not fit the image "
                f"({stack.planes.shape[0]} plane(s) of {stack.planes.shape[1:3]}); "
                "use --overwrite to segment it again",
            )
        if pixel_size is None:
            pixel_size = opened.pixel_size
        written = _write_views(
            image.path, stack, labels, missing, pixel_size, overwrite=False, outline_width=outline_width
        )
    except Exception as exc:  # one bad image must not stop the batch
        return _failed(image, exc, started, missing.values())
    report = _report(image.name, image.path, labels if stack.plane_axes else labels[0], None, pixel_size)
    if stack.plane_axes:
        report.planes = [
            dataclasses.replace(_report(image.name, image.path, plane, None, pixel_size), name=name)
            for plane, name in zip(labels, stack.plane_names())
        ]
    report.seconds, report.outputs, report.from_earlier_labels = time.perf_counter() - started, written, True
    report.error = f"labels of an earlier run; wrote the missing {' and '.join(p.name for p in missing.values())}"
    return report


def _report(name: str, path: Path, labels: np.ndarray, scale: float | None, pixel_size: float | None) -> ImageReport:
    """An ok report of labels of one plane, or (for a stack) of all its planes' nuclei together."""
    planes = labels if labels.ndim == 3 else labels[None]
    areas = np.concatenate([np.bincount(plane.ravel())[1:] for plane in planes])
    areas = areas[areas > 0]
    return ImageReport(
        name,
        path,
        "ok",
        nuclei=int(areas.size),
        mean_area=float(areas.mean()) if areas.size else 0.0,
        scale=scale,
        median_diameter=median_diameter_of_areas(areas),
        pixel_size=pixel_size,
    )


def with_quality(report: ImageReport, quality: Quality | None) -> ImageReport:
    """``report`` with a quality estimate, when the model gave one."""
    if quality is not None:
        report.quality, report.flag, report.flag_reason = quality.score, quality.flag, quality.reason
    return report


def _linked(labels: np.ndarray, stack: ImageStack, threshold: float) -> np.ndarray:
    """The planes' labels with nuclei linked across Z (each time point on its own)."""
    return np.concatenate([link_planes(series, threshold) for series in _by_time(labels, stack)])


def _by_time(labels: np.ndarray, stack: ImageStack) -> np.ndarray:
    """The planes' labels (planes, Y, X) as (time points, Z, Y, X); one time point without a T axis."""
    z_count = stack.plane_shape[stack.plane_axes.index("Z")]
    return labels.reshape((-1, z_count) + labels.shape[1:])


def warn_if_sizing_clipped(estimates: Sequence[SizeEstimate | None], path: Path) -> None:
    """Say when automatic sizing stopped at a limit of its range (on any plane): a diameter should be given."""
    clipped = [estimate for estimate in estimates if estimate is not None and estimate.clipped]
    if clipped:
        estimate = clipped[0]
        low, high = nucleus_measure.AUTO_SCALE_LIMITS
        warnings.warn(
            f"{path}: nuclei measured about {estimate.measured_diameter:.0f} px across, too far from the "
            f"training size for automatic sizing (factors {low:g} to {high:g}); it ran at "
            f"{estimate.factor:g}: give --diameter for this image",
            stacklevel=2,
        )


def open_input(path: Path, options: SegmentOptions) -> OpenedImage:
    """The image file ``path`` opened with the axes, channel and resolution level of ``options``
    (:func:`nucseg.io.opened.open_image`)."""
    return open_image(path, channel_axis=options.layout, channel=options.channel, level=options.level)


def physical_settings(
    image: OpenedImage, pixel_size: float | None, options: SegmentOptions
) -> tuple[float | None, SegmentOptions]:
    """The pixel size of an image (the one given, else what its file states) and the segment options for it
    (a diameter in microns in pixels: :meth:`~nucseg.inference.options.SegmentOptions.in_pixels`).

    Raises
    ------
    InputError
        A diameter in microns for an image whose pixel size is not known, or unreadable metadata.
    """
    if pixel_size is None:
        pixel_size = image.pixel_size
    return pixel_size, options.in_pixels(pixel_size, image.path)


def segment_file(
    image: ImageInput,
    out_dir: str | Path,
    *,
    model: Model,
    overlay: bool = False,
    measure: bool = False,
    outputs: Collection[str] = (),
    pixel_size: float | None = None,
    overwrite: bool = False,
    stitch_threshold: float | None = None,
    progress: bool = False,
    outline_width: int = 1,
    options: SegmentOptions | None = None,
    opened: OpenedImage | None = None,
    **segment_options: Any,
) -> ImageReport:
    """Segment one image file and write its outputs, as :func:`segment_files` does for each image.

    Never raises for a bad image: the returned report says ``failed`` and
    why (``skipped`` if an output exists and not ``overwrite``). Used by
    the tasks of :func:`nucseg.batch.driver.segment_files`. ``progress``:
    report the network tiles of a large image on stderr
    (:class:`nucseg.scale.executors.TileProgress`). ``outputs``: more of
    :data:`nucseg.batch.writers.OUTPUTS` to write (``overlay`` and
    ``measure`` add ``overlay`` and ``nuclei``). ``options``, ``segment_options``:
    as for :func:`nucseg.batch.driver.segment_files`. ``opened``: the image as
    the plan opened it (:func:`open_input`), so that its header and metadata
    are read once; None: opened here.
    """
    outputs = set(outputs) | ({"overlay"} if overlay else set()) | ({"nuclei"} if measure else set())
    return _segment_one(
        image,
        Path(out_dir),
        model,
        outputs=outputs,
        pixel_size=pixel_size,
        overwrite=overwrite,
        stitch_threshold=stitch_threshold,
        options=SegmentOptions.from_keywords(options, **segment_options),
        progress=progress,
        outline_width=outline_width,
        opened=opened,
    )


def measure_pixels(
    labels: np.ndarray,
    pixels: np.ndarray,
    path: Path | None,
    *,
    channel_names: Sequence[str] | None,
    pixel_size: float | None,
) -> NucleusTable:
    """The measurements of ``labels`` (H, W) with the intensities of ``pixels`` (H, W) or (H, W, C).

    ``path`` is the file ``pixels`` were read from (None for an array given
    as it is): a PNG's alpha channel is not measured. ``channel_names`` name
    every channel of ``pixels`` (None: by position).
    """
    pixels, channel_names = without_png_alpha(pixels, channel_names, path)
    return measure_nuclei(labels, pixels, pixel_size=pixel_size, channel_names=channel_names)


def without_png_alpha(
    pixels: np.ndarray, channel_names: Sequence[str] | None, path: Path | None
) -> tuple[np.ndarray, Sequence[str] | None]:
    """``pixels`` (..., H, W, C) of the PNG file ``path`` without its alpha channel, and their names; others as
    they are."""
    if pixels.ndim >= 3 and pixels.shape[-1] in (2, 4) and path is not None and path.suffix.lower() == ".png":
        return pixels[..., :-1], None if channel_names is None else channel_names[:-1]
    return pixels, channel_names


def labels_of_report(report: BatchReport) -> Iterator[tuple[str, np.ndarray]]:
    """(name, labels) of every image with a label image, read back one at a time."""
    for image in report.images:
        path = output_paths(report.out_dir, image.name)["labels"]
        if image.status in ("ok", "skipped") and path.is_file():
            yield image.name, read_labels(path)

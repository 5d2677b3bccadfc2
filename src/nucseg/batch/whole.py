"""Segmenting one whole image file and writing its outputs (labels, overlay, measurements)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.batch.inputs import ImageInput
from nucseg.batch.report import BatchReport, describe_failure, ImageReport
from nucseg.inference.model import Model
from nucseg.io.channels import Channel
from nucseg.io.images import read_image, read_labels, write_labels, write_png
from nucseg.postprocess.measure import measure_nuclei, write_measurements_csv
from nucseg.visualize import outline_overlay


def output_paths(out_dir: str | Path, name: str, *, overlay: bool = False, measure: bool = False) -> dict[str, Path]:
    """Output files of one image: ``labels`` always, ``overlay`` and ``nuclei`` on request."""
    out_dir = Path(out_dir)
    paths = {"labels": out_dir / f"{name}_labels.tif"}
    if overlay:
        paths["overlay"] = out_dir / f"{name}_overlay.png"
    if measure:
        paths["nuclei"] = out_dir / f"{name}_nuclei.csv"
    return paths


def _segment_one(
    image: ImageInput,
    out_dir: Path,
    model: Model,
    *,
    overlay: bool,
    measure: bool,
    pixel_size: float | None,
    overwrite: bool,
    channel_axis: int | None,
    channel: Channel,
    options: Mapping[str, Any],
) -> ImageReport:
    started = time.perf_counter()
    paths = output_paths(out_dir, image.name, overlay=overlay, measure=measure)
    existing = [path for path in paths.values() if path.exists()]
    if existing and not overwrite:
        return ImageReport(image.name, image.path, "skipped",
                           error=f"{existing[0]} exists (use --overwrite to replace it)")
    written: list[Path] = []
    try:
        pixels = read_image(image.path, channel_axis=channel_axis, channel=channel)
        result = model.segment(pixels, **options)
        labels, scale = result.labels, result.scale
        written.append(write_labels(paths["labels"], labels, overwrite=overwrite))
        if overlay:
            written.append(write_png(paths["overlay"], outline_overlay(pixels, labels), overwrite=overwrite))
        if measure:
            table = measure_nuclei(labels, _intensity_channels(pixels, image.path), pixel_size=pixel_size)
            written.append(write_measurements_csv(table, paths["nuclei"], overwrite=overwrite))
    except Exception as exc:  # one bad image must not stop the batch; the reason is reported
        for path in written:  # a failed image leaves no partial set of outputs
            path.unlink(missing_ok=True)
        return ImageReport(image.name, image.path, "failed", seconds=time.perf_counter() - started,
                           error=describe_failure(exc, image.path))
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return ImageReport(image.name, image.path, "ok", nuclei=int(areas.size),
                       mean_area=float(areas.mean()) if areas.size else 0.0, scale=scale,
                       seconds=time.perf_counter() - started, outputs=written)


def segment_file(
    image: ImageInput,
    out_dir: str | Path,
    *,
    model: Model,
    overlay: bool = False,
    measure: bool = False,
    pixel_size: float | None = None,
    overwrite: bool = False,
    channel_axis: int | None = None,
    channel: Channel = None,
    **segment_options: Any,
) -> ImageReport:
    """Segment one image file and write its outputs, as :func:`segment_files` does for each image.

    Never raises for a bad image: the returned report says ``failed`` and
    why (``skipped`` if an output exists and not ``overwrite``). Used by
    the tasks of :func:`nucseg.batch.driver.segment_files`.
    """
    return _segment_one(image, Path(out_dir), model, overlay=overlay, measure=measure, pixel_size=pixel_size,
                        overwrite=overwrite, channel_axis=channel_axis, channel=channel,
                        options=segment_options)


def _intensity_channels(image: np.ndarray, path: Path) -> np.ndarray:
    """The image channels to measure intensities on: a PNG's alpha channel is dropped."""
    if image.ndim == 3 and image.shape[2] in (2, 4) and path.suffix.lower() == ".png":
        return image[:, :, :-1]
    return image


def labels_of_report(report: BatchReport) -> Iterator[tuple[str, np.ndarray]]:
    """(name, labels) of every image with a label image, read back one at a time."""
    for image in report.images:
        path = output_paths(report.out_dir, image.name)["labels"]
        if image.status in ("ok", "skipped") and path.is_file():
            yield image.name, read_labels(path)

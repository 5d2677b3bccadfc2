"""A napari reader of nucseg outputs: ``NAME_labels.tif`` opens as the image it was made from plus its labels."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nucseg.batch.inputs import image_stem
from nucseg.batch.report import read_summary_csv, SUMMARY_FILE
from nucseg.errors import InputError
from nucseg.io.formats import IMAGE_SUFFIXES, is_zarr
from nucseg.io.images import read_labels
from nucseg.io.lazy import open_level_of_shape
from nucseg.io.opened import OpenedImage

LABELS_SUFFIX = "_labels.tif"
#: The folders a labels file's run summary.csv is looked for in: its own and the three above.
_SUMMARY_DEPTH = 4


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[tuple]] | None:
    """npe2 reader hook: a reader for ``*_labels.tif`` files, None for anything else."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(str(p).endswith(LABELS_SUFFIX) for p in paths):
        return None
    return read_outputs


def read_outputs(path: str | list[str]) -> list[tuple]:
    """Layers of nucseg outputs: for each labels file, its image (when found: :func:`source_images`) and a
    Labels layer.

    A pyramid's image is read at the level the labels were made from (``nucseg segment --level``).
    Where the image states its pixel size, both layers are scaled to microns (napari's ``scale``),
    so that labels of different levels, and the image, overlay in the same units. Labels whose
    image is missing or does not fit them open alone (with a warning when an image was there).
    """
    layers: list[tuple] = []
    for labels_path in [path] if isinstance(path, str) else path:
        labels_path = Path(labels_path)
        name = labels_path.name[: -len(LABELS_SUFFIX)]
        labels = read_labels(labels_path)
        opened = labels_image(labels_path, labels) if labels.ndim == 2 else None
        scaled: dict = {}
        if opened is not None:
            image = opened.read()
            pixel_size = _pixel_size(opened)
            if pixel_size is not None:
                scaled = {"scale": (pixel_size, pixel_size)}
            rgb = image.ndim == 3 and image.shape[2] in (3, 4)
            layers.append((image, {"name": name, "rgb": rgb, **scaled}, "image"))
        layers.append((labels, {"name": f"{name} nuclei", **scaled}, "labels"))
    return layers


def labels_image(labels_path: Path, labels: np.ndarray) -> OpenedImage | None:
    """The image a 2-D labels file was made from, at the level of the labels' shape: the first of
    :func:`source_images` that has such a level; None, with a warning naming why, where none has."""
    problems = []
    for candidate in source_images(labels_path):
        try:
            return open_level_of_shape(candidate, labels.shape)
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        warnings.warn(f"{labels_path}: shown without an image ({'; '.join(problems)})", stacklevel=2)
    return None


def source_images(labels_path: Path) -> list[Path]:
    """The images that a labels file may have been made from: first the one its run's ``summary.csv``
    records (:func:`recorded_source`), then, for images moved since, the image files and Zarr stores of
    the same name (:func:`nucseg.batch.inputs.image_stem`: ``X.png``, ``X.ome.tif``, ``X.zarr``) beside
    it and in the folder above it, each folder's by name."""
    name = labels_path.name[: -len(LABELS_SUFFIX)]
    recorded = recorded_source(labels_path)
    found: list[Path] = [] if recorded is None else [recorded]
    for folder in (labels_path.parent, labels_path.parent.parent):
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        found += [
            entry
            for entry in entries
            if image_stem(Path(entry.name)) == name
            and (recorded is None or entry.resolve() != recorded.resolve())
            and ((entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES) or is_zarr(entry))
        ]
    return found


def recorded_source(labels_path: Path) -> Path | None:
    """The image that ``summary.csv`` of the ``nucseg segment`` run that wrote ``labels_path`` names as
    its source, where that is an absolute path that still exists; None otherwise.

    The summary is looked for beside the labels and up to three folders above
    (an image ``sub/X`` of an input folder has its labels at ``OUT/sub/X_labels.tif``). A relative path was
    relative to wherever the run was started, unknown here: it is not guessed at.
    """
    for folder in list(labels_path.parents)[:_SUMMARY_DEPTH]:
        summary = folder / SUMMARY_FILE
        if not summary.is_file():
            continue
        name = labels_path.relative_to(folder).as_posix()[: -len(LABELS_SUFFIX)]
        report = read_summary_csv(summary).get(name)
        if report is None or not report.path.is_absolute() or not report.path.exists():
            return None
        return report.path
    return None


def _pixel_size(opened: OpenedImage) -> float | None:
    try:
        return opened.pixel_size
    except InputError:  # metadata that states a size it cannot be read as: the layers stay in pixels
        return None

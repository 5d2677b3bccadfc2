"""A napari reader of nucseg outputs: ``NAME_labels.tif`` opens as the image beside it plus its labels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nucseg.batch.inputs import image_stem
from nucseg.io.formats import IMAGE_SUFFIXES, is_zarr
from nucseg.io.images import read_labels
from nucseg.io.opened import open_level_of_shape

LABELS_SUFFIX = "_labels.tif"


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[tuple]] | None:
    """npe2 reader hook: a reader for ``*_labels.tif`` files, None for anything else."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(str(p).endswith(LABELS_SUFFIX) for p in paths):
        return None
    return read_outputs


def read_outputs(path: str | list[str]) -> list[tuple]:
    """Layers of nucseg outputs: for each labels file, its image (when found beside it) and a Labels layer.

    A pyramid's image is read at the level the labels were made from (``nucseg segment --level``).
    Where the image states its pixel size, both layers are scaled to microns (napari's ``scale``),
    so that labels of different levels, and the image, overlay in the same units.
    """
    layers: list[tuple] = []
    for labels_path in [path] if isinstance(path, str) else path:
        labels_path = Path(labels_path)
        name = labels_path.name[: -len(LABELS_SUFFIX)]
        labels = read_labels(labels_path)
        image_path = source_image(labels_path)
        scaled: dict = {}
        if image_path is not None:
            opened = open_level_of_shape(image_path, labels.shape)
            image = opened.read()
            if opened.pixel_size is not None:
                scaled = {"scale": (opened.pixel_size, opened.pixel_size)}
            rgb = image.ndim == 3 and image.shape[2] in (3, 4)
            layers.append((image, {"name": name, "rgb": rgb, **scaled}, "image"))
        layers.append((labels, {"name": f"{name} nuclei", **scaled}, "labels"))
    return layers


def source_image(labels_path: Path) -> Path | None:
    """The image a labels file was made from: the image file or Zarr store of the same name
    (:func:`nucseg.batch.inputs.image_stem`: ``X.png``, ``X.ome.tif``, ``X.zarr``) beside it, or in the
    folder above it; the first by name where there are several."""
    name = labels_path.name[: -len(LABELS_SUFFIX)]
    for folder in (labels_path.parent, labels_path.parent.parent):
        images = sorted(
            entry
            for entry in folder.iterdir()
            if image_stem(Path(entry.name)) == name
            and (is_zarr(entry) or (entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES))
        )
        if images:
            return images[0]
    return None

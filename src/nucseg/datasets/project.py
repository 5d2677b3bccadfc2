"""A training project: the images a user corrected, in the paired layout that ``nucseg train --data`` reads.

A project folder holds::

    PROJECT/images/NAME.png|tif   an image as it was segmented (PNG for 8-bit gray or RGB
                                  and 16-bit gray, TIFF for anything else)
    PROJECT/masks/NAME.tif        its corrected nuclei: uint16/uint32 instance labels
    PROJECT/runs/RUN/             fine-tuning runs (:mod:`nucseg.training.finetune`)
    PROJECT/models/RUN/           the model folder each finished run published

Every file is written atomically, the mask before its image, so that a
crash never leaves a half-written file, and a correction is never replaced
unless the caller asks for it (``overwrite``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg.datasets.layouts import list_dataset, paired_folders
from nucseg.errors import InputError
from nucseg.io.atomic import atomic_write, OutputExistsError
from nucseg.io.formats import IMAGE_SUFFIXES
from nucseg.io.images import write_labels, write_png

IMAGES_DIR, MASKS_DIR, RUNS_DIR, MODELS_DIR = "images", "masks", "runs", "models"


@dataclass(frozen=True)
class ProjectExample:
    """One corrected image of a project: its name and its two files."""

    name: str
    image_path: Path
    mask_path: Path


def example_name(text: str) -> str:
    """A file-name-safe example name from a layer or file name: ``"cells 1.tif nuclei"`` -> ``"cells_1_nuclei"``."""
    stem = text[: -len(Path(text).suffix)] if Path(text).suffix.lower() in IMAGE_SUFFIXES else text
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    if not name:
        raise ValueError(f"cannot make a file name of {text!r}")
    return name


@dataclass(frozen=True)
class TrainingProject:
    """The folder of a training project (see the module docstring); created by the first :meth:`add`."""

    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @property
    def runs_dir(self) -> Path:
        return self.folder / RUNS_DIR

    @property
    def models_dir(self) -> Path:
        return self.folder / MODELS_DIR

    def examples(self) -> list[ProjectExample]:
        """The corrected images, sorted by name; empty for a new project.

        Raises
        ------
        InputError
            The folder is not a paired-layout project (an image without its mask, or the reverse).
        """
        images, masks = self.folder / IMAGES_DIR, self.folder / MASKS_DIR
        if not images.is_dir() and not masks.is_dir():
            return []
        if paired_folders(self.folder) != (images, masks):
            raise InputError(
                self.folder,
                f"is not a training project: it needs both {IMAGES_DIR}/ and {MASKS_DIR}/ (or neither, for a new one)",
            )
        if not any(_visible(images)) and not any(_visible(masks)):
            return []
        return [ProjectExample(f.name, f.image_path, f.mask_paths[0]) for f in list_dataset(self.folder)]

    def add(self, image: np.ndarray, labels: np.ndarray, *, name: str, overwrite: bool = False) -> ProjectExample:
        """Store an image and its corrected labels as the example ``name``.

        Parameters
        ----------
        image : ndarray, shape (H, W), (H, W, 3) or (H, W, 4)
            The image as it was segmented (an alpha channel is dropped).
        labels : ndarray of int, shape (H, W)
            Its corrected nuclei: 0 background, 1..N.
        name
            The example's name (:func:`example_name` makes one of a layer name).
        overwrite
            Replace an earlier correction of the same name; without it that is refused.

        Raises
        ------
        OutputExistsError
            The project already holds an example ``name`` and ``overwrite`` is False.
        InputError
            Image and labels that do not fit together, or labels that are not instance labels.
        """
        image, labels = np.asarray(image), np.asarray(labels)
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise InputError(name, f"image of shape {image.shape}: expected (H, W) or (H, W, 3)")
        if labels.shape != image.shape[:2]:
            raise InputError(name, f"labels of shape {labels.shape} do not cover the image {image.shape[:2]}")
        if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
            raise InputError(name, f"labels must be non-negative integers, got {labels.dtype}")
        if name != example_name(name):
            raise ValueError(f"example name {name!r} is not a safe file name (use example_name)")
        existing = self._files_named(name)
        if existing and not overwrite:
            raise OutputExistsError(
                existing[0], "holds an earlier correction of this image; replace it only if you mean to (overwrite)"
            )
        image_path = self.folder / IMAGES_DIR / f"{name}{_image_suffix(image)}"
        mask_path = self.folder / MASKS_DIR / f"{name}.tif"
        if image.dtype.kind not in "uif":
            raise InputError(name, f"image of type {image.dtype}: expected integers or floating point")
        # Both are written under temporary names first; the mask is renamed into place just before its image.
        with atomic_write(image_path) as image_tmp, atomic_write(mask_path) as mask_tmp:
            write_labels(mask_tmp, labels)
            _write_image(image_tmp, image)
        for stale in existing:  # an earlier correction's image of another type
            if stale not in (image_path, mask_path):
                stale.unlink(missing_ok=True)
        return ProjectExample(name, image_path, mask_path)

    def _files_named(self, name: str) -> list[Path]:
        folders = (self.folder / MASKS_DIR, self.folder / IMAGES_DIR)
        return [
            p
            for folder in folders
            if folder.is_dir()
            for p in _visible(folder)
            if p.stem == name and p.suffix.lower() in IMAGE_SUFFIXES
        ]


def _visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def _image_suffix(image: np.ndarray) -> str:
    png = image.dtype == np.uint8 or (image.dtype == np.uint16 and image.ndim == 2)
    return ".png" if png else ".tif"


def _write_image(path: Path, image: np.ndarray) -> None:
    if path.suffix == ".png":
        write_png(path, image)
        return
    import tifffile

    tifffile.imwrite(path, image, compression="zlib", photometric="rgb" if image.ndim == 3 else "minisblack")

"""Input discovery: files, folders and datasets in, named image files out."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nucseg.datasets.layouts import paired_folders
from nucseg.errors import InputError
from nucseg.io.formats import IMAGE_SUFFIXES, TIFF_SUFFIXES


@dataclass(frozen=True)
class ImageInput:
    """An image file to segment and the name its outputs get.

    Attributes
    ----------
    name
        Output name: the file stem, the DSB2018 id, or the path relative to
        an input folder without suffix (``sub/image``; ``.ome.tif`` is one
        suffix).
    path
        The image file.
    """

    name: str
    path: Path


def find_images(inputs: Sequence[str | Path], *, exclude: str | Path | None = None) -> list[ImageInput]:
    """Expand files, folders (recursively) and DSB2018 datasets into named image files.

    Rules, for each input:

    - a file is taken as is (a file that is not a readable image fails later,
      when segmented), named by its stem;
    - a DSB2018 dataset (``<id>/images/<id>.png``, masks ignored) gives one
      image per sample, named by the id; so does a single sample folder;
    - a folder of paired images and masks (``images/`` or ``inputs/`` beside
      ``masks/`` or ``labels/``, as :func:`nucseg.datasets.layouts.paired_folders` pairs them) gives its images only;
    - any other folder gives every image file below it (hidden files and
      folders skipped), named by its path relative to the folder without suffix.

    Parameters
    ----------
    inputs
        Files and folders.
    exclude
        A folder whose files are never taken (the output folder).

    Raises
    ------
    InputError
        An input does not exist, a folder holds no image, or two images would
        get the same name (and so the same output files).
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[ImageInput] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise InputError(item, "no such file or folder")
        if item.is_file():
            found.append(ImageInput(image_stem(Path(item.name)), item))
            continue
        images = _folder_images(item, excluded)
        if not images:
            raise InputError(item, f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        found.extend(images)
    by_name: dict[str, Path] = {}
    for image in found:
        if image.name in by_name:
            raise InputError(
                image.path,
                f"has the same output name {image.name!r} as {by_name[image.name]}; "
                "segment them into different --out folders",
            )
        by_name[image.name] = image.path
    return found


def _folder_images(folder: Path, excluded: Path | None) -> list[ImageInput]:
    children = _visible_children(folder)
    sample_dirs = [child for child in children if child.is_dir()]
    loose_images = [child for child in children if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES]
    if sample_dirs and not loose_images and all((child / "images").is_dir() for child in sample_dirs):
        return [image for child in sample_dirs for image in _dsb_sample_images(child)]  # DSB2018 dataset
    images_dir = folder / "images"
    if images_dir.is_dir() and [p.stem for p in _image_children(images_dir)] == [folder.name]:
        return _dsb_sample_images(folder)  # one DSB2018 sample folder
    paired = paired_folders(folder)
    if paired is not None:
        folder = paired[0]  # paired images and masks: the images only
    images, skipped = [], []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if excluded is not None and path.resolve().is_relative_to(excluded):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(relative.as_posix())
            continue
        images.append(ImageInput(image_stem(relative), path))
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(
            f"{folder}: skipped {len(skipped)} file(s) that are not images ({', '.join(IMAGE_SUFFIXES)}): {shown}",
            stacklevel=3,
        )
    return images


def _visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _image_children(folder: Path) -> list[Path]:
    return [p for p in _visible_children(folder) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _dsb_sample_images(sample_dir: Path) -> list[ImageInput]:
    """The image(s) of a DSB2018 sample folder, named by the folder (``<id>/images/<id>.png``)."""
    files = _image_children(sample_dir / "images")
    if len(files) == 1:
        return [ImageInput(sample_dir.name, files[0])]
    return [ImageInput(f"{sample_dir.name}/{image_stem(Path(path.name))}", path) for path in files]


def image_stem(path: Path) -> str:
    """``path`` without its image suffix, as a POSIX path: ``a/cells.ome.tif`` gives ``a/cells`` (OME is no name)."""
    stem = path.with_suffix("")
    if stem.suffix.lower() == ".ome" and path.suffix.lower() in TIFF_SUFFIXES:
        stem = stem.with_suffix("")
    return stem.as_posix()

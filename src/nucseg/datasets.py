"""Annotated datasets: (image, instance label image) pairs from common layouts.

Two layouts are read:

``dsb2018``
    The Kaggle Data Science Bowl 2018 layout: ``ROOT/<id>/images/<id>.png``
    and ``ROOT/<id>/masks/*.png``, one binary mask per nucleus.
``paired``
    Two folders, images and masks, matched by file stem. A mask is an
    instance label image (0 background, 1..N nuclei) or a binary mask, which
    is split into connected components with a warning. The seed notebook's
    ``inputs/`` + ``masks/`` folders are this layout.

Decoding the DSB2018 masks (about 29,000 PNGs) is slow, so every decoded
sample is cached on disk (``$NUCSEG_CACHE_DIR`` or ``~/.cache/nucseg``) under
a key built from the paths, sizes and modification times of its files; a
changed file gets a new key, so the cache never serves stale data.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg.errors import InputError
from nucseg.io import IMAGE_SUFFIXES, atomic_write, read_image, read_labels

CACHE_FORMAT_VERSION = 1


@dataclass
class Sample:
    """One annotated image.

    Attributes
    ----------
    name
        Image identifier (the DSB2018 id, or the file stem).
    image : ndarray, shape (H, W) or (H, W, C)
        Raw image in its native dtype.
    labels : ndarray of int32, shape (H, W)
        Instance labels, 0 background, 1..N nuclei.
    image_path
        The image file.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    image_path: Path


@dataclass(frozen=True)
class SampleFiles:
    """The files that make one sample, before decoding."""

    name: str
    image_path: Path
    mask_paths: tuple[Path, ...]
    layout: str  # "dsb2018" (one binary mask per nucleus) or "paired" (one label image)


def default_cache_dir() -> Path:
    """``$NUCSEG_CACHE_DIR`` if set, else ``~/.cache/nucseg``."""
    return Path(os.environ.get("NUCSEG_CACHE_DIR", Path.home() / ".cache" / "nucseg"))


def detect_layout(root: str | Path) -> str:
    """Return ``"dsb2018"`` or ``"paired"`` for a dataset folder, or raise :class:`InputError`."""
    root = Path(root)
    if not root.exists():
        raise InputError(root, "dataset folder does not exist")
    if not root.is_dir():
        raise InputError(root, "dataset path is not a folder")
    children = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    if not children:
        raise InputError(root, "dataset folder is empty")
    if any((c / "images").is_dir() for c in children if c.is_dir()):
        return "dsb2018"
    for images_name, masks_name in _PAIRED_FOLDER_NAMES:
        if (root / images_name).is_dir() and (root / masks_name).is_dir():
            return "paired"
    raise InputError(
        root,
        "unrecognised dataset layout: expected DSB2018 (<id>/images/<id>.png + <id>/masks/*.png) "
        "or paired folders (images/ + masks/, or inputs/ + masks/)",
    )


_PAIRED_FOLDER_NAMES = (("images", "masks"), ("inputs", "masks"), ("images", "labels"))


def list_dataset(
    root: str | Path | None = None,
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
) -> list[SampleFiles]:
    """Find and validate the files of a dataset without decoding them.

    Give either ``root`` (layout detected) or ``images_dir`` and ``masks_dir``.

    Raises
    ------
    InputError
        Empty folder, wrong layout, an image without masks, unmatched names.
    """
    if root is not None and (images_dir is not None or masks_dir is not None):
        raise ValueError("give either root or images_dir/masks_dir, not both")
    if root is None:
        if images_dir is None or masks_dir is None:
            raise ValueError("give root, or both images_dir and masks_dir")
        return _list_paired(Path(images_dir), Path(masks_dir))
    root = Path(root)
    if detect_layout(root) == "dsb2018":
        return _list_dsb2018(root)
    for images_name, masks_name in _PAIRED_FOLDER_NAMES:
        if (root / images_name).is_dir() and (root / masks_name).is_dir():
            return _list_paired(root / images_name, root / masks_name)
    raise AssertionError("unreachable: detect_layout accepted the folder")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _list_dsb2018(root: Path) -> list[SampleFiles]:
    samples = []
    for sample_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images_dir, masks_dir = sample_dir / "images", sample_dir / "masks"
        if not images_dir.is_dir():
            raise InputError(sample_dir, "wrong layout: missing images/ folder (expected <id>/images/<id>.png)")
        images = _image_files(images_dir)
        if not images:
            raise InputError(images_dir, "no image file")
        if len(images) > 1:
            raise InputError(images_dir, f"expected one image, found {len(images)}")
        if not masks_dir.is_dir():
            raise InputError(sample_dir, "wrong layout: missing masks/ folder (expected <id>/masks/*.png)")
        masks = _image_files(masks_dir)
        if not masks:
            raise InputError(masks_dir, "no mask files")
        samples.append(SampleFiles(sample_dir.name, images[0], tuple(masks), "dsb2018"))
    return samples


def _list_paired(images_dir: Path, masks_dir: Path) -> list[SampleFiles]:
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise InputError(folder, "folder does not exist")
    images = _image_files(images_dir)
    if not images:
        raise InputError(images_dir, "folder holds no images (" + ", ".join(IMAGE_SUFFIXES) + ")")
    masks = _image_files(masks_dir)
    if not masks:
        raise InputError(masks_dir, "folder holds no masks")
    mask_by_stem: dict[str, Path] = {}
    for mask in masks:
        stem = _strip_mask_suffix(mask.stem)
        if stem in mask_by_stem:
            raise InputError(mask, f"two masks for image {stem!r} ({mask_by_stem[stem].name} and {mask.name})")
        mask_by_stem[stem] = mask
    image_stems = {p.stem for p in images}
    unmatched_images = [p for p in images if p.stem not in mask_by_stem]
    if unmatched_images:
        more = f" and {len(unmatched_images) - 1} more" if len(unmatched_images) > 1 else ""
        raise InputError(unmatched_images[0], f"no mask with the same name in {masks_dir}{more}")
    unmatched_masks = [m for s, m in mask_by_stem.items() if s not in image_stems]
    if unmatched_masks:
        more = f" and {len(unmatched_masks) - 1} more" if len(unmatched_masks) > 1 else ""
        raise InputError(unmatched_masks[0], f"no image with the same name in {images_dir}{more}")
    return [SampleFiles(p.stem, p, (mask_by_stem[p.stem],), "paired") for p in images]


def _strip_mask_suffix(stem: str) -> str:
    for suffix in ("_labels", "_label", "_masks", "_mask"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def decode_sample(files: SampleFiles) -> Sample:
    """Read the image and build the instance label image of one sample.

    Raises
    ------
    InputError
        Unreadable file, or a mask whose size differs from the image.
    """
    image = read_image(files.image_path)
    if files.layout == "dsb2018":
        labels = _labels_from_binary_masks(files.mask_paths, image.shape[:2], files.name)
    else:
        labels = _labels_from_mask_file(files.mask_paths[0], image.shape[:2])
    return Sample(files.name, image, labels, files.image_path)


def _labels_from_binary_masks(mask_paths: Sequence[Path], shape: tuple[int, ...], name: str) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    overlap_pixels = 0
    next_label = 1
    for mask_path in mask_paths:
        mask = read_image(mask_path)
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != shape:
            raise InputError(mask_path, f"mask size {mask.shape[1]}x{mask.shape[0]} does not match "
                                        f"image size {shape[1]}x{shape[0]}")
        foreground = mask > 0
        if not foreground.any():
            continue
        taken = foreground & (labels > 0)
        overlap_pixels += int(taken.sum())
        labels[foreground & ~taken] = next_label
        next_label += 1
    if overlap_pixels:
        warnings.warn(f"{name}: {overlap_pixels} pixels belong to more than one mask; "
                      "each was kept in the first mask that claimed it", stacklevel=2)
    return labels


def _labels_from_mask_file(mask_path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from skimage.measure import label as connected_components

    labels = read_labels(mask_path)
    if labels.shape != shape:
        raise InputError(mask_path, f"mask size {labels.shape[1]}x{labels.shape[0]} does not match "
                                    f"image size {shape[1]}x{shape[0]}")
    values = np.unique(labels)
    if len(values) <= 2 and labels.max() > 0:
        warnings.warn(f"{mask_path}: binary mask; nuclei are taken as its connected components, "
                      "so touching nuclei merge (give an instance label image to avoid this)", stacklevel=2)
        labels = connected_components(labels > 0, connectivity=1).astype(np.int32)
    return labels.astype(np.int32)


def _cache_key(files: SampleFiles) -> str:
    digest = hashlib.sha1(f"v{CACHE_FORMAT_VERSION}|{files.layout}|{files.name}".encode())
    for path in (files.image_path, *files.mask_paths):
        stat = path.stat()
        digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _load_cached(files: SampleFiles, cache_dir: Path | None) -> Sample:
    if cache_dir is None:
        return decode_sample(files)
    cache_file = cache_dir / "samples" / f"{_cache_key(files)}.npz"
    if cache_file.exists():
        try:
            with np.load(cache_file) as data:
                return Sample(files.name, data["image"], data["labels"], files.image_path)
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            cache_file.unlink(missing_ok=True)
    sample = decode_sample(files)
    with atomic_write(cache_file) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, image=sample.image, labels=sample.labels)
    return sample


def load_dataset(
    root: str | Path | None = None,
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    names: Sequence[str] | None = None,
    cache_dir: str | Path | None | bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> list[Sample]:
    """Load an annotated dataset as a list of :class:`Sample`, in name order.

    Parameters
    ----------
    root
        Dataset folder (DSB2018 or paired layout, detected).
    images_dir, masks_dir
        Paired folders, instead of ``root``.
    names
        Load only these samples (for example a validation split).
    cache_dir
        Folder of the decoded-sample cache; True for :func:`default_cache_dir`,
        False or None to disable caching.
    workers
        Processes used to decode samples that are not cached (default: CPU count).
    progress
        Show a tqdm progress bar.

    Raises
    ------
    InputError
        Any problem with the dataset, naming the file.
    """
    files = list_dataset(root, images_dir=images_dir, masks_dir=masks_dir)
    if names is not None:
        by_name = {f.name: f for f in files}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise InputError(root or images_dir, f"no sample named {missing[0]!r}" +
                             (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        files = [by_name[n] for n in names]
    if cache_dir is True:
        cache_dir = default_cache_dir()
    cache = Path(cache_dir) if cache_dir else None
    workers = workers or os.cpu_count() or 1
    iterator_kwargs = dict(total=len(files), desc="loading", unit="img", disable=not progress)
    from tqdm.auto import tqdm

    if workers == 1 or len(files) < 8:
        return [_load_cached(f, cache) for f in tqdm(files, **iterator_kwargs)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_load_cached, files, [cache] * len(files), chunksize=4)
        return list(tqdm(results, **iterator_kwargs))

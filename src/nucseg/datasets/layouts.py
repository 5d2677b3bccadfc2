"""Annotated datasets: (image, instance label image) pairs from common layouts.

Two layouts are read:

``dsb2018``
    The Kaggle Data Science Bowl 2018 layout: ``ROOT/<id>/images/<id>.png``
    and ``ROOT/<id>/masks/*.png``, one binary mask per nucleus. Pixels
    claimed by more than one mask are reported (:class:`DatasetWarning`) and
    kept in the first mask, in file-name order.
``paired``
    Two folders, images and masks, matched by file stem (a mask may add
    ``_mask``, ``_masks``, ``_label`` or ``_labels`` to the stem). A mask is an
    instance label image (0 background, 1..N nuclei) or a binary mask, which
    is split into connected components with a warning. The seed notebook's
    ``inputs/`` + ``masks/`` folders are this layout.

Decoding the DSB2018 masks (about 29,000 PNGs) is slow, so every decoded
sample is cached on disk (``$NUCSEG_CACHE_DIR`` or ``~/.cache/nucseg``), one
file per sample, holding a fingerprint (names, sizes and modification times)
of the sample's files; a changed, added or removed file changes the
fingerprint, so the cache never serves stale data. Warnings raised while
decoding are stored with the sample and repeated on every load.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from nucseg.datasets.cache import cache_entry, CacheEntry, Decoded, default_cache_dir, read_cache, write_cache
from nucseg.datasets.sample import DatasetWarning, Sample, SampleFiles
from nucseg.errors import InputError, NucsegError
from nucseg.io.formats import IMAGE_SUFFIXES, LOSSLESS_SUFFIXES
from nucseg.io.images import read_labels, read_mask_crop
from nucseg.io.opened import open_image

# ------------------------------------------------------------------------ layouts

_PAIRED_FOLDER_NAMES = (("images", "masks"), ("inputs", "masks"), ("images", "labels"))
_MASK_STEM_SUFFIXES = ("_labels", "_label", "_masks", "_mask")


def detect_layout(root: str | Path) -> str:
    """Return ``"dsb2018"`` or ``"paired"`` for a dataset folder, or raise :class:`InputError`."""
    root = Path(root)
    if not root.exists():
        raise InputError(root, "dataset folder does not exist")
    if not root.is_dir():
        raise InputError(root, "dataset path is not a folder")
    children = _visible_entries(root)
    if not children:
        raise InputError(root, "dataset folder is empty")
    if any(c.is_dir() and (Path(c.path) / "images").is_dir() for c in children):
        return "dsb2018"
    if _is_single_dsb_sample(root):
        raise InputError(
            root,
            f"this is one DSB2018 sample (images/{root.name}.png + masks/); "
            f"give the folder that holds the sample folders ({root.parent})",
        )
    if paired_folders(root) is not None:
        return "paired"
    raise InputError(
        root,
        "unrecognised dataset layout: expected DSB2018 (<id>/images/<id>.png + <id>/masks/*.png) "
        "or paired folders (images/ + masks/, inputs/ + masks/, or images/ + labels/)",
    )


def _visible_entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def paired_folders(root: Path) -> tuple[Path, Path] | None:
    """(images, masks) folders of a paired-layout dataset at ``root``, or None.

    The one rule, for training data and for batch inputs alike.
    """
    for images_name, masks_name in _PAIRED_FOLDER_NAMES:
        if (root / images_name).is_dir() and (root / masks_name).is_dir():
            return root / images_name, root / masks_name
    return None


def _is_single_dsb_sample(root: Path) -> bool:
    images_dir = root / "images"
    if not (images_dir.is_dir() and (root / "masks").is_dir()):
        return False
    images = _image_files(images_dir)
    return len(images) == 1 and images[0].stem == root.name


def list_dataset(
    root: str | Path | None = None,
    *,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
) -> list[SampleFiles]:
    """Find and validate the files of a dataset without decoding them.

    Give either ``root`` (layout detected) or ``images_dir`` and ``masks_dir``.

    Returns
    -------
    list of SampleFiles, sorted by name

    Raises
    ------
    InputError
        Empty folder, wrong layout, an image without masks, unmatched names,
        lossy (JPEG) masks.
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
    folders = paired_folders(root)
    assert folders is not None, "detect_layout accepted the folder"
    return _list_paired(*folders)


def _image_files(folder: Path) -> list[Path]:
    # Path.iterdir builds child paths without re-parsing them: listing the
    # 29,000 DSB2018 masks is a large part of a cached reload. A folder named
    # like an image is left for open_image to reject by name.
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _check_lossless(masks: Sequence[Path]) -> None:
    lossy = [m for m in masks if m.suffix.lower() not in LOSSLESS_SUFFIXES]
    if lossy:
        raise InputError(lossy[0], "masks must be PNG or TIFF: JPEG compression changes mask values")


def _list_dsb2018(root: Path) -> list[SampleFiles]:
    samples = []
    for entry in _visible_entries(root):
        if not entry.is_dir():
            continue
        sample_dir = Path(entry.path)
        images_dir, masks_dir = sample_dir / "images", sample_dir / "masks"
        if not images_dir.is_dir():
            raise InputError(sample_dir, "wrong layout: missing images/ folder (expected <id>/images/<id>.png)")
        images = _image_files(images_dir)
        if not images:
            raise InputError(images_dir, "no image file (" + ", ".join(IMAGE_SUFFIXES) + ")")
        if len(images) > 1:
            raise InputError(images_dir, f"expected one image, found {len(images)}")
        if not masks_dir.is_dir():
            raise InputError(sample_dir, "wrong layout: missing masks/ folder (expected <id>/masks/*.png)")
        masks = _image_files(masks_dir)
        if not masks:
            raise InputError(masks_dir, "no mask files")
        _check_lossless(masks)
        samples.append(SampleFiles(sample_dir.name, images[0], tuple(masks), "dsb2018"))
    return samples


def _list_paired(images_dir: Path, masks_dir: Path) -> list[SampleFiles]:
    for folder in (images_dir, masks_dir):
        if not folder.exists():
            raise InputError(folder, "folder does not exist")
        if not folder.is_dir():
            raise InputError(folder, "not a folder")
    images = _image_files(images_dir)
    if not images:
        raise InputError(images_dir, "folder holds no images (" + ", ".join(IMAGE_SUFFIXES) + ")")
    masks = _image_files(masks_dir)
    if not masks:
        raise InputError(masks_dir, "folder holds no masks")
    image_by_stem: dict[str, Path] = {}
    for image in images:
        if image.stem in image_by_stem:
            raise InputError(
                image,
                f"two images named {image.stem!r} ({image_by_stem[image.stem].name} "
                f"and {image.name}); names must be unique",
            )
        image_by_stem[image.stem] = image
    mask_by_stem: dict[str, Path] = {}
    unmatched_masks = []
    for mask in masks:
        stem = _image_stem_of_mask(mask.stem, image_by_stem)
        if stem is None:
            unmatched_masks.append(mask)
        elif stem in mask_by_stem:
            raise InputError(mask, f"two masks for image {stem!r} ({mask_by_stem[stem].name} and {mask.name})")
        else:
            mask_by_stem[stem] = mask
    if unmatched_masks:
        raise InputError(
            unmatched_masks[0], f"no image with the same name in {images_dir}" + _and_more(len(unmatched_masks))
        )
    unmatched_images = [p for p in images if p.stem not in mask_by_stem]
    if unmatched_images:
        raise InputError(
            unmatched_images[0], f"no mask with the same name in {masks_dir}" + _and_more(len(unmatched_images))
        )
    _check_lossless(list(mask_by_stem.values()))
    return [SampleFiles(p.stem, p, (mask_by_stem[p.stem],), "paired") for p in images]


def _image_stem_of_mask(mask_stem: str, image_by_stem: dict[str, Path]) -> str | None:
    if mask_stem in image_by_stem:
        return mask_stem
    for suffix in _MASK_STEM_SUFFIXES:
        if mask_stem.endswith(suffix) and mask_stem[: -len(suffix)] in image_by_stem:
            return mask_stem[: -len(suffix)]
    return None


def _and_more(count: int) -> str:
    return f" (and {count - 1} more)" if count > 1 else ""


# ----------------------------------------------------------------------- decoding


def decode_sample(files: SampleFiles) -> Sample:
    """Read the image and build the instance label image of one sample.

    Warns (:class:`DatasetWarning`) about overlapping DSB2018 masks, empty
    masks, and binary masks split into connected components.

    Raises
    ------
    InputError
        Unreadable file, or a mask whose size differs from the image.
    """
    image = open_image(files.image_path).read()
    if files.layout == "dsb2018":
        labels = _labels_from_binary_masks(files.mask_paths, image.shape[:2], files.name)
    else:
        labels = _labels_from_mask_file(files.mask_paths[0], image.shape[:2])
    return Sample(files.name, image, labels, files.image_path)


def _size_mismatch(mask_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> str:
    return (
        f"mask size {mask_shape[1]}x{mask_shape[0]} does not match "
        f"image size {image_shape[1]}x{image_shape[0]} (width x height)"
    )


def _labels_from_binary_masks(mask_paths: Sequence[Path], shape: tuple[int, ...], name: str) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    overlap_pixels = 0
    next_label = 1
    for mask_path in mask_paths:
        crop = read_mask_crop(mask_path)
        if crop.shape != shape:
            raise InputError(mask_path, _size_mismatch(crop.shape, shape))
        if crop.slices is None:
            warnings.warn(f"{mask_path}: empty mask; skipped", DatasetWarning, stacklevel=2)
            continue
        region = labels[crop.slices]
        taken = crop.foreground & (region > 0)
        overlap_pixels += int(np.count_nonzero(taken))
        region[crop.foreground & ~taken] = next_label
        next_label += 1
    if overlap_pixels:
        pixels = "1 pixel belongs" if overlap_pixels == 1 else f"{overlap_pixels} pixels belong"
        warnings.warn(
            f"{name}: {pixels} to more than one mask; each was kept in the first mask that claimed it",
            DatasetWarning,
            stacklevel=2,
        )
    return labels


def _labels_from_mask_file(mask_path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from skimage.measure import label as connected_components

    labels = read_labels(mask_path)
    if labels.shape != shape:
        raise InputError(mask_path, _size_mismatch(labels.shape, shape))
    if labels.max(initial=0) > np.iinfo(np.int32).max:
        raise InputError(mask_path, f"label {labels.max()} is above the supported maximum {np.iinfo(np.int32).max}")
    values = np.unique(labels)
    if len(values) <= 2 and labels.max() > 0:
        components = connected_components(labels > 0, connectivity=1)
        if components.max() > 1:  # one blob reads the same as a binary mask or as one labelled nucleus
            warnings.warn(
                f"{mask_path}: binary mask; nuclei are taken as its connected components, "
                "so touching nuclei merge (give an instance label image to avoid this)",
                DatasetWarning,
                stacklevel=2,
            )
        labels = components
    return labels.astype(np.int32)


# -------------------------------------------------------------------------- cache


def _decode(files: SampleFiles, entry: CacheEntry | None) -> Decoded:
    """Decode one sample, recording its warnings, and cache it; runs in worker processes."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sample = decode_sample(files)
    except NucsegError as exc:
        return Decoded(None, error=(getattr(exc, "path", None), getattr(exc, "problem", str(exc))))
    decoded = Decoded(sample, [str(w.message) for w in caught])
    if entry is not None:
        try:
            write_cache(entry, decoded)
        except OSError as exc:
            decoded.messages.append(
                f"{entry.path.parent}: cannot write the decode cache ({exc.strerror or exc}); "
                "the sample is decoded again next time"
            )
    return decoded


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
        Load only these samples, in this order (for example a validation split).
    cache_dir
        Folder of the decoded-sample cache; True for :func:`default_cache_dir`,
        False or None to disable caching.
    workers
        Processes used to decode samples that are not cached (default: CPU count).
    progress
        Show a tqdm progress bar while decoding.

    Warns
    -----
    DatasetWarning
        Overlapping masks (naming the sample and the pixel count), empty
        masks, binary masks split into connected components; repeated on
        cached loads.

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
            raise InputError(root or images_dir, f"no sample named {missing[0]!r}{_and_more(len(missing))}")
        files = [by_name[n] for n in names]
    if cache_dir is True:
        cache_dir = default_cache_dir()
    cache = Path(cache_dir) if cache_dir else None
    entries = [cache_entry(f, cache) if cache else None for f in files]
    results = [read_cache(e, f) if e else None for f, e in zip(files, entries)]
    misses = [i for i, r in enumerate(results) if r is None]
    decoded_misses = list(
        _decode_all([files[i] for i in misses], [entries[i] for i in misses], workers=workers, progress=progress)
    )
    for i, decoded in zip(misses, decoded_misses):
        results[i] = decoded
    for decoded in results:
        for message in decoded.messages:
            warnings.warn(message, DatasetWarning, stacklevel=2)
    return [decoded.sample for decoded in results]


def _decode_all(files: list[SampleFiles], entries: list[CacheEntry | None], *, workers: int | None, progress: bool):
    """Yield :class:`Decoded` for ``files`` in order; raise the first error."""
    from tqdm.auto import tqdm

    workers = min(workers or os.cpu_count() or 1, len(files))
    bar = tqdm(total=len(files), desc="decoding", unit="img", disable=not progress or not files)
    with bar:
        if workers <= 1 or len(files) < 8:
            results = (_decode(f, e) for f, e in zip(files, entries))
            yield from _raise_errors(results, bar)
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            try:
                yield from _raise_errors(pool.map(_decode, files, entries, chunksize=2), bar)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def _raise_errors(results, bar):
    for decoded in results:
        if decoded.error is not None:
            raise InputError(*decoded.error)
        bar.update()
        yield decoded


# --------------------------------------------------------------------- image kind

"""Pack annotated datasets into a compact folder that can travel: to a GPU machine, or into an archive.

A packed dataset is in the paired layout (:mod:`nucseg.datasets.layouts`):
``images/<name>.png`` (or ``.jpg``, ``.tif``) and ``masks/<name>.tif``, one
instance label image per sample, whatever layout it came from. The names are
the source's, so a run on the packed copy draws the same seeded
train / validation / test split (:func:`nucseg.training.data.split_dataset`)
and finds the images a model folder's split names. A training config's
``datasets`` paths resolve under the data root, so packing every dataset of a
config under one folder and pointing ``NUCSEG_DATA_DIR`` at it runs the same
config on the packed data::

    nucseg pack --config configs/nuclei.yaml --out packed/
    NUCSEG_DATA_DIR=packed nucseg train --config configs/nuclei.yaml --out runs/nuclei --device cuda

Images are stored as compactly as is exact: an opaque alpha channel is
dropped and a gray image stored as equal colour channels becomes one channel
(the network sees the same input: :func:`nucseg.preprocess.normalize.to_channels`
makes three equal channels of either), 8-bit images as optimized PNG, others as
zlib TIFF. With ``jpeg_quality`` 8-bit images are JPEG instead (lossy: the four
training sets of the ``nuclei`` model take 132 MB exact, 52 MB at quality 95 and
33 MB at 90, ``benchmarks/bench_pack.py``); the labels are always exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg.datasets.layouts import load_dataset
from nucseg.errors import InputError
from nucseg.io.atomic import atomic_directory
from nucseg.io.images import write_labels
from nucseg.preprocess.normalize import equal_channels


@dataclass(frozen=True)
class PackedDataset:
    """One dataset written by :func:`pack_dataset`.

    Attributes
    ----------
    source, folder
        Where it was read from, and the packed copy.
    images
        Samples written.
    bytes
        Size of the packed copy on disk.
    lossy_images
        Images stored as JPEG (not exact).
    """

    source: Path
    folder: Path
    images: int
    bytes: int
    lossy_images: int


def compact_image(image: np.ndarray) -> np.ndarray:
    """``image`` without what carries no information: an opaque alpha channel, equal colour channels.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)

    Returns
    -------
    ndarray, shape (H, W) or (H, W, C') with C' <= C
        A view of ``image``: RGBA whose alpha is everywhere at full scale
        loses it, and RGB(A) whose colour channels are equal becomes gray.
    """
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        return image
    if image.shape[2] == 4:
        full = np.iinfo(image.dtype).max if image.dtype.kind in "ui" else 1.0
        if not np.all(image[:, :, 3] == full):
            return image
        image = image[:, :, :3]
    if equal_channels(image):
        return image[:, :, 0]
    return image


def pack_dataset(
    source: str | Path,
    folder: str | Path,
    *,
    jpeg_quality: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> PackedDataset:
    """Write a compact paired-layout copy of an annotated dataset (see the module docstring).

    Parameters
    ----------
    source
        A dataset in any layout :func:`nucseg.datasets.layouts.load_dataset` reads.
    folder
        The packed copy; written whole or not at all.
    jpeg_quality
        1-100: store 8-bit images as JPEG of this quality (no chroma
        subsampling); None: exact.
    overwrite
        Replace ``folder`` if it exists.
    progress
        Show a progress bar while decoding.

    Raises
    ------
    InputError
        ``source`` is not a dataset, ``folder`` exists without ``overwrite``,
        or ``jpeg_quality`` is outside 1-100.
    """
    import tifffile
    from PIL import Image

    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise InputError(None, f"JPEG quality must be 1 to 100, got {jpeg_quality}")
    source, folder = Path(source), Path(folder)
    if folder.exists() and not overwrite:
        raise InputError(folder, "exists (use --overwrite to replace it)")
    samples = load_dataset(source, progress=progress)
    lossy = 0
    with atomic_directory(folder) as work:
        (work / "images").mkdir()
        (work / "masks").mkdir()
        for sample in samples:
            image = compact_image(sample.image)
            if image.dtype != np.uint8:
                tifffile.imwrite(work / "images" / f"{sample.name}.tif", image, compression="zlib")
            elif jpeg_quality is not None:
                Image.fromarray(image).save(work / "images" / f"{sample.name}.jpg", quality=jpeg_quality, subsampling=0)
                lossy += 1
            else:
                Image.fromarray(image).save(work / "images" / f"{sample.name}.png", optimize=True)
            write_labels(work / "masks" / f"{sample.name}.tif", sample.labels)
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return PackedDataset(source, folder, len(samples), size, lossy)


def pack_datasets(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    jpeg_quality: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> list[PackedDataset]:
    """Pack several datasets under one root, each where the data root has it (a config's ``datasets`` paths).

    Parameters
    ----------
    paths
        Datasets as a training config names them: a folder, or a path under
        the data root such as ``"dsb2018/stage1_train"``
        (:func:`nucseg.datasets.mixture.resolve_dataset_path`).
    out
        The packed data root (``NUCSEG_DATA_DIR`` for a run on it). Each
        dataset goes to its path relative to the data root, or to its folder's
        name if it lies outside (:func:`nucseg.datasets.locations.dataset_name`).
    jpeg_quality, overwrite, progress
        As for :func:`pack_dataset`.

    Raises
    ------
    InputError
        A dataset is missing, two go to the same place, or as :func:`pack_dataset`.
    """
    from nucseg.datasets.locations import dataset_name
    from nucseg.datasets.mixture import resolve_dataset_path

    sources = [resolve_dataset_path(path) for path in paths]
    places = [dataset_name(source) for source in sources]
    for i, place in enumerate(places):
        if place in places[:i]:
            raise InputError(sources[i], f"would be packed to {place!r} beside another dataset of that name")
    out = Path(out)
    return [
        pack_dataset(source, out / place, jpeg_quality=jpeg_quality, overwrite=overwrite, progress=progress)
        for source, place in zip(sources, places)
    ]

"""The scratch group of a block-wise run, and the label image it becomes.

:func:`nucseg.batch.blockwise.segment_large` keeps each block's objects and
counts in a Zarr group beside the output (``.NAME.nucseg-blocks``), so that a
run killed part-way resumes with the blocks not yet done; the stitched labels
are assembled in it and then moved into place (Zarr) or streamed into a tiled
TIFF, atomically.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.inference.quality import QUALITY_FEATURES
from nucseg.io.atomic import atomic_write, OutputExistsError
from nucseg.io.images import labels_dtype
from nucseg.postprocess.measure import median_diameter_of_areas
from nucseg.scale.blocks import BLOCK_SIZE_MULTIPLE, BlockGrid

#: What a scratch group's settings say it is; a group of another format or version is started again.
SCRATCH_FORMAT = "nucseg-blockwise-scratch"
SCRATCH_VERSION = 2  # 2: per-block quality features


def open_scratch(scratch: Path, grid: BlockGrid, settings: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Open the scratch group of an interrupted run with the same settings, or start a new one.

    Returns the stored (kept, cut) counts per block (-1 for blocks not done)
    and the group's attributes.
    """
    import zarr

    if scratch.exists():
        try:
            group = zarr.open_group(str(scratch), mode="r")
            attributes = dict(group.attrs)
            if attributes.get("settings") == settings:
                return group["counts"][:], attributes
        except Exception:  # a scratch group from another version, or half-created: start again
            pass
        shutil.rmtree(scratch)
    group = zarr.open_group(str(scratch), mode="w")
    group.attrs.update({"settings": settings})
    rows, cols = grid.grid_shape
    group.create_array(
        "objects", shape=(rows, cols, *grid.slot_shape), chunks=(1, 1, *grid.slot_shape), dtype="uint32", fill_value=0
    )
    group.create_array("counts", shape=(rows, cols, 2), chunks=(1, 1, 2), dtype="int64", fill_value=-1)
    # per block: the nuclei it owns, then its quality features (NaN: the model gives no quality)
    width = 1 + len(QUALITY_FEATURES)
    group.create_array(
        "quality", shape=(rows, cols, width), chunks=(1, 1, width), dtype="float64", fill_value=float("nan")
    )
    return np.full((rows, cols, 2), -1, dtype=np.int64), dict(group.attrs)


def write_attributes(scratch: Path, values: dict[str, Any]) -> None:
    import zarr

    zarr.open_group(str(scratch), mode="r+").attrs.update(values)


def create_labels_array(scratch: Path, shape: tuple[int, int], block_size: int, nuclei: int) -> tuple[Path, int]:
    """The (empty) Zarr array the stitched labels are assembled in, and its chunk size.

    uint16, or uint32 above 65,535 nuclei (as :func:`nucseg.io.images.write_labels`);
    chunks of 512 pixels, or 256 for block sizes that 512 does not divide,
    so that every block writes whole chunks only.
    """
    import zarr

    chunk = 512 if block_size % 512 == 0 else BLOCK_SIZE_MULTIPLE
    path = scratch / "labels"
    if path.exists():
        shutil.rmtree(path)
    zarr.open_group(str(scratch), mode="r+").create_array(
        "labels", shape=shape, chunks=(chunk, chunk), dtype=labels_dtype(np.array([nuclei])), fill_value=0
    )
    return path, chunk


def median_diameter(assembled: Path, nuclei: int) -> float | None:
    """Median equivalent diameter of the stitched nuclei, pixels: their areas counted chunk row by chunk row."""
    import zarr

    labels = zarr.open_array(str(assembled), mode="r")
    areas = np.zeros(nuclei + 1, np.int64)
    for top in range(0, labels.shape[0], labels.chunks[0]):
        areas += np.bincount(labels[top : top + labels.chunks[0]].ravel(), minlength=nuclei + 1)
    return median_diameter_of_areas(areas[1:])


def move_into_place(source: Path, target: Path, *, overwrite: bool) -> None:
    """Rename the folder ``source`` to ``target``, replacing an existing ``target`` only if asked."""
    if target.exists():
        if not overwrite:
            raise OutputExistsError(target, "exists (use --overwrite to replace it)")
        old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(source, target)


def write_tiled_tiff(labels: Any, path: Path, *, tile: int, overwrite: bool) -> None:
    """Stream a 2-D Zarr label array into a tiled, zlib-compressed TIFF, one row of tiles at a time."""
    import tifffile

    height, width = labels.shape
    dtype = np.dtype(labels.dtype)

    def tiles():
        for top in range(0, height, tile):
            stripe = labels[top : top + tile, :]
            for left in range(0, width, tile):
                piece = np.zeros((tile, tile), dtype=dtype)
                part = stripe[:, left : left + tile]
                piece[: part.shape[0], : part.shape[1]] = part
                yield piece

    with atomic_write(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(
            tmp,
            tiles(),
            shape=(height, width),
            dtype=dtype,
            tile=(tile, tile),
            compression="zlib",
            photometric="minisblack",
            bigtiff=height * width * dtype.itemsize > 2**31,
        )

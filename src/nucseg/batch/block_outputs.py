"""What a block-wise run writes besides its label image: measurements, outlines, OME-Zarr, the overview.

Each is made block by block from the stitched labels (a Zarr array in the
scratch group, :mod:`nucseg.batch.scratch`) by tasks on the run's executor,
so no task holds more than a block's read region; the writers of
:mod:`nucseg.batch.writers` join the blocks' pieces into files.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg.batch.whole import measure_pixels
from nucseg.batch.writers import ngff_layout, NucleiPiece, OUTLINE_WRITERS, to_ngff_order
from nucseg.io.atomic import atomic_directory
from nucseg.io.images import write_png
from nucseg.io.lazy import LazyImage
from nucseg.io.ngff import create_ngff, NgffImage, write_region
from nucseg.postprocess.measure import NucleusTable, write_measurements_csv
from nucseg.scale.blocks import Block, BlockGrid, select_owned_objects
from nucseg.scale.executors import Executor
from nucseg.visualize import outline_overlay

#: Longest side of the overview overlay of a block-wise image, pixels.
OVERVIEW_SIDE = 4096


@dataclass(frozen=True)
class Intensities:
    """What measurements and the OME-Zarr output take their pixels from: every channel of a file, when one was
    chosen."""

    pixels: LazyImage | np.ndarray
    names: list[str] | None = None  # None: channels by position


def region_pixels(source: LazyImage | np.ndarray, region: tuple[slice, slice]) -> np.ndarray:
    """The pixels of ``region``: read from a lazy image, or already cut out by the driver."""
    return source.read(*region) if isinstance(source, LazyImage) else source


def task_input(source: LazyImage | np.ndarray, region: tuple[slice, slice]) -> LazyImage | np.ndarray:
    """What a task reads ``region`` from: the lazy image (a path), or the region's pixels of an array."""
    return source if isinstance(source, LazyImage) else source[region]


def write_nuclei_outputs(outputs: Mapping[str, Path], assembled: Path, measured: Intensities, grid: BlockGrid,
                         scratch: Path, *, pixel_size: float | None, image_path: Path | None, executor: Executor,
                         progress: bool, overwrite: bool, name: str) -> None:
    """The measurements CSV and the outlines of the stitched nuclei, each nucleus from the block that owns it."""
    writers = [key for key in OUTLINE_WRITERS if key in outputs]
    if "nuclei" not in outputs and not writers:
        return
    measure = "nuclei" in outputs or "geojson" in outputs  # GeoJSON features carry the measurements
    fragments = {key: scratch / f"fragments-{key}" for key in writers}
    for folder in fragments.values():
        folder.mkdir(exist_ok=True)
    doing = " and ".join(word for word, done in (("measuring", measure), ("outlining", writers)) if done)
    tables = executor.run(_nuclei_task, [(str(assembled), task_input(measured.pixels, block.read) if measure else None,
                                          block, pixel_size, image_path, measured.names, measure, "nuclei" in outputs,
                                          {key: str(folder) for key, folder in fragments.items()})
                                         for block in grid],
                          description=f"{doing} the nuclei of {name}", progress=progress)
    if "nuclei" in outputs:
        rows = sorted((row for table in tables for row in table.rows), key=lambda row: row["label"])
        write_measurements_csv(NucleusTable(tables[0].columns, rows), outputs["nuclei"], overwrite=overwrite)
    for key in writers:
        parts = ((fragments[key] / f"{block.row}_{block.col}").read_bytes() for block in grid)
        OUTLINE_WRITERS[key].write(outputs[key], parts, overwrite=overwrite)


def write_ome_zarr_blockwise(path: Path, assembled: Path, measured: Intensities, grid: BlockGrid, *,
                             pixel_size: float | None, executor: Executor, progress: bool, overwrite: bool,
                             name: str) -> None:
    """``X.ome.zarr``: every channel of the image and the stitched labels, copied block by block."""
    import zarr

    pixels = measured.pixels
    if isinstance(pixels, LazyImage):
        shape, dtype = pixels.shape + ((pixels.channels,) if pixels.channels else ()), pixels.dtype
    else:
        shape, dtype = pixels.shape, pixels.dtype
    layout = ngff_layout(shape, dtype, (), "", pixel_size=pixel_size, channel_names=measured.names)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        shutil.rmtree(tmp)  # the group is created in its place
        factors = create_ngff(tmp, layout, labels_dtype=zarr.open_array(str(assembled), mode="r").dtype, name=name,
                              block_size=grid.block_size)
        executor.run(_ome_zarr_task, [(str(assembled), task_input(pixels, block.core), block, str(tmp), factors,
                                       layout) for block in grid],
                     description=f"writing {path.name}", progress=progress)


def write_overview(path: Path, assembled: Path, source: LazyImage | np.ndarray, grid: BlockGrid, *,
                   executor: Executor, progress: bool, overwrite: bool, name: str, outline_width: int = 1) -> None:
    """The overview PNG: outlines on the image shrunk to at most :data:`OVERVIEW_SIDE` pixels on its longer side."""
    step = max(1, -(-max(grid.shape) // OVERVIEW_SIDE))
    pieces = executor.run(_overview_task, [(str(assembled), task_input(source, block.core), block, step)
                                           for block in grid],
                          description=f"drawing an overview of {name}", progress=progress)
    write_png(path, _overview(grid, pieces, step, outline_width=outline_width), overwrite=overwrite)


def _nuclei_task(labels_path: str, source: LazyImage | np.ndarray, block: Block, pixel_size: float | None,
                 image_path: Path | None, channel_names: list[str] | None, measure: bool, return_table: bool,
                 fragments: dict[str, str]) -> NucleusTable | None:
    """The stitched nuclei that ``block`` owns, whole: for each writer of outlines in ``fragments`` (key ->
    folder) the block's fragment, stored as ``folder/ROW_COL``, with their measurements in image coordinates
    (with ``measure``), which it returns with ``return_table`` (else None: only the fragments leave the task).

    ``source`` holds the channels to measure, named by ``channel_names`` (None: by position).
    """
    import zarr

    labels = np.asarray(zarr.open_array(labels_path, mode="r")[block.read])
    owned = select_owned_objects(labels, block)
    labels = np.where(owned.labels > 0, labels, 0)
    table = None
    if measure:
        pixels = region_pixels(source, block.read)
        table = measure_pixels(labels, pixels, image_path, channel_names=channel_names, pixel_size=pixel_size)
        top, left = block.read[0].start, block.read[1].start
        shifts = {"centroid_y_px": top, "min_row_px": top, "max_row_px": top,
                  "centroid_x_px": left, "min_col_px": left, "max_col_px": left}
        if pixel_size is not None:
            shifts.update({"centroid_y_um": top * pixel_size, "centroid_x_um": left * pixel_size})
        for row in table.rows:
            for column, shift in shifts.items():
                row[column] += shift
    piece = NucleiPiece(labels, (block.read[0].start, block.read[1].start), table)
    for key, folder in fragments.items():
        (Path(folder) / f"{block.row}_{block.col}").write_bytes(OUTLINE_WRITERS[key].fragment(piece))
    return table if return_table else None


def _ome_zarr_task(labels_path: str, source: LazyImage | np.ndarray, block: Block, group: str,
                   factors: list[int], layout: NgffImage) -> None:
    """Copy the image and the stitched labels of ``block``'s core into every level of the OME-Zarr group."""
    import zarr

    labels = np.asarray(zarr.open_array(labels_path, mode="r")[block.core])
    write_region(group, factors, *block.core, image=to_ngff_order(region_pixels(source, block.core), layout, ""),
                 labels=labels)


def _overview_task(labels_path: str, source: LazyImage | np.ndarray, block: Block,
                   step: int) -> tuple[np.ndarray, np.ndarray]:
    """The block's core, every ``step``-th pixel: (image, labels)."""
    import zarr

    rows, cols = block.core
    first_row, first_col = (-rows.start) % step, (-cols.start) % step  # stay on the global grid of the overview
    labels = np.asarray(zarr.open_array(labels_path, mode="r")[block.core])[first_row::step, first_col::step]
    return region_pixels(source, block.core)[first_row::step, first_col::step], labels


def _overview(grid: BlockGrid, pieces: list[tuple[np.ndarray, np.ndarray]], step: int, *,
              outline_width: int = 1) -> np.ndarray:
    """The outline overlay of the shrunk image, assembled from the blocks' pieces."""
    height, width = (-(-n // step) for n in grid.shape)
    sample = pieces[0][0]
    image = np.zeros((height, width) + sample.shape[2:], dtype=sample.dtype)
    labels = np.zeros((height, width), dtype=np.uint32)
    for block, (pixels, block_labels) in zip(grid, pieces):
        top, left = -(-block.core[0].start // step), -(-block.core[1].start // step)
        image[top:top + pixels.shape[0], left:left + pixels.shape[1]] = pixels
        labels[top:top + block_labels.shape[0], left:left + block_labels.shape[1]] = block_labels
    return outline_overlay(image, labels, width=outline_width)

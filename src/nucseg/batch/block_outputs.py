"""What a block-wise run writes besides its label image: measurements, outlines, OME-Zarr, the overview.

Each is made block by block from the stitched labels (a Zarr array in the
scratch group, :mod:`nucseg.batch.scratch`) by tasks on the run's executor,
so no task holds more than a block's read region; the writers of
:mod:`nucseg.batch.writers` (the same ones as of whole images) make each
block's fragment on the worker and join the fragments into files.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg.batch.whole import measure_pixels
from nucseg.batch.writers import (
    MEASUREMENTS_WRITER,
    ngff_layout,
    NucleiPiece,
    OUTLINE_WRITERS,
    OverlayPart,
    OverlayWriter,
    overview_step,
    to_ngff_order,
)
from nucseg.io.atomic import atomic_directory
from nucseg.io.opened import OpenedImage
from nucseg.io.ngff import create_ngff, NgffImage, write_region
from nucseg.postprocess.measure import NucleusTable
from nucseg.scale.blocks import Block, BlockGrid, select_owned_objects
from nucseg.scale.executors import Executor


@dataclass(frozen=True)
class Intensities:
    """What measurements and the OME-Zarr output take their pixels from: every channel of a file, when one was
    chosen."""

    pixels: OpenedImage | np.ndarray
    names: list[str] | None = None  # None: channels by position


def region_pixels(source: OpenedImage | np.ndarray, region: tuple[slice, slice]) -> np.ndarray:
    """The pixels of ``region``: read from a lazy image, or already cut out by the driver."""
    return source.read(*region) if isinstance(source, OpenedImage) else source


def task_input(source: OpenedImage | np.ndarray, region: tuple[slice, slice]) -> OpenedImage | np.ndarray:
    """What a task reads ``region`` from: the lazy image (a path), or the region's pixels of an array."""
    return source if isinstance(source, OpenedImage) else source[region]


def write_nuclei_outputs(
    outputs: Mapping[str, Path],
    assembled: Path,
    measured: Intensities,
    grid: BlockGrid,
    scratch: Path,
    *,
    pixel_size: float | None,
    image_path: Path | None,
    executor: Executor,
    progress: bool,
    overwrite: bool,
    name: str,
) -> None:
    """The measurements CSV and the outlines of the stitched nuclei, each nucleus from the block that owns it."""
    writers = [key for key in OUTLINE_WRITERS if key in outputs]
    if "nuclei" not in outputs and not writers:
        return
    measure = "nuclei" in outputs or "geojson" in outputs  # GeoJSON features carry the measurements
    fragments = {key: scratch / f"fragments-{key}" for key in writers}
    for folder in fragments.values():
        folder.mkdir(exist_ok=True)
    doing = " and ".join(word for word, done in (("measuring", measure), ("outlining", writers)) if done)
    tables = executor.run(
        _nuclei_task,
        [
            (
                str(assembled),
                task_input(measured.pixels, block.read) if measure else None,
                block,
                pixel_size,
                image_path,
                measured.names,
                measure,
                "nuclei" in outputs,
                {key: str(folder) for key, folder in fragments.items()},
            )
            for block in grid
        ],
        description=f"{doing} the nuclei of {name}",
        progress=progress,
    )
    if "nuclei" in outputs:
        MEASUREMENTS_WRITER.write(outputs["nuclei"], tables, overwrite=overwrite)
    for key in writers:
        parts = ((fragments[key] / f"{block.row}_{block.col}").read_bytes() for block in grid)
        OUTLINE_WRITERS[key].write(outputs[key], parts, overwrite=overwrite)


def write_ome_zarr_blockwise(
    path: Path,
    assembled: Path,
    measured: Intensities,
    grid: BlockGrid,
    *,
    pixel_size: float | None,
    executor: Executor,
    progress: bool,
    overwrite: bool,
    name: str,
) -> None:
    """``X.ome.zarr``: every channel of the image and the stitched labels, copied block by block."""
    import zarr

    pixels = measured.pixels
    if isinstance(pixels, OpenedImage):
        shape, dtype = pixels.shape + ((pixels.channels,) if pixels.channels else ()), pixels.dtype
    else:
        shape, dtype = pixels.shape, pixels.dtype
    layout = ngff_layout(shape, dtype, (), "", pixel_size=pixel_size, channel_names=measured.names)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        shutil.rmtree(tmp)  # the group is created in its place
        factors = create_ngff(
            tmp,
            layout,
            labels_dtype=zarr.open_array(str(assembled), mode="r").dtype,
            name=name,
            block_size=grid.block_size,
        )
        executor.run(
            _ome_zarr_task,
            [(str(assembled), task_input(pixels, block.core), block, str(tmp), factors, layout) for block in grid],
            description=f"writing {path.name}",
            progress=progress,
        )


def write_overview(
    path: Path,
    assembled: Path,
    source: OpenedImage | np.ndarray,
    grid: BlockGrid,
    *,
    executor: Executor,
    progress: bool,
    overwrite: bool,
    name: str,
    outline_width: int = 1,
) -> None:
    """The overview PNG (:class:`nucseg.batch.writers.OverlayWriter`): outlines on the image shrunk to at most
    :data:`nucseg.batch.writers.OVERVIEW_SIDE` pixels on its longer side, from every block's core."""
    writer = OverlayWriter(grid.shape, overview_step(grid.shape), outline_width)
    parts = executor.run(
        _overview_task,
        [(str(assembled), task_input(source, block.core), block, writer) for block in grid],
        description=f"drawing an overview of {name}",
        progress=progress,
    )
    writer.write(path, parts, overwrite=overwrite)


def _nuclei_task(
    labels_path: str,
    source: OpenedImage | np.ndarray,
    block: Block,
    pixel_size: float | None,
    image_path: Path | None,
    channel_names: list[str] | None,
    measure: bool,
    return_table: bool,
    fragments: dict[str, str],
) -> NucleusTable | None:
    """The stitched nuclei that ``block`` owns, whole: for each writer of outlines in ``fragments`` (key ->
    folder) the block's fragment, stored as ``folder/ROW_COL``, with their measurements in image coordinates
    (with ``measure``), whose measurements fragment it returns with ``return_table`` (else None: only the
    fragments leave the task).

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
        shifts = {
            "centroid_y_px": top,
            "min_row_px": top,
            "max_row_px": top,
            "centroid_x_px": left,
            "min_col_px": left,
            "max_col_px": left,
        }
        if pixel_size is not None:
            shifts.update({"centroid_y_um": top * pixel_size, "centroid_x_um": left * pixel_size})
        for row in table.rows:
            for column, shift in shifts.items():
                row[column] += shift
    piece = NucleiPiece(labels, (block.read[0].start, block.read[1].start), table)
    for key, folder in fragments.items():
        (Path(folder) / f"{block.row}_{block.col}").write_bytes(OUTLINE_WRITERS[key].fragment(piece))
    return MEASUREMENTS_WRITER.fragment(piece) if return_table else None


def _ome_zarr_task(
    labels_path: str, source: OpenedImage | np.ndarray, block: Block, group: str, factors: list[int], layout: NgffImage
) -> None:
    """Copy the image and the stitched labels of ``block``'s core into every level of the OME-Zarr group."""
    import zarr

    labels = np.asarray(zarr.open_array(labels_path, mode="r")[block.core])
    write_region(
        group, factors, *block.core, image=to_ngff_order(region_pixels(source, block.core), layout, ""), labels=labels
    )


def _overview_task(
    labels_path: str, source: OpenedImage | np.ndarray, block: Block, writer: OverlayWriter
) -> OverlayPart:
    """The overview's fragment of the block's core: every ``writer.step``-th pixel of its image and labels."""
    import zarr

    labels = np.asarray(zarr.open_array(labels_path, mode="r")[block.core])
    piece = NucleiPiece(labels, (block.core[0].start, block.core[1].start), pixels=region_pixels(source, block.core))
    return writer.fragment(piece)

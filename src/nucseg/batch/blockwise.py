"""Segmenting images larger than memory, block by block.

The image is read lazily (:mod:`nucseg.io.lazy`) and cut into blocks with
margins whose objects are stitched by ownership (:mod:`nucseg.scale.blocks`,
which states the rules).

The work runs in passes of independent tasks, on an executor
(:mod:`nucseg.scale.executors`: in this process or on Dask): *segment* (each
block to its kept objects, stored in a scratch Zarr group beside the output,
one chunk per block), *deduplicate* (each block against its earlier
neighbours), *assemble* (each output chunk from the kept objects of the
3 x 3 blocks around it), and on request *measure* (the nuclei each block
owns) and *overview* (every n-th pixel of each block's core). A task holds at most one read region of the image
and a few block-sized label arrays, so the memory per worker is bounded by
the block size, not by the image size. The scratch group makes a run
resumable: blocks segmented by a killed run are not segmented again.

Network models are normalized with intensity percentiles of the *whole*
image (from a strided sample of every block), as the in-memory path
normalizes an image, so that blocks of empty background are not stretched
into noise (:mod:`nucseg.batch.block_model`). The classical baseline adapts its threshold and nucleus size to
each block; prefer a trained model for slides with large empty areas.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.batch.block_model import (
    as_model,
    check_model,
    describe_model,
    global_intensity_range,
    one_scale_for_all_blocks,
    pooled_quality,
    segment_block_image,
)
from nucseg.batch.scratch import (
    create_labels_array,
    median_diameter,
    open_scratch,
    SCRATCH_FORMAT,
    SCRATCH_VERSION,
    write_attributes,
)
from nucseg.batch.block_outputs import (
    Intensities,
    region_pixels,
    task_input,
    write_nuclei_outputs,
    write_ome_zarr_blockwise,
    write_overview,
)
from nucseg.batch.whole import open_input, without_png_alpha
from nucseg.batch.writers import LABELS_WRITER, OUTPUTS
from nucseg.errors import InputError
from nucseg.inference.options import SegmentOptions
from nucseg.inference.quality import Quality, QUALITY_FEATURES
from nucseg.io.atomic import OutputExistsError
from nucseg.io.opened import OpenedImage
from nucseg.io.pixels import usable_pixels
from nucseg.scale.blocks import (
    Block,
    BlockGrid,
    check_block_settings,
    covered_objects,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_MARGIN,
    intersection,
    paste_objects,
    pieces_for_core,
    renumbering_tables,
    select_owned_objects,
)
from nucseg.scale.executors import Executor, InProcessExecutor, resolve_model


# --------------------------------------------------------------------- the tasks


def _segment_task(
    source: OpenedImage | np.ndarray,
    block: Block,
    scratch: str,
    model: Any,
    options: SegmentOptions,
    intensity_range: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[int, int]:
    """Segment one block, store its kept objects in the scratch group; return (kept, cut)."""
    import zarr

    pixels = region_pixels(source, block.read)
    model = resolve_model(model)
    result = segment_block_image(model, pixels, options, intensity_range)
    labels = np.asarray(result.labels)
    if labels.shape != block.read_shape:
        raise ValueError(f"the model returned labels of shape {labels.shape} for a block of shape {block.read_shape}")
    owned = select_owned_objects(labels, block)
    height, width = block.read_shape
    zarr.open_array(f"{scratch}/objects", mode="r+")[block.row, block.col, :height, :width] = owned.labels
    assessed = model.assess_quality(pixels, result)
    if assessed is not None:
        zarr.open_array(f"{scratch}/quality", mode="r+")[block.row, block.col] = [
            owned.count,
            *(assessed.features[name] for name in QUALITY_FEATURES),
        ]
    zarr.open_array(f"{scratch}/counts", mode="r+")[block.row, block.col] = [owned.count, owned.cut]
    return owned.count, owned.cut


def _stored_objects(objects: Any, block: Block, region: tuple[slice, slice] | None = None) -> np.ndarray:
    local = block.local(region if region is not None else block.read)
    return objects[block.row, block.col, local[0], local[1]]


def _deduplicate_task(scratch: str, grid: BlockGrid, block: Block) -> np.ndarray:
    """Keep flags (index = local object number) of one block's objects: False for duplicates."""
    import zarr

    objects = zarr.open_array(f"{scratch}/objects", mode="r")
    own = _stored_objects(objects, block)
    claimed = np.zeros(block.read_shape, dtype=bool)
    for other in grid.earlier_neighbours(block):
        region = intersection(block.read, other.read)
        claimed[block.local(region)] |= _stored_objects(objects, other, region) > 0
    return ~covered_objects(own, claimed)


def _assemble_task(
    scratch: str, output: str, grid: BlockGrid, block: Block, renumbering: dict[tuple[int, int], np.ndarray]
) -> tuple[int, int]:
    """Write one core block of the stitched labels; return (foreground pixels, conflicting pixels)."""
    import zarr

    objects = zarr.open_array(f"{scratch}/objects", mode="r")
    out = zarr.open_array(output, mode="r+")
    height, width = block.core[0].stop - block.core[0].start, block.core[1].stop - block.core[1].start
    labels = np.zeros((height, width), dtype=out.dtype)
    conflicts = paste_objects(
        labels, pieces_for_core(grid, block, lambda other, region: _stored_objects(objects, other, region), renumbering)
    )
    out[block.core] = labels
    return int(np.count_nonzero(labels)), conflicts


# ---------------------------------------------------------------------- driver


@dataclass
class BlockwiseReport:
    """Result of :func:`segment_large`.

    Attributes
    ----------
    output
        The label image written (Zarr folder or TIFF file).
    shape
        (H, W) of the image.
    grid_shape
        Block rows and columns.
    nuclei
        Number of nuclei (labels run 1..nuclei).
    mean_area
        Mean nucleus area in pixels (0.0 without nuclei).
    cut
        Objects lost because they were larger than the margin allows (a
        larger margin keeps them).
    duplicates
        Objects that two blocks both kept, removed from the later block.
    conflicting_pixels
        Pixels claimed by two kept objects (given to the earlier block's).
    resumed_blocks
        Blocks whose results a previous, interrupted run had stored.
    seconds
        Wall time.
    scale
        Resize factor every block ran at (automatic sizing estimates it once
        per image, see :func:`segment_large`); None for a model without a
        network.
    median_diameter
        Median equivalent diameter of the nuclei, pixels (None without nuclei).
    quality
        The image's quality estimate, from its blocks' features
        (:func:`nucseg.inference.quality.pooled_features`); None for a model
        that gives none.
    """

    output: Path
    shape: tuple[int, int]
    grid_shape: tuple[int, int]
    nuclei: int = 0
    mean_area: float = 0.0
    cut: int = 0
    duplicates: int = 0
    conflicting_pixels: int = 0
    resumed_blocks: int = 0
    seconds: float = 0.0
    scale: float | None = None
    median_diameter: float | None = None
    quality: Quality | None = None


def segment_large(
    image: str | Path | OpenedImage | np.ndarray,
    output_path: str | Path,
    *,
    model: Any = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    margin: int = DEFAULT_MARGIN,
    executor: Executor | None = None,
    overwrite: bool = False,
    measurements_path: str | Path | None = None,
    overlay_path: str | Path | None = None,
    outputs: Mapping[str, str | Path] | None = None,
    pixel_size: float | None = None,
    progress: bool = False,
    outline_width: int = 1,
    options: SegmentOptions | None = None,
    **segment_options: Any,
) -> BlockwiseReport:
    """Segment an image block by block and write one stitched label image.

    See the module documentation for how blocks are stitched.

    Parameters
    ----------
    image
        A TIFF file or Zarr store, read lazily (see
        :func:`~nucseg.io.opened.open_image`); a PNG or JPEG file, read whole;
        the image file opened (its own axes, channel and level then stand:
        ``channel``, ``channel_axis``, ``axes`` and ``level`` are not applied
        again); or an in-memory array of shape (H, W) or (H, W, C).
    output_path
        ``.zarr``: a Zarr array (uint16, or uint32 above 65,535 nuclei; chunks
        of 512 or 256 pixels). ``.tif``/``.tiff``: a tiled, zlib-compressed
        TIFF (BigTIFF above 2 GiB) readable by :func:`nucseg.io.images.read_labels`,
        written tile row by tile row. Written atomically.
    model
        A :class:`~nucseg.inference.model.Model`, a model name or folder (loaded once per
        worker), or a callable ``block image -> labels``. None: the default model.
    block_size, margin
        Side of the core blocks, and the context read around each, in pixels
        (see :class:`BlockGrid`). A block's read region is at most
        ``block_size + 2 * margin`` pixels on a side; that bounds a task's memory.
    executor
        Where the block tasks run (:mod:`nucseg.scale.executors`); None: in
        this process. Dask workers must see ``image``, the model and the
        output folder at the same paths.
    overwrite
        Replace an existing output.
    measurements_path
        Also write the per-nucleus measurements of
        :func:`nucseg.postprocess.measure.measure_nuclei` here (CSV), measured
        block by block: each nucleus in the block that owns it, whole.
    overlay_path
        Also write an overview PNG of the outlines, the image shrunk to at
        most :data:`nucseg.batch.writers.OVERVIEW_SIDE` pixels on its longer side.
    outputs
        More outputs by their key in :data:`nucseg.batch.writers.OUTPUTS`
        -> path: ``geojson`` and ``rois`` (outlines, each nucleus from the
        block that owns it, joined from per-block fragments), ``ome_zarr``
        (the image and its labels, copied block by block), and ``nuclei``
        and ``overlay`` as ``measurements_path`` and ``overlay_path``.
    pixel_size
        Microns per pixel for the measurements (and a diameter given in microns).
    progress
        Progress bars on stderr.
    outline_width
        Width of the overview's outlines, pixels (:func:`nucseg.visualize.outline_overlay`).
    options, **segment_options
        The segment options (:class:`~nucseg.inference.options.SegmentOptions`;
        keywords replace its values): ``channel``, ``channel_axis``, ``axes``
        and ``level`` for reading the image, the others passed to
        :meth:`~nucseg.inference.model.Model.segment` for every block.
        Automatic sizing (``diameter="auto"``, the default of network models)
        estimates one resize factor on the centre block
        (:meth:`~nucseg.inference.model.NetworkModel.estimate_scale`) and runs every block
        at it, so that the blocks agree.

    Returns
    -------
    BlockwiseReport

    Raises
    ------
    InputError
        Unreadable input, unsupported output suffix, or an existing output
        without ``overwrite``.
    ModelError
        The model cannot be loaded, or resizes every image to a fixed size.
    """
    import zarr

    started = time.perf_counter()
    options = SegmentOptions.from_keywords(options, **segment_options).in_pixels(pixel_size, _file_of(image))
    output_path = Path(output_path)
    suffix = output_path.suffix.lower()
    if suffix not in (".zarr", ".tif", ".tiff"):
        raise InputError(output_path, "block-wise output must end in .zarr, .tif or .tiff")
    outputs = {key: Path(path) for key, path in (outputs or {}).items()}
    outputs.update(
        {
            key: Path(path)
            for key, path in (("nuclei", measurements_path), ("overlay", overlay_path))
            if path is not None
        }
    )
    unknown = sorted(set(outputs) - set(OUTPUTS) - {"labels"})
    if unknown:
        raise InputError(None, f"unknown output(s) {', '.join(unknown)}")
    for path in (output_path, *outputs.values()):
        if path.exists() and not overwrite:
            raise OutputExistsError(path, "exists (use --overwrite to replace it)")
    try:
        check_block_settings(block_size, margin)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    if isinstance(image, np.ndarray) and (options.channel is not None or options.file_options()):
        raise InputError(
            None,
            "channel, channel_axis, axes and level describe files; of an array, pass the channel that "
            "shows the nuclei, (H, W), or an (H, W, C) colour image",
        )
    source, description, measured = _open_source(image, options)
    local_model = as_model(model)
    executor = InProcessExecutor() if executor is None else executor
    check_model(local_model, options)
    shape = source.shape if isinstance(source, OpenedImage) else tuple(source.shape[:2])
    grid = BlockGrid(shape, block_size, margin)

    scratch = output_path.parent / f".{output_path.name}.nucseg-blocks"
    settings = {
        "format": SCRATCH_FORMAT,
        "version": SCRATCH_VERSION,
        "input": description,
        "shape": list(shape),
        "block_size": block_size,
        "margin": margin,
        "model": describe_model(local_model),
        # the channel is in the input's description; the rest is the JSON earlier versions stored
        "options": {key: value for key, value in options.to_dict().items() if key != "channel"},
    }
    output_path.parent.mkdir(parents=True, exist_ok=True)
    done, attributes = open_scratch(scratch, grid, settings)
    task_model = executor.share_model(local_model)
    intensity_range = None
    if local_model.normalization is not None:
        if "intensity_range" in attributes:
            intensity_range = tuple(np.asarray(a, dtype=np.float64) for a in attributes["intensity_range"])
        else:
            intensity_range = global_intensity_range(source, grid, local_model, executor, progress)
            write_attributes(scratch, {"intensity_range": [a.tolist() for a in intensity_range]})
    named = output_path if isinstance(image, np.ndarray) else _file_of(image)  # the file the user named
    name = named.name
    block_options, scale = one_scale_for_all_blocks(
        local_model, source, grid, options.for_planes(), intensity_range, scratch, attributes, named
    )

    todo = [block for block in grid if done[block.row, block.col, 0] < 0]
    executor.run(
        _segment_task,
        [
            (task_input(source, block.read), block, str(scratch), task_model, block_options, intensity_range)
            for block in todo
        ],
        description=f"segmenting blocks of {name}",
        progress=progress,
    )
    keeps = executor.run(
        _deduplicate_task,
        [(str(scratch), grid, block) for block in grid],
        description=f"finding duplicates in {name}",
        progress=progress,
    )
    renumbering = renumbering_tables(grid, {block.index: flags for block, flags in zip(grid, keeps)})
    nuclei = int(sum(int(flags[1:].sum()) for flags in keeps))
    assembled, _ = create_labels_array(scratch, shape, block_size, nuclei)
    totals = executor.run(
        _assemble_task,
        [
            (
                str(scratch),
                str(assembled),
                grid,
                block,
                {other.index: renumbering[other.index] for other in grid.neighbours(block)},
            )
            for block in grid
        ],
        description=f"stitching {name}",
        progress=progress,
    )
    write_nuclei_outputs(
        outputs,
        assembled,
        measured,
        grid,
        scratch,
        pixel_size=pixel_size,
        image_path=_file_of(image),
        executor=executor,
        progress=progress,
        overwrite=overwrite,
        name=name,
    )
    if "ome_zarr" in outputs:
        write_ome_zarr_blockwise(
            outputs["ome_zarr"],
            assembled,
            measured,
            grid,
            pixel_size=pixel_size,
            executor=executor,
            progress=progress,
            overwrite=overwrite,
            name=named.stem,
        )
    if "overlay" in outputs:
        write_overview(
            outputs["overlay"],
            assembled,
            source,
            grid,
            executor=executor,
            progress=progress,
            overwrite=overwrite,
            name=name,
            outline_width=outline_width,
        )
    diameter = median_diameter(assembled, nuclei)
    zarr.open_array(str(assembled), mode="r+").attrs.update(
        {
            "nucseg": {
                "input": description,
                "model": describe_model(local_model),
                "nuclei": nuclei,
                "block_size": block_size,
                "margin": margin,
            }
        }
    )
    LABELS_WRITER.write(output_path, assembled, overwrite=overwrite)
    counts = zarr.open_array(str(scratch / "counts"), mode="r")[:]
    quality = pooled_quality(local_model, zarr.open_array(str(scratch / "quality"), mode="r")[:])
    shutil.rmtree(scratch, ignore_errors=True)
    foreground = sum(total[0] for total in totals)
    return BlockwiseReport(
        output=output_path,
        shape=shape,
        grid_shape=grid.grid_shape,
        nuclei=nuclei,
        mean_area=foreground / nuclei if nuclei else 0.0,
        cut=int(counts[..., 1].sum()),
        duplicates=int(counts[..., 0].sum()) - nuclei,
        conflicting_pixels=sum(total[1] for total in totals),
        resumed_blocks=len(grid) - len(todo),
        seconds=time.perf_counter() - started,
        scale=scale,
        median_diameter=diameter,
        quality=quality,
    )


def _file_of(image: str | Path | OpenedImage | np.ndarray) -> Path | None:
    """The file ``image`` is read from, or None for an array."""
    if isinstance(image, np.ndarray):
        return None
    return image.path if isinstance(image, OpenedImage) else Path(image)


def _open_source(
    image: str | Path | OpenedImage | np.ndarray, options: SegmentOptions
) -> tuple[OpenedImage | np.ndarray, str, Intensities]:
    """The image to read blocks from, a description of it for the scratch group's settings, and what to
    measure intensities on."""
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
            raise InputError(None, f"image must have shape (H, W) or (H, W, C), got {image.shape}")
        image = usable_pixels(image)
        return image, f"array {image.shape} {image.dtype} {_array_digest(image)}", Intensities(image)
    opened = image if isinstance(image, OpenedImage) else open_input(Path(image), options)
    path = opened.path
    if opened.lazy:  # blocks read their regions
        opened.check_one_plane()
        opened.check_channel_chosen()
        source: OpenedImage | np.ndarray = opened
        measured = Intensities(opened.every_channel(), list(opened.channel_names) or None)
    else:  # a PNG or JPEG, decoded whole
        stack = opened.read_stack()
        pixels, names = without_png_alpha(*stack.intensities(), path)
        source, measured = stack.planes[0], Intensities(pixels[0], None if names is None else list(names))
    stat = path.stat()
    return source, f"{path.resolve()} {stat.st_size} {stat.st_mtime_ns} channel {options.channel}", measured


def _array_digest(image: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(image[:: max(1, image.shape[0] // 64)]).tobytes()).hexdigest()[:16]

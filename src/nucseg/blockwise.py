"""Segmenting images larger than memory, block by block.

The image is read lazily (a TIFF through ``tifffile``'s Zarr interface, or a
Zarr array) and cut into a grid of square *core* blocks of ``block_size``
pixels. Each block is segmented together with a ``margin`` of surrounding
pixels (its *read region*), so that the model sees the context of every
nucleus near the block's edges. The labels of all blocks are then stitched
into one label image in which every nucleus has exactly one label.

Which block keeps which object (after StarDist's ``big`` module; the rule
differs in detail):

1. An object that touches an edge of the read region lying inside the image
   is cut by the block's view of the image, and dropped: a neighbouring
   block sees it whole.
2. Of the remaining objects, a block keeps those whose bounding-box centre
   lies in its core. Cores tile the image, so every object is kept by
   exactly one block, provided that block sees it whole, which holds for
   every object less than about ``2 * margin`` pixels across (and that the
   blocks that see it segment it alike).
3. Blocks can still disagree slightly about an object near a core border
   (one pixel of its outline decides where its centre lies), so two blocks
   may both keep it. Such duplicates are removed: an object more than half
   covered by objects that earlier blocks (in row-major order) kept is
   dropped. Where two kept objects still share a pixel, the earlier block's
   object gets it.

Labels are made globally unique by numbering the kept objects of each block
after those of all earlier blocks, so they run 1..N over the whole image.

The work runs in three passes of independent tasks, on a
``dask.distributed`` client or in this process: *segment* (each block to
its kept objects, stored in a scratch Zarr group beside the output, one
chunk per block), *deduplicate* (each block against its earlier
neighbours), *assemble* (each output chunk from the kept objects of the
3 x 3 blocks around it). A task holds at most one read region of the image
and a few block-sized label arrays, so the memory per worker is bounded by
the block size, not by the image size. The scratch group makes a run
resumable: blocks segmented by a killed run are not segmented again.

Network models are normalized with intensity percentiles of the *whole*
image (from a strided sample of every block), as the in-memory path
normalizes an image, so that blocks of empty background are not stretched
into noise. The classical baseline adapts its threshold and nucleus size to
each block; prefer a trained model for slides with large empty areas.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nucseg.errors import InputError, ModelError

if TYPE_CHECKING:
    from dask.distributed import Client

#: Default side of the square core blocks, in pixels.
DEFAULT_BLOCK_SIZE = 2048
#: Default margin read around every block, in pixels.
DEFAULT_MARGIN = 128
#: Block sizes must be multiples of this (the output's chunk and TIFF tile grid).
BLOCK_SIZE_MULTIPLE = 256
#: An object more than this fraction covered by objects of earlier blocks is a duplicate.
DUPLICATE_COVERAGE = 0.5
#: Pixels sampled over the whole image for its intensity percentiles (network models).
NORMALIZATION_SAMPLES = 4_000_000

_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
_SCRATCH_FORMAT = "nucseg-blockwise-scratch"
_SCRATCH_VERSION = 1


# --------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Block:
    """One block of a :class:`BlockGrid`.

    Attributes
    ----------
    row, col
        Position in the grid.
    core
        (rows, cols) slices of the image this block owns objects in.
    read
        (rows, cols) slices of the image the block is segmented on: the core
        plus the margin, clipped to the image.
    open_edges
        (top, bottom, left, right): True where that edge of the read region
        lies inside the image (objects touching it are cut).
    """

    row: int
    col: int
    core: tuple[slice, slice]
    read: tuple[slice, slice]
    open_edges: tuple[bool, bool, bool, bool]

    @property
    def index(self) -> tuple[int, int]:
        return self.row, self.col

    @property
    def read_shape(self) -> tuple[int, int]:
        return self.read[0].stop - self.read[0].start, self.read[1].stop - self.read[1].start

    def local(self, region: tuple[slice, slice]) -> tuple[slice, slice]:
        """``region`` (image coordinates, inside the read region) relative to the read region."""
        top, left = self.read[0].start, self.read[1].start
        return (slice(region[0].start - top, region[0].stop - top),
                slice(region[1].start - left, region[1].stop - left))


@dataclass(frozen=True)
class BlockGrid:
    """Square core blocks covering an image, each read with a margin around it.

    Parameters
    ----------
    shape
        (H, W) of the image in pixels.
    block_size
        Side of the core blocks in pixels, a multiple of
        :data:`BLOCK_SIZE_MULTIPLE`; the last row and column of blocks may
        be smaller.
    margin
        Pixels read around every core, 1 to ``block_size``. Objects up to
        about ``2 * margin`` pixels across are stitched correctly; a network
        also needs context, so choose it larger than the biggest nucleus.
    """

    shape: tuple[int, int]
    block_size: int
    margin: int

    def __post_init__(self) -> None:
        check_block_settings(self.block_size, self.margin)
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"shape must be (H, W) with positive sizes, got {self.shape}")

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of block rows and columns."""
        return tuple(-(-n // self.block_size) for n in self.shape)  # type: ignore[return-value]

    @property
    def slot_shape(self) -> tuple[int, int]:
        """The largest read region: (H, W) of the stored block results."""
        return tuple(min(n, self.block_size + 2 * self.margin) for n in self.shape)  # type: ignore[return-value]

    def __len__(self) -> int:
        rows, cols = self.grid_shape
        return rows * cols

    def __iter__(self):
        rows, cols = self.grid_shape
        return (self.block(row, col) for row in range(rows) for col in range(cols))

    def block(self, row: int, col: int) -> Block:
        """The block at grid position (row, col)."""
        rows, cols = self.grid_shape
        if not (0 <= row < rows and 0 <= col < cols):
            raise IndexError(f"block ({row}, {col}) outside the {rows} x {cols} grid")
        height, width = self.shape
        size, margin = self.block_size, self.margin
        core = (slice(row * size, min((row + 1) * size, height)), slice(col * size, min((col + 1) * size, width)))
        read = (slice(max(core[0].start - margin, 0), min(core[0].stop + margin, height)),
                slice(max(core[1].start - margin, 0), min(core[1].stop + margin, width)))
        open_edges = (read[0].start > 0, read[0].stop < height, read[1].start > 0, read[1].stop < width)
        return Block(row, col, core, read, open_edges)

    def neighbours(self, block: Block) -> list[Block]:
        """The blocks of the 3 x 3 neighbourhood of ``block``, itself included, in row-major order.

        Because the margin is at most the block size, these are the only
        blocks whose read regions meet the core of ``block``.
        """
        rows, cols = self.grid_shape
        return [self.block(r, c) for r in range(max(block.row - 1, 0), min(block.row + 2, rows))
                for c in range(max(block.col - 1, 0), min(block.col + 2, cols))]

    def earlier_neighbours(self, block: Block) -> list[Block]:
        """The neighbours of ``block`` that come before it in row-major order."""
        return [other for other in self.neighbours(block) if other.index < block.index]


def check_block_settings(block_size: int, margin: int) -> None:
    """Raise ``ValueError`` unless ``block_size`` and ``margin`` are valid (see :class:`BlockGrid`)."""
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
            or block_size < BLOCK_SIZE_MULTIPLE or block_size % BLOCK_SIZE_MULTIPLE:
        raise ValueError(f"block size must be a positive multiple of {BLOCK_SIZE_MULTIPLE} pixels, got {block_size}")
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or not 1 <= margin <= block_size:
        raise ValueError(f"margin must be 1 to the block size ({block_size}) pixels, got {margin}")


def _intersection(a: tuple[slice, slice], b: tuple[slice, slice]) -> tuple[slice, slice] | None:
    rows = slice(max(a[0].start, b[0].start), min(a[0].stop, b[0].stop))
    cols = slice(max(a[1].start, b[1].start), min(a[1].stop, b[1].stop))
    return (rows, cols) if rows.start < rows.stop and cols.start < cols.stop else None


# -------------------------------------------------------------------- ownership


@dataclass(frozen=True)
class OwnedObjects:
    """The objects of one block's segmentation that the block keeps.

    Attributes
    ----------
    labels : ndarray of uint32, shape of the block's read region
        Kept objects numbered 1..count (in the order of their labels in the
        block's segmentation), 0 elsewhere.
    count
        Number of kept objects.
    cut
        Objects whose bounding-box centre lies in the core but that reach an
        inner edge of the read region: too large for the margin, so lost.
    """

    labels: np.ndarray
    count: int
    cut: int


def select_owned_objects(labels: np.ndarray, block: Block) -> OwnedObjects:
    """Keep the objects of a block's segmentation that the block owns (rules 1 and 2 of the module).

    Parameters
    ----------
    labels : ndarray of int, shape ``block.read_shape``
        Instance labels of the block's read region (0 background).
    block
        The block, for its core and which read-region edges are cut.

    Returns
    -------
    OwnedObjects
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    if labels.shape != block.read_shape:
        raise ValueError(f"labels of shape {labels.shape} do not match the block's read region {block.read_shape}")
    height, width = labels.shape
    core_rows, core_cols = block.local(block.core)
    open_top, open_bottom, open_left, open_right = block.open_edges
    keep = np.zeros(int(labels.max(initial=0)) + 1, dtype=bool)
    cut = 0
    for label, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        top, bottom, left, right = box[0].start, box[0].stop, box[1].start, box[1].stop
        centre_row, centre_col = (top + bottom - 1) // 2, (left + right - 1) // 2
        in_core = core_rows.start <= centre_row < core_rows.stop and core_cols.start <= centre_col < core_cols.stop
        touches_cut_edge = ((open_top and top == 0) or (open_bottom and bottom == height)
                            or (open_left and left == 0) or (open_right and right == width))
        if touches_cut_edge:
            cut += int(in_core)
        elif in_core:
            keep[label] = True
    renumber = np.zeros(keep.size, dtype=np.uint32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return OwnedObjects(renumber[labels], int(keep.sum()), cut)


def covered_objects(labels: np.ndarray, claimed: np.ndarray, *, coverage: float = DUPLICATE_COVERAGE) -> np.ndarray:
    """Which objects are mostly covered by pixels that other objects already claimed.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Objects numbered 1..n.
    claimed : ndarray of bool, shape (H, W)
        Pixels that objects of earlier blocks hold.
    coverage
        Fraction of an object's area above which it counts as covered.

    Returns
    -------
    ndarray of bool, shape (n + 1,)
        True for covered objects (index 0, the background, is False).
    """
    n = int(labels.max(initial=0))
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    overlap = np.bincount(labels[claimed].ravel(), minlength=n + 1)
    covered = overlap > coverage * np.maximum(areas, 1)
    covered[0] = False
    return covered


def paste_objects(target: np.ndarray, pieces: Sequence[tuple[tuple[slice, slice], np.ndarray]]) -> int:
    """Paste label pieces into ``target`` in order; a pixel keeps the first label it gets.

    Parameters
    ----------
    target : ndarray of int, shape (h, w)
        Filled in place where it is 0.
    pieces
        (region of ``target``, labels of that region's shape, 0 where they hold nothing).

    Returns
    -------
    int
        Pixels that a later piece also claimed (conflicts).
    """
    conflicts = 0
    for region, piece in pieces:
        window = target[region]
        claims = piece > 0
        taken = window != 0
        conflicts += int(np.count_nonzero(claims & taken))
        write = claims & ~taken
        window[write] = piece[write]
    return conflicts


def _pieces_for_core(grid: BlockGrid, block: Block,
                     read_objects: Callable[[Block, tuple[slice, slice]], np.ndarray],
                     renumbering: dict[tuple[int, int], np.ndarray]) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """The kept objects of the blocks around ``block`` that fall in its core, with global labels.

    ``read_objects(other, region)`` gives the stored objects of ``other`` in
    ``region`` (image coordinates).
    """
    top, left = block.core[0].start, block.core[1].start
    pieces = []
    for other in grid.neighbours(block):
        region = _intersection(block.core, other.read)
        if region is not None:
            local = (slice(region[0].start - top, region[0].stop - top),
                     slice(region[1].start - left, region[1].stop - left))
            pieces.append((local, renumbering[other.index][read_objects(other, region)]))
    return pieces


def segment_blocks_in_memory(
    image: np.ndarray,
    segment: Callable[[np.ndarray], np.ndarray],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    margin: int = DEFAULT_MARGIN,
) -> np.ndarray:
    """Block-wise segmentation of an in-memory image, stitched (the algorithm without storage or tasks).

    Meant for checking the stitching rules and for images that fit in
    memory but not through ``segment`` at once; :func:`segment_large` runs
    the same steps on images read lazily, with bounded memory.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    segment
        Block image -> instance labels of the same (H, W).
    block_size, margin
        See :class:`BlockGrid`.

    Returns
    -------
    labels : ndarray of uint32, shape (H, W)
        Nuclei numbered 1..N in block order.
    """
    grid = BlockGrid(tuple(image.shape[:2]), block_size, margin)
    owned = {block.index: select_owned_objects(segment(image[block.read]), block) for block in grid}
    keep = {}
    for block in grid:
        claimed = np.zeros(block.read_shape, dtype=bool)
        for other in grid.earlier_neighbours(block):
            region = _intersection(block.read, other.read)
            claimed[block.local(region)] |= owned[other.index].labels[other.local(region)] > 0
        keep[block.index] = ~covered_objects(owned[block.index].labels, claimed)
    renumbering = _renumbering(grid, keep)
    labels = np.zeros(image.shape[:2], dtype=np.uint32)
    for block in grid:
        paste_objects(labels[block.core], _pieces_for_core(
            grid, block, lambda other, region: owned[other.index].labels[other.local(region)], renumbering))
    return labels


def _renumbering(grid: BlockGrid, keep: dict[tuple[int, int], np.ndarray]) -> dict[tuple[int, int], np.ndarray]:
    """Per block, local object number -> global label (0 for dropped objects), consecutive in block order."""
    renumbering = {}
    offset = 0
    for block in grid:
        kept = keep[block.index].copy()
        kept[0] = False
        table = np.zeros(kept.size, dtype=np.uint32)
        n = int(kept.sum())
        table[kept] = np.arange(offset + 1, offset + n + 1, dtype=np.uint32)
        renumbering[block.index] = table
        offset += n
    return renumbering


# ------------------------------------------------------------------ lazy images


@dataclass(frozen=True)
class LazyImage:
    """A TIFF or Zarr image read region by region.

    Get one from :func:`open_image`. Picklable (it holds the path, not an
    open file), so tasks on other machines open the file themselves.

    Attributes
    ----------
    path
        TIFF file or Zarr store.
    shape
        (H, W) in pixels.
    channels
        Number of channels, or 0 for a single-channel image.
    dtype
        Pixel dtype.
    """

    path: Path
    shape: tuple[int, int]
    channels: int
    dtype: np.dtype
    _kind: str
    _array_path: str
    _axes: tuple[str, ...]  # per stored axis: "y", "x", "c", or "" for a length-1 axis that is dropped

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """Pixels of ``image[rows, cols]``: shape (h, w) or (h, w, C), native dtype."""
        selection = tuple({"y": rows, "x": cols, "c": slice(None)}.get(axis, 0) for axis in self._axes)
        kept = [axis for axis in self._axes if axis]
        array = self._open()
        try:
            data = np.asarray(array[selection])
        finally:
            self._close(array)
        order = [kept.index(axis) for axis in ("y", "x", "c") if axis in kept]
        return np.ascontiguousarray(np.transpose(data, order))

    def _open(self):
        import zarr

        if self._kind == "tiff":
            import tifffile

            store = tifffile.imread(self.path, aszarr=True, series=0, level=0)
            return zarr.open_array(store, mode="r")
        return zarr.open_array(str(self.path / self._array_path) if self._array_path else str(self.path), mode="r")

    def _close(self, array) -> None:
        store = getattr(array, "store", None)
        close = getattr(store, "close", None)
        if self._kind == "tiff" and close is not None:
            close()


def is_zarr(path: str | Path) -> bool:
    """True if ``path`` is a Zarr store (a folder with Zarr metadata)."""
    path = Path(path)
    return path.is_dir() and any((path / marker).is_file() for marker in _ZARR_MARKERS)


def open_image(path: str | Path, *, channel_axis: int | None = None) -> LazyImage:
    """Open a TIFF or Zarr image for reading region by region.

    TIFFs follow the rules of :func:`nucseg.io.read_image` (length-1 axes
    dropped; the channel axis declared by the file or given). For fast
    block reads the TIFF should be tiled (as microscopy slides and
    pyramidal OME-TIFFs are); a TIFF stored in one strip is decoded whole
    for every block. Zarr: an array, or an OME-Zarr image group (its
    full-resolution level); a 3-D array needs ``channel_axis`` unless
    OME-Zarr metadata names its channel axis.

    Parameters
    ----------
    path
        ``.tif``/``.tiff`` file or Zarr folder.
    channel_axis
        Channel axis of a 3-D image whose file does not declare it, counted
        after length-1 axes are dropped.

    Raises
    ------
    InputError
        Missing or unreadable file, not 2-D with optional channels, or an
        undeclared channel axis.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if is_zarr(path):
        shape, dtype, axes, array_path, declared = _zarr_layout(path)
        kind = "zarr"
    elif path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        shape, dtype, axes, declared = _tiff_layout(path)
        array_path, kind = "", "tiff"
    else:
        raise InputError(path, "block-wise reading needs a TIFF file or a Zarr store")
    roles = _axis_roles(path, shape, axes, declared, channel_axis)
    kept_shape = [n for n, role in zip(shape, roles) if role]
    by_role = dict(zip([role for role in roles if role], kept_shape))
    return LazyImage(path, (by_role["y"], by_role["x"]), by_role.get("c", 0), np.dtype(dtype), kind, array_path,
                     tuple(roles))


def _tiff_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, str, str]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), series.dtype, series.axes, "SC"
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(path, f"cannot read TIFF ({_first_line(exc)})") from None


def _zarr_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, str, str, str]:
    """Shape, dtype, axis letters, array path inside the store, and which letters declare channels."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputError(path, f"cannot open Zarr store ({_first_line(exc)})") from None
    if hasattr(node, "shape"):
        return tuple(node.shape), node.dtype, "Q" * len(node.shape), "", ""
    attributes = dict(node.attrs)
    multiscales = attributes.get("multiscales") or attributes.get("ome", {}).get("multiscales")
    if not multiscales:
        arrays = sorted(name for name, _ in node.arrays())
        raise InputError(path, "Zarr group without OME-Zarr multiscales metadata; give the path of one of its "
                               f"arrays ({', '.join(arrays) or 'it has none'})")
    try:
        dataset = multiscales[0]["datasets"][0]["path"]
        names = [axis["name"] if isinstance(axis, dict) else str(axis) for axis in multiscales[0]["axes"]]
        array = node[dataset]
    except (KeyError, IndexError, TypeError) as exc:
        raise InputError(path, f"malformed OME-Zarr multiscales metadata ({_first_line(exc)})") from None
    letters = "".join({"y": "Y", "x": "X", "c": "C"}.get(name.lower(), "Q") for name in names)
    if len(letters) != array.ndim:
        raise InputError(path, f"OME-Zarr names {len(letters)} axes for an array of {array.ndim} dimensions")
    return tuple(array.shape), array.dtype, letters, dataset, "C"


def _axis_roles(path: Path, shape: tuple[int, ...], axes: str, declared_letters: str,
                channel_axis: int | None) -> list[str]:
    """Per stored axis: "y", "x", "c" or "" (dropped length-1 axis), as :func:`nucseg.io.read_image` decides."""
    kept = [i for i, (n, axis) in enumerate(zip(shape, axes)) if n > 1 or axis in "YX"]
    described = f"shape {tuple(shape)} (axes {axes})" if set(axes) != {"Q"} else f"shape {tuple(shape)}"
    if len(kept) not in (2, 3):
        raise InputError(path, f"image of {described}: only 2-D images with one channel axis are supported")
    roles = [""] * len(shape)
    if len(kept) == 2:
        roles[kept[0]], roles[kept[1]] = "y", "x"
        return roles
    declared = [position for position, i in enumerate(kept) if axes[i] in declared_letters]
    declared_axis = declared[0] if len(declared) == 1 else None
    if channel_axis is None:
        if declared_axis is None:
            raise InputError(path, f"multi-channel image of {described} does not declare its channel axis; "
                                   "pass channel_axis (CLI: --channel-axis)")
        channel_axis = declared_axis
    if not -3 <= channel_axis < 3:
        raise InputError(path, f"channel axis {channel_axis} is out of range for {described}")
    channel_axis %= 3
    if declared_axis is not None and channel_axis != declared_axis:
        raise InputError(path, f"channel axis {channel_axis} contradicts the file, whose channels are on axis "
                               f"{declared_axis} of {described}")
    spatial = [i for position, i in enumerate(kept) if position != channel_axis]
    roles[kept[channel_axis]] = "c"
    roles[spatial[0]], roles[spatial[1]] = "y", "x"
    return roles


def image_shape(path: str | Path, *, channel_axis: int | None = None) -> tuple[int, int]:
    """(H, W) of an image file or Zarr store, read from its header only.

    Raises
    ------
    InputError
        As :func:`open_image`, or an unreadable PNG/JPEG.
    """
    path = Path(path)
    if is_zarr(path) or path.suffix.lower() in (".tif", ".tiff"):
        return open_image(path, channel_axis=channel_axis).shape
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(path, f"cannot read image header ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ------------------------------------------------------------------ the segmenter


def _uses_global_normalization(model: Any) -> bool:
    from nucseg.api import NetworkModel

    return isinstance(model, NetworkModel)


def _segment_block_image(model: Any, image: np.ndarray, options: dict[str, Any],
                         intensity_range: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Instance labels of one block's read region."""
    from nucseg.api import Model

    if intensity_range is not None:
        return model.segment(image, intensity_range=intensity_range, **options)
    if isinstance(model, Model):
        return model.segment(image, **options)
    return model(image)


# --------------------------------------------------------------------- the tasks


def _pixels(source: LazyImage | np.ndarray, region: tuple[slice, slice]) -> np.ndarray:
    """The pixels of ``region``: read from a lazy image, or already cut out by the driver."""
    return source.read(*region) if isinstance(source, LazyImage) else source


def _task_input(source: LazyImage | np.ndarray, region: tuple[slice, slice]) -> LazyImage | np.ndarray:
    """What a task reads ``region`` from: the lazy image (a path), or the region's pixels of an array."""
    return source if isinstance(source, LazyImage) else source[region]


def _sample_task(source: LazyImage | np.ndarray, block: Block, step: int, channels: int) -> np.ndarray:
    """A strided sample of the block's core: (n, channels) float32."""
    from nucseg.preprocess import to_channels

    pixels = _pixels(source, block.core)
    return to_channels(pixels[::step, ::step], channels).reshape(-1, channels).astype(np.float32)


def _segment_task(source: LazyImage | np.ndarray, block: Block, scratch: str, model: Any,
                  options: dict[str, Any], intensity_range: tuple[np.ndarray, np.ndarray] | None) -> tuple[int, int]:
    """Segment one block, store its kept objects in the scratch group; return (kept, cut)."""
    import zarr

    from nucseg.distributed import resolve_model

    pixels = _pixels(source, block.read)
    labels = _segment_block_image(resolve_model(model), pixels, options, intensity_range)
    labels = np.asarray(labels)
    if labels.shape != block.read_shape:
        raise ValueError(f"the model returned labels of shape {labels.shape} for a block of "
                         f"shape {block.read_shape}")
    owned = select_owned_objects(labels, block)
    height, width = block.read_shape
    zarr.open_array(f"{scratch}/objects", mode="r+")[block.row, block.col, :height, :width] = owned.labels
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
        region = _intersection(block.read, other.read)
        claimed[block.local(region)] |= _stored_objects(objects, other, region) > 0
    return ~covered_objects(own, claimed)


def _assemble_task(scratch: str, output: str, grid: BlockGrid, block: Block,
                   renumbering: dict[tuple[int, int], np.ndarray]) -> tuple[int, int]:
    """Write one core block of the stitched labels; return (foreground pixels, conflicting pixels)."""
    import zarr

    objects = zarr.open_array(f"{scratch}/objects", mode="r")
    out = zarr.open_array(output, mode="r+")
    height, width = block.core[0].stop - block.core[0].start, block.core[1].stop - block.core[1].start
    labels = np.zeros((height, width), dtype=out.dtype)
    conflicts = paste_objects(labels, _pieces_for_core(
        grid, block, lambda other, region: _stored_objects(objects, other, region), renumbering))
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


def segment_large(
    image: str | Path | np.ndarray,
    output_path: str | Path,
    *,
    model: Any = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    margin: int = DEFAULT_MARGIN,
    client: Client | None = None,
    overwrite: bool = False,
    channel_axis: int | None = None,
    progress: bool = False,
    **segment_options: Any,
) -> BlockwiseReport:
    """Segment an image block by block and write one stitched label image.

    See the module documentation for how blocks are stitched.

    Parameters
    ----------
    image
        A TIFF file or Zarr store, read lazily (see :func:`open_image`); a
        PNG or JPEG file, read whole; or an in-memory array of shape (H, W)
        or (H, W, C).
    output_path
        ``.zarr``: a Zarr array (uint16, or uint32 above 65,535 nuclei; chunks
        of 512 or 256 pixels). ``.tif``/``.tiff``: a tiled, zlib-compressed
        TIFF (BigTIFF above 2 GiB) readable by :func:`nucseg.io.read_labels`,
        written tile row by tile row. Written atomically.
    model
        A :class:`~nucseg.api.Model`, a model name or folder (loaded once per
        worker), or a callable ``block image -> labels``. None: the default model.
    block_size, margin
        Side of the core blocks, and the context read around each, in pixels
        (see :class:`BlockGrid`). A block's read region is at most
        ``block_size + 2 * margin`` pixels on a side; that bounds a task's memory.
    client
        A ``dask.distributed`` client to run the blocks on; None runs them in
        this process. Workers must see ``image``, the model and the output
        folder at the same paths.
    overwrite
        Replace an existing output.
    channel_axis
        Channel axis of 3-D images that do not declare it.
    progress
        Progress bars on stderr.
    **segment_options
        Passed to :meth:`~nucseg.api.Model.segment` (``tile_size``, ``overlap``, ...).
        Automatic sizing (``diameter="auto"``, the default of network models)
        estimates one resize factor on the centre block
        (:meth:`~nucseg.api.NetworkModel.estimate_scale`) and runs every block
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

    from nucseg.distributed import model_reference as model_reference_for
    from nucseg.distributed import run_tasks, scatter_model
    from nucseg.io import OutputExistsError

    started = time.perf_counter()
    output_path = Path(output_path)
    suffix = output_path.suffix.lower()
    if suffix not in (".zarr", ".tif", ".tiff"):
        raise InputError(output_path, "block-wise output must end in .zarr, .tif or .tiff")
    if output_path.exists() and not overwrite:
        raise OutputExistsError(output_path, "exists (use --overwrite to replace it)")
    try:
        check_block_settings(block_size, margin)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    source, description = _open_source(image, channel_axis)
    local_model, model_reference = model_reference_for(model)
    _check_model(local_model, segment_options)
    shape = source.shape if isinstance(source, LazyImage) else tuple(source.shape[:2])
    grid = BlockGrid(shape, block_size, margin)

    scratch = output_path.parent / f".{output_path.name}.nucseg-blocks"
    settings = {"format": _SCRATCH_FORMAT, "version": _SCRATCH_VERSION, "input": description,
                "shape": list(shape), "block_size": block_size, "margin": margin,
                "model": _describe_model(model_reference), "options": _jsonable(segment_options)}
    output_path.parent.mkdir(parents=True, exist_ok=True)
    done, attributes = _open_scratch(scratch, grid, settings)
    if client is None:
        task_model = local_model
    else:
        task_model = model_reference if isinstance(model_reference, str) else scatter_model(client, model_reference)
    intensity_range = None
    if _uses_global_normalization(local_model):
        if "intensity_range" in attributes:
            intensity_range = tuple(np.asarray(a, dtype=np.float64) for a in attributes["intensity_range"])
        else:
            intensity_range = _global_intensity_range(source, grid, local_model, client, progress)
            _write_attributes(scratch, {"intensity_range": [a.tolist() for a in intensity_range]})
    segment_options, scale = _one_scale_for_all_blocks(local_model, source, grid, segment_options, intensity_range,
                                                       scratch, attributes)

    name = output_path.name
    todo = [block for block in grid if done[block.row, block.col, 0] < 0]
    run_tasks(client, _segment_task,
              [(_task_input(source, block.read), block, str(scratch), task_model, segment_options, intensity_range)
               for block in todo],
              description=f"segmenting blocks of {name}", progress=progress, key_prefix="nucseg-segment-block")
    keeps = run_tasks(client, _deduplicate_task, [(str(scratch), grid, block) for block in grid],
                      description=f"finding duplicates in {name}", progress=progress,
                      key_prefix="nucseg-deduplicate-block")
    renumbering = _renumbering(grid, {block.index: flags for block, flags in zip(grid, keeps)})
    nuclei = int(sum(int(flags[1:].sum()) for flags in keeps))
    assembled, chunk = _create_labels_array(scratch, shape, block_size, nuclei)
    totals = run_tasks(client, _assemble_task,
                       [(str(scratch), str(assembled), grid, block,
                         {other.index: renumbering[other.index] for other in grid.neighbours(block)})
                        for block in grid],
                       description=f"stitching {name}", progress=progress, key_prefix="nucseg-assemble-block")
    zarr.open_array(str(assembled), mode="r+").attrs.update(
        {"nucseg": {"input": description, "model": _describe_model(model_reference), "nuclei": nuclei,
                    "block_size": block_size, "margin": margin}})
    if suffix == ".zarr":
        _move_into_place(assembled, output_path, overwrite=overwrite)
    else:
        _write_tiled_tiff(zarr.open_array(str(assembled), mode="r"), output_path, tile=chunk, overwrite=overwrite)
    counts = zarr.open_array(str(scratch / "counts"), mode="r")[:]
    shutil.rmtree(scratch, ignore_errors=True)
    foreground = sum(total[0] for total in totals)
    return BlockwiseReport(
        output=output_path, shape=shape, grid_shape=grid.grid_shape, nuclei=nuclei,
        mean_area=foreground / nuclei if nuclei else 0.0, cut=int(counts[..., 1].sum()),
        duplicates=int(counts[..., 0].sum()) - nuclei, conflicting_pixels=sum(total[1] for total in totals),
        resumed_blocks=len(grid) - len(todo), seconds=time.perf_counter() - started, scale=scale)


def _one_scale_for_all_blocks(model: Any, source: LazyImage | np.ndarray, grid: BlockGrid,
                              options: dict[str, Any], intensity_range: tuple[np.ndarray, np.ndarray] | None,
                              scratch: Path, attributes: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """The segment options with automatic sizing replaced by one factor, and that factor.

    The factor is estimated on the centre block and stored in the scratch
    group, so that a resumed run keeps it. Returns ``(options, None)`` for
    models without a network.
    """
    from nucseg.api import AUTO_DIAMETER, NetworkModel

    if not isinstance(model, NetworkModel):
        return options, None
    factor = model.resolve_scale(options.get("scale"), options.get("diameter", AUTO_DIAMETER))
    if factor is not None:
        return options, factor
    fixed = {key: value for key, value in options.items() if key != "diameter"}
    if "scale" in attributes:
        factor = float(attributes["scale"])
    else:
        rows, cols = grid.grid_shape
        centre = grid.block(rows // 2, cols // 2)
        pixels = _pixels(_task_input(source, centre.read), centre.read)
        factor = model.estimate_scale(pixels, intensity_range=intensity_range, **fixed)
        _write_attributes(scratch, {"scale": factor})
    return {**fixed, "scale": factor}, factor


def _create_labels_array(scratch: Path, shape: tuple[int, int], block_size: int, nuclei: int) -> tuple[Path, int]:
    """The (empty) Zarr array the stitched labels are assembled in, and its chunk size.

    uint16, or uint32 above 65,535 nuclei (as :func:`nucseg.io.write_labels`);
    chunks of 512 pixels, or 256 for block sizes that 512 does not divide,
    so that every block writes whole chunks only.
    """
    import zarr

    from nucseg.io import labels_dtype

    chunk = 512 if block_size % 512 == 0 else BLOCK_SIZE_MULTIPLE
    path = scratch / "labels"
    if path.exists():
        shutil.rmtree(path)
    zarr.open_group(str(scratch), mode="r+").create_array(
        "labels", shape=shape, chunks=(chunk, chunk), dtype=labels_dtype(np.array([nuclei])), fill_value=0)
    return path, chunk


def _open_source(image: str | Path | np.ndarray, channel_axis: int | None) -> tuple[LazyImage | np.ndarray, str]:
    """The image to read blocks from, and a description of it for the scratch group's settings."""
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
            raise InputError(None, f"image must have shape (H, W) or (H, W, C), got {image.shape}")
        return image, f"array {image.shape} {image.dtype} {_array_digest(image)}"
    path = Path(image)
    if is_zarr(path) or path.suffix.lower() in (".tif", ".tiff"):
        source: LazyImage | np.ndarray = open_image(path, channel_axis=channel_axis)
    else:
        from nucseg.io import read_image

        source = read_image(path, channel_axis=channel_axis)
    stat = path.stat()
    return source, f"{path.resolve()} {stat.st_size} {stat.st_mtime_ns}"


def _array_digest(image: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(image[:: max(1, image.shape[0] // 64)]).tobytes()).hexdigest()[:16]


def _check_model(model: Any, options: dict[str, Any]) -> None:
    from nucseg.api import Model, NetworkModel
    from nucseg.errors import NucsegError

    if isinstance(model, NetworkModel) and model.config.resize_to is not None:
        raise ModelError(model.path, f"the model resizes every image to {model.config.resize_to} x "
                                     f"{model.config.resize_to} pixels; block-wise segmentation needs a model that "
                                     "runs at native resolution")
    if isinstance(model, Model):
        try:
            model.check_options(**options)
        except ValueError as exc:
            raise NucsegError(str(exc)) from None
    elif options:
        raise TypeError(f"segment options ({', '.join(sorted(options))}) need a Model, not a plain callable")


def _describe_model(reference: Any) -> str:
    if isinstance(reference, str):
        path = Path(reference)
        config = path / "config.json"
        return f"{reference} {config.stat().st_mtime_ns}" if config.is_file() else reference
    return repr(reference)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _open_scratch(scratch: Path, grid: BlockGrid, settings: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
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
    group.create_array("objects", shape=(rows, cols, *grid.slot_shape), chunks=(1, 1, *grid.slot_shape),
                       dtype="uint32", fill_value=0)
    group.create_array("counts", shape=(rows, cols, 2), chunks=(1, 1, 2), dtype="int64", fill_value=-1)
    return np.full((rows, cols, 2), -1, dtype=np.int64), dict(group.attrs)


def _write_attributes(scratch: Path, values: dict[str, Any]) -> None:
    import zarr

    zarr.open_group(str(scratch), mode="r+").attrs.update(values)


def _global_intensity_range(source: LazyImage | np.ndarray, grid: BlockGrid, model: Any, client: Client | None,
                            progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel intensities at the model's normalization percentiles, over the whole image."""
    from nucseg.distributed import run_tasks

    normalization = model.config.normalization
    height, width = grid.shape
    step = max(1, int(np.sqrt(height * width / NORMALIZATION_SAMPLES)))
    arguments = [(_task_input(source, block.core), block, step, normalization.channels) for block in grid]
    samples = run_tasks(client, _sample_task, arguments, description="sampling intensities", progress=progress,
                        key_prefix="nucseg-sample-block")
    pooled = np.concatenate(samples, axis=0)
    low, high = np.percentile(pooled, [normalization.low_percentile, normalization.high_percentile], axis=0)
    return low, high


def _move_into_place(source: Path, target: Path, *, overwrite: bool) -> None:
    """Rename the folder ``source`` to ``target``, replacing an existing ``target`` only if asked."""
    from nucseg.io import OutputExistsError

    if target.exists():
        if not overwrite:
            raise OutputExistsError(target, "exists (use --overwrite to replace it)")
        old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(source, target)


def _write_tiled_tiff(labels: Any, path: Path, *, tile: int, overwrite: bool) -> None:
    """Stream a 2-D Zarr label array into a tiled, zlib-compressed TIFF, one row of tiles at a time."""
    import tifffile

    from nucseg.io import atomic_write

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
        tifffile.imwrite(tmp, tiles(), shape=(height, width), dtype=dtype, tile=(tile, tile), compression="zlib",
                         photometric="minisblack", bigtiff=height * width * dtype.itemsize > 2**31)

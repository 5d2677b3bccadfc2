"""Block geometry and stitching for images segmented block by block.

The image is cut into a grid of square *core* blocks of ``block_size``
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
This module is pure geometry on numpy arrays; :mod:`nucseg.batch.blockwise`
drives it over files and executors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


#: Peak memory of segmenting a whole image in one piece, bytes per pixel (the image, its normalized copy, the
#: blended probabilities, a resized copy for automatic sizing, the watershed): an 8000 x 8000 RGB image peaked
#: at 7 GB, 4096 x 4096 at 1.6 GB (ONNX Runtime). A block of 2048 pixels with its margins needs about 1.5 GB.
WHOLE_IMAGE_BYTES_PER_PIXEL = 110


def default_max_memory() -> int:
    """The default memory budget of one whole-image run, bytes: a quarter of this machine's memory (8 GB if unknown)."""
    import os

    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        total = 32 * 2**30
    return int(total // 4)


#: What a Z-stack or time series holds per pixel of each plane while its planes are segmented one by one: the
#: stack as read (up to 3 channels of 16 bits) and its labels (int32, per plane and stacked).
STACK_BYTES_PER_PIXEL = 14


def whole_image_bytes(height: int, width: int, *, planes: int = 1) -> int:
    """Estimated peak memory of a whole-image run of a ``height`` x ``width`` image, bytes.

    A stack of ``planes`` planes is segmented plane by plane: one plane's
    run, plus the whole stack and its labels (:data:`STACK_BYTES_PER_PIXEL`).
    """
    held = planes * height * width * STACK_BYTES_PER_PIXEL if planes > 1 else 0
    return height * width * WHOLE_IMAGE_BYTES_PER_PIXEL + held


def needs_blocks(height: int, width: int, max_memory: float) -> bool:
    """Whether a whole-image run of a ``height`` x ``width`` image would need more than ``max_memory`` bytes."""
    return whole_image_bytes(height, width) > max_memory


#: Default side of the square core blocks, in pixels.
DEFAULT_BLOCK_SIZE = 2048


#: Default margin read around every block, in pixels.
DEFAULT_MARGIN = 128


#: Block sizes must be multiples of this (the output's chunk and TIFF tile grid).
BLOCK_SIZE_MULTIPLE = 256


#: An object more than this fraction covered by objects of earlier blocks is a duplicate.
DUPLICATE_COVERAGE = 0.5


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
        return (
            slice(region[0].start - top, region[0].stop - top),
            slice(region[1].start - left, region[1].stop - left),
        )


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
        read = (
            slice(max(core[0].start - margin, 0), min(core[0].stop + margin, height)),
            slice(max(core[1].start - margin, 0), min(core[1].stop + margin, width)),
        )
        open_edges = (read[0].start > 0, read[0].stop < height, read[1].start > 0, read[1].stop < width)
        return Block(row, col, core, read, open_edges)

    def neighbours(self, block: Block) -> list[Block]:
        """The blocks of the 3 x 3 neighbourhood of ``block``, itself included, in row-major order.

        Because the margin is at most the block size, these are the only
        blocks whose read regions meet the core of ``block``.
        """
        rows, cols = self.grid_shape
        return [
            self.block(r, c)
            for r in range(max(block.row - 1, 0), min(block.row + 2, rows))
            for c in range(max(block.col - 1, 0), min(block.col + 2, cols))
        ]

    def earlier_neighbours(self, block: Block) -> list[Block]:
        """The neighbours of ``block`` that come before it in row-major order."""
        return [other for other in self.neighbours(block) if other.index < block.index]


def check_block_settings(block_size: int, margin: int) -> None:
    """Raise ``ValueError`` unless ``block_size`` and ``margin`` are valid (see :class:`BlockGrid`)."""
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, (int, np.integer))
        or block_size < BLOCK_SIZE_MULTIPLE
        or block_size % BLOCK_SIZE_MULTIPLE
    ):
        raise ValueError(f"block size must be a positive multiple of {BLOCK_SIZE_MULTIPLE} pixels, got {block_size}")
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or not 1 <= margin <= block_size:
        raise ValueError(f"margin must be 1 to the block size ({block_size}) pixels, got {margin}")


def intersection(a: tuple[slice, slice], b: tuple[slice, slice]) -> tuple[slice, slice] | None:
    rows = slice(max(a[0].start, b[0].start), min(a[0].stop, b[0].stop))
    cols = slice(max(a[1].start, b[1].start), min(a[1].stop, b[1].stop))
    return (rows, cols) if rows.start < rows.stop and cols.start < cols.stop else None


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
        touches_cut_edge = (
            (open_top and top == 0)
            or (open_bottom and bottom == height)
            or (open_left and left == 0)
            or (open_right and right == width)
        )
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


def pieces_for_core(
    grid: BlockGrid,
    block: Block,
    read_objects: Callable[[Block, tuple[slice, slice]], np.ndarray],
    renumbering: dict[tuple[int, int], np.ndarray],
) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """The kept objects of the blocks around ``block`` that fall in its core, with global labels.

    ``read_objects(other, region)`` gives the stored objects of ``other`` in
    ``region`` (image coordinates).
    """
    top, left = block.core[0].start, block.core[1].start
    pieces = []
    for other in grid.neighbours(block):
        region = intersection(block.core, other.read)
        if region is not None:
            local = (
                slice(region[0].start - top, region[0].stop - top),
                slice(region[1].start - left, region[1].stop - left),
            )
            pieces.append((local, renumbering[other.index][read_objects(other, region)]))
    return pieces


def renumbering_tables(grid: BlockGrid, keep: dict[tuple[int, int], np.ndarray]) -> dict[tuple[int, int], np.ndarray]:
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

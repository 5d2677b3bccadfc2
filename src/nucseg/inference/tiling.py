"""Running a network over images of any size.

An image is cut into overlapping square tiles, the network runs on a few
tiles at a time, and the class probabilities of every tile are blended into
one ``(C, H, W)`` float32 map with smooth weights. The weight of a tile falls
off (as a raised cosine, never reaching 0) over the ``overlap`` pixels next
to its edges, where the network sees the least context, so seams between
tiles do not show; dividing by the summed weights makes the blend exact
wherever only one tile covers a pixel. Memory stays bounded: only the
accumulated map and one small batch of tiles exist at any time.

The network runs through a :data:`nucseg.inference.runners.Runner` (ONNX
Runtime or torch); this module needs neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nucseg.inference.runners import Runner
from nucseg.models import SIZE_DIVISOR
from nucseg.preprocess.resize import resize_channels

#: Default side of the square tiles, in pixels (a multiple of SIZE_DIVISOR). One
#: 768-pixel tile per call ran 12-14 % faster on 2 CPU cores than two 512-pixel
#: tiles per call (benchmarks/bench_tiling.py): fewer tiles, less time on overlaps.
DEFAULT_TILE_SIZE = 768
#: Default overlap of neighbouring tiles, in pixels.
DEFAULT_OVERLAP = 64
#: Default number of tiles per network call.
DEFAULT_BATCH_SIZE = 1


def tile_starts(length: int, tile: int, overlap: int) -> np.ndarray:
    """Start offsets of tiles covering ``length`` pixels with at least ``overlap`` overlap.

    Tiles are spread evenly from 0 to ``length - tile``, so the grid is
    symmetric and every pair of neighbours overlaps by ``overlap`` or more.

    Parameters
    ----------
    length
        Image size along one axis; at least ``tile``.
    tile, overlap
        Tile size and minimum overlap, in pixels, with ``overlap < tile``.

    Returns
    -------
    ndarray of int64, shape (n_tiles,)
    """
    if length <= tile:
        return np.zeros(1, dtype=np.int64)
    n_tiles = int(np.ceil((length - overlap) / (tile - overlap)))
    return np.round(np.linspace(0, length - tile, n_tiles)).astype(np.int64)


def blend_window(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights of a tile: 1 inside, a raised-cosine ramp over ``overlap`` pixels at each end.

    The ramp is sampled at pixel centres, so the weights never reach 0
    (the smallest, at the tile edge, is ``sin(pi / (4 * overlap)) ** 2``).

    Returns
    -------
    ndarray of float32, shape (size,), values in (0, 1]
    """
    window = np.ones(size, dtype=np.float32)
    ramp_length = min(overlap, size // 2)
    if ramp_length > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(ramp_length) + 0.5) / ramp_length) ** 2
        window[:ramp_length] = ramp
        window[size - ramp_length :] = ramp[::-1]
    return window


def axis_tile_size(length: int, tile: int, overlap: int) -> int:
    """Tile side along one axis: at most ``tile``, as small as the tile count allows.

    With ``n`` tiles needed to cover ``length`` at ``tile`` pixels and at
    least ``overlap`` overlap, the tiles shrink to the smallest multiple of
    :data:`SIZE_DIVISOR` that still covers the axis with ``n`` tiles, so no
    work is wasted on extra overlap (a 2048-pixel axis takes three 736-pixel
    tiles rather than three 1024-pixel ones). An axis shorter than ``tile``
    gets one tile: ``length`` rounded up to the divisor (the image is padded).
    """
    n_tiles = 1 if length <= tile else int(np.ceil((length - overlap) / (tile - overlap)))
    needed = -(-(length + (n_tiles - 1) * overlap) // n_tiles)
    return min(tile, -(-needed // SIZE_DIVISOR) * SIZE_DIVISOR)


def check_tiling(tile_size: int, overlap: int, batch_size: int) -> None:
    if tile_size < SIZE_DIVISOR or tile_size % SIZE_DIVISOR:
        raise ValueError(f"tile_size must be a positive multiple of {SIZE_DIVISOR}, got {tile_size}")
    if not 0 <= overlap <= tile_size // 2:
        raise ValueError(f"overlap must be in [0, tile_size / 2] = [0, {tile_size // 2}], got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def _run_batch(runner: Runner, batch: np.ndarray, tta: bool) -> np.ndarray:
    if not tta:
        return runner(batch)
    total = None
    for axes in _FLIPS:
        flipped = np.flip(batch, axes) if axes else batch
        out = runner(flipped)
        out = np.flip(out, axes) if axes else out
        total = out.copy() if total is None else np.add(total, out, out=total)
    return total / np.float32(len(_FLIPS))


def predict_tiled(
    runner: Runner,
    image: np.ndarray,
    *,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    tta: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Class probabilities of a prepared image of any size, tile by tile.

    Parameters
    ----------
    runner
        Backend: float32 ``(N, C_in, h, w)`` -> probabilities ``(N, C, h, w)``
        (:class:`TorchRunner`, :class:`OnnxRunner`).
    image : ndarray of float32, shape (H, W, C_in)
        Normalized network input (see :func:`nucseg.preprocess.normalize.prepare_image`).
    tile_size
        Side of the square tiles in pixels, a multiple of
        :data:`nucseg.models.SIZE_DIVISOR`. An axis shorter than a tile is
        reflect-padded to the next multiple of the divisor instead.
    overlap
        Minimum overlap of neighbouring tiles in pixels, at most ``tile_size / 2``.
    batch_size
        Tiles per network call.
    tta
        Test-time augmentation: average the probabilities over the 4 flips
        (none, horizontal, vertical, both); 4x slower.
    on_tile
        Called as ``on_tile(tiles done, tiles in all)`` after every network
        call, for progress reports on large images.

    Returns
    -------
    ndarray of float32, shape (C, H, W)
        Softmax probabilities, blended over tiles.
    """
    check_tiling(tile_size, overlap, batch_size)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or min(image.shape) < 1:
        raise ValueError(f"image must have shape (H, W, C) with non-zero sizes, got {image.shape}")
    height, width = image.shape[:2]
    tile_h, tile_w = axis_tile_size(height, tile_size, overlap), axis_tile_size(width, tile_size, overlap)
    pad_h, pad_w = max(tile_h - height, 0), max(tile_w - width, 0)
    if pad_h or pad_w:
        image = np.pad(
            image, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)), mode="reflect"
        )
    padded_h, padded_w = image.shape[:2]
    weight_tile = np.outer(blend_window(tile_h, overlap), blend_window(tile_w, overlap))
    corners = [(y, x) for y in tile_starts(padded_h, tile_h, overlap) for x in tile_starts(padded_w, tile_w, overlap)]

    accumulated = None
    weights = np.zeros((padded_h, padded_w), dtype=np.float32)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        batch = np.stack([image[y : y + tile_h, x : x + tile_w].transpose(2, 0, 1) for y, x in chunk])
        probabilities = _run_batch(runner, batch, tta)
        if accumulated is None:
            accumulated = np.zeros((probabilities.shape[1], padded_h, padded_w), dtype=np.float32)
        for (y, x), tile_probabilities in zip(chunk, probabilities):
            accumulated[:, y : y + tile_h, x : x + tile_w] += tile_probabilities * weight_tile
            weights[y : y + tile_h, x : x + tile_w] += weight_tile
        if on_tile is not None:
            on_tile(first + len(chunk), len(corners))
    accumulated /= weights
    top, left = pad_h // 2, pad_w // 2
    if pad_h or pad_w:
        accumulated = np.ascontiguousarray(accumulated[:, top : top + height, left : left + width])
    return accumulated


def predict_rescaled(
    runner: Runner,
    image: np.ndarray,
    *,
    scale: float = 1.0,
    resize_to: int | None = None,
    **tiling: Any,
) -> np.ndarray:
    """:func:`predict_tiled` on a resized image, with probabilities resized back to the image size.

    Parameters
    ----------
    runner
        Backend, see :func:`predict_tiled`.
    image : ndarray of float32, shape (H, W, C_in)
        Normalized network input.
    scale
        Resize factor applied before the network: below 1 for nuclei larger
        than in the training images, above 1 for smaller ones.
    resize_to
        Resize to this square side (pixels) instead, as a model trained on
        resized images needs; excludes ``scale``.
    **tiling
        ``tile_size``, ``overlap``, ``batch_size``, ``tta``, ``on_tile`` of :func:`predict_tiled`.

    Returns
    -------
    ndarray of float32, shape (C, H, W)
    """
    height, width = image.shape[:2]
    if resize_to is not None:
        if scale != 1.0:
            raise ValueError("scale cannot be combined with resize_to (the model resizes every image itself)")
        shape = (int(resize_to), int(resize_to))
    else:
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale}")
        shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    if shape == (height, width):
        return predict_tiled(runner, image, **tiling)
    resized = np.ascontiguousarray(resize_channels(image.transpose(2, 0, 1), shape).transpose(1, 2, 0))
    return resize_channels(predict_tiled(runner, resized, **tiling), (height, width))

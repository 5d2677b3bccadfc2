"""Corrections of a label image that napari's label tools lack: merge the nuclei under a stroke, split one along a line.

Pure functions on label arrays (0 background, 1..N nuclei) and polylines of
``(row, column)`` points in pixel coordinates; they return a new label image
and say in words what they did, or why they did nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.morphology import disk

#: Pieces of a cut nucleus smaller than this fraction of it are slivers the line grazed, not a nucleus of their own.
MIN_PIECE_FRACTION = 0.05


@dataclass(frozen=True)
class LabelEdit:
    """The result of a correction.

    Attributes
    ----------
    labels : ndarray of int, shape (H, W)
        The corrected label image (a new array; the input is left as it was).
    changed
        The labels that were merged into, split, or created; empty when nothing changed.
    message
        What was done, or why nothing was, in one line.
    """

    labels: np.ndarray
    changed: tuple[int, ...]
    message: str


def stroke_pixels(points: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of a polyline, each segment drawn 8-connected (a barrier to 4-connected paths).

    Parameters
    ----------
    points : ndarray of float, shape (N, 2)
        Vertices as (row, column) in pixels; N >= 1.
    shape
        (H, W) of the image: pixels outside it are dropped.

    Returns
    -------
    rows, columns : ndarray of int
    """
    vertices = np.rint(np.asarray(points, dtype=float).reshape(-1, 2)).astype(np.int64)
    if len(vertices) == 1:
        vertices = np.concatenate([vertices, vertices])
    pieces = [draw_line(*start, *end) for start, end in zip(vertices[:-1], vertices[1:])]
    rows = np.concatenate([p[0] for p in pieces])
    columns = np.concatenate([p[1] for p in pieces])
    inside = (rows >= 0) & (rows < shape[0]) & (columns >= 0) & (columns < shape[1])
    return rows[inside], columns[inside]


def merge_under_stroke(labels: np.ndarray, stroke: np.ndarray, *, bridge_radius: int = 2) -> LabelEdit:
    """Merge every nucleus the stroke touches into one (the smallest label among them).

    Background gaps between the merged nuclei up to about ``2 * bridge_radius``
    pixels wide are filled (a morphological closing of their union that only
    takes background pixels), so that the result is one object.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
    stroke : ndarray of float, shape (N, 2)
        The stroke's (row, column) points in pixels.
    bridge_radius
        Radius in pixels of the closing's disk; 0 merges without filling gaps.
    """
    labels = np.asarray(labels)
    rows, columns = stroke_pixels(stroke, labels.shape)
    touched = np.unique(labels[rows, columns])
    touched = touched[touched != 0]
    if len(touched) < 2:
        return LabelEdit(
            labels.copy(),
            (),
            f"the stroke touches {len(touched)} nucleus/nuclei: draw it across two or more to merge them",
        )
    target = int(touched.min())
    union = np.isin(labels, touched)
    if bridge_radius > 0:
        footprint = disk(bridge_radius)
        padded = np.pad(union, bridge_radius + 1)
        closed = ndi.binary_closing(padded, structure=footprint)[
            bridge_radius + 1 : -bridge_radius - 1, bridge_radius + 1 : -bridge_radius - 1
        ]
        union |= closed & (labels == 0)
    merged = labels.copy()
    merged[union] = target
    others = ", ".join(str(int(t)) for t in touched if t != target)
    return LabelEdit(merged, (target,), f"merged nuclei {others} into nucleus {target}")


def split_along_line(labels: np.ndarray, line: np.ndarray) -> LabelEdit:
    """Cut every nucleus that the line crosses from edge to edge in two (or more) along it.

    A nucleus is cut when the line leaves at least two pieces of it, each at
    least :data:`MIN_PIECE_FRACTION` of its area (4-connected pieces). The
    largest piece keeps the label, the others get new labels above the
    image's largest; then the line's own pixels (and any sliver) go to the
    nearest piece, so no area is lost. Nuclei the line only grazes or enters are left alone.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
    line : ndarray of float, shape (N, 2)
        The line's (row, column) points in pixels.
    """
    labels = np.asarray(labels)
    rows, columns = stroke_pixels(line, labels.shape)
    cut = np.zeros(labels.shape, dtype=bool)
    cut[rows, columns] = True
    touched = np.unique(labels[cut])
    touched = touched[touched != 0]
    next_label = int(labels.max(initial=0)) + 1
    # New labels must fit: a uint8 image with nucleus 255 is widened rather than wrapped around.
    most = next_label + len(touched) * int(1 / MIN_PIECE_FRACTION)
    result = labels.astype(np.result_type(labels.dtype, np.min_scalar_type(most)))
    changed: list[int] = []
    for label in touched:
        nucleus = labels == label
        box = ndi.find_objects(nucleus.astype(np.uint8))[0]
        inside, cut_here = nucleus[box], cut[box] & nucleus[box]
        pieces, count = ndi.label(inside & ~cut_here)  # default structure: 4-connected
        sizes = np.bincount(pieces.ravel(), minlength=count + 1)[1:]
        kept = [i + 1 for i in np.argsort(sizes)[::-1] if sizes[i] >= MIN_PIECE_FRACTION * inside.sum()]
        if len(kept) < 2:
            continue
        # Every pixel of the nucleus (the line's and the slivers') joins the nearest kept piece.
        seeds = np.where(np.isin(pieces, kept), pieces, 0)
        _, (near_rows, near_columns) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
        nearest = seeds[near_rows, near_columns]
        region = result[box]
        region[inside] = label
        new = list(range(next_label, next_label + len(kept) - 1))
        for piece, value in zip(kept[1:], new):
            region[inside & (nearest == piece)] = value
        changed += [int(label), *new]
        next_label += len(new)
    if not changed:
        return LabelEdit(
            result, (), "the line cuts no nucleus in two: draw it across a nucleus, from background to background"
        )
    return LabelEdit(result, tuple(changed), f"split into nuclei {', '.join(map(str, changed))}")

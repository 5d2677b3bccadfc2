"""Nucleus outlines as polygons along pixel edges, for the formats other tools read (GeoJSON, ImageJ ROIs).

Pixel ``(row, col)`` covers ``x`` in ``[col, col + 1]`` and ``y`` in
``[row, row + 1]``, the convention of QuPath and ImageJ, so the area of an
outline is exactly the nucleus' pixel count. A nucleus with a hole keeps it
(an interior ring); a label whose pixels form several pieces (touching at
most at corners) is a MultiPolygon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Outline:
    """One nucleus' outline.

    Attributes
    ----------
    label
        Its label in the label image.
    geometry
        ``shapely`` Polygon (holes as interior rings) or MultiPolygon, in
        pixel-edge coordinates ``(x, y)`` of the full image.
    """

    label: int
    geometry: object


def inner_edges(labels: np.ndarray) -> np.ndarray:
    """Each nucleus' own edge: its pixels with a 4-neighbour of another label or of the background.

    The same pixels as ``skimage.segmentation.find_boundaries(labels, mode="inner")``
    (the image border is no edge), about twenty times faster: four shifted
    comparisons instead of a grey dilation and erosion of the label image.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)

    Returns
    -------
    ndarray of bool, shape (H, W)

    Raises
    ------
    ValueError
        ``labels`` is not 2-D.
    """
    if labels.ndim != 2:
        raise ValueError(f"inner_edges takes a 2-D label image, got shape {labels.shape}")
    edge = np.zeros(labels.shape, dtype=bool)
    rows = labels[1:] != labels[:-1]
    edge[1:] |= rows
    edge[:-1] |= rows
    cols = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= cols
    edge[:, :-1] |= cols
    return edge & (labels != 0)


def nucleus_outlines(labels: np.ndarray, *, offset: tuple[int, int] = (0, 0)) -> list[Outline]:
    """The outline of every nucleus of ``labels``, in label order.

    Parameters
    ----------
    labels : ndarray, shape (H, W)
        Instance labels, 0 background.
    offset
        ``(top, left)`` of ``labels`` in the full image, pixels: added to
        every coordinate (for a block of a larger image).

    Returns
    -------
    list of Outline
        Exteriors counter-clockwise in ``(x, y)``, holes clockwise, with no
        collinear vertices; the area of each is the nucleus' pixel count.
    """
    import shapely

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (H, W), got {labels.shape}")
    rows, starts, stops, run_labels = _row_runs(labels)
    top, left = offset
    boxes = shapely.box(starts + left, rows + top, stops + left, rows + top + 1)
    order = np.argsort(run_labels, kind="stable")
    found, first = np.unique(run_labels[order], return_index=True)
    outlines = []
    for label, group in zip(found.tolist(), np.split(order, first[1:])):
        merged = shapely.union_all(boxes[group])
        outlines.append(Outline(label, shapely.orient_polygons(shapely.simplify(merged, 0))))
    return outlines


def _row_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal non-zero labels along each row: (row, first column, column after the last, label)."""
    height, width = labels.shape
    padded = np.zeros((height, width + 2), dtype=labels.dtype)
    padded[:, 1:-1] = labels
    change = padded[:, 1:] != padded[:, :-1]  # (H, W + 1): a run starts or ends before column j
    rows, cols = np.nonzero(change)
    # consecutive changes in a row bound the runs between them (a run ending where another starts shares one)
    same_row = rows[1:] == rows[:-1]
    run_rows, run_starts, run_stops = rows[:-1][same_row], cols[:-1][same_row], cols[1:][same_row]
    run_labels = labels[run_rows, run_starts]
    kept = run_labels != 0
    return (
        run_rows[kept].astype(np.float64),
        run_starts[kept].astype(np.float64),
        run_stops[kept].astype(np.float64),
        run_labels[kept],
    )

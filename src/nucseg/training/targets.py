"""Training targets derived from instance label images.

``three_class`` (the default)
    0 background, 1 nucleus interior, 2 nucleus boundary. The boundary is the
    one-pixel inner rim of every nucleus, so two touching nuclei are parted by
    a two-pixel boundary line: post-processing seeds one nucleus per interior
    region and grows it back over the boundary (marker-controlled watershed).
    This is the target of Caicedo et al. 2019 (Cytometry A, "Evaluation of
    deep learning strategies for nucleus segmentation"), which works well on
    DSB2018 and trains fast.
``binary``
    0 background, 1 nucleus: the seed notebook's 2-class target. Touching
    nuclei cannot be told apart from it.
``three_class_distance``
    the three classes, plus a regressed map (:func:`distance_target`): every
    nucleus's distance to its own edge, divided by its largest value. Touching
    nuclei meet in a valley of this map, so its high plateaus seed one
    nucleus each even where the predicted boundary line has gaps.

What the network outputs for each target is :mod:`nucseg.models.outputs`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from nucseg.models.outputs import output_layout, TARGETS


def three_class_target(labels: np.ndarray) -> np.ndarray:
    """Background / interior / boundary classes from instance labels.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 background, >0 nucleus ids.

    Returns
    -------
    ndarray of uint8, shape (H, W)
        0 background, 1 interior, 2 boundary.
    """
    from nucseg.postprocess.outlines import inner_edges

    target = (labels > 0).astype(np.uint8)
    target[inner_edges(labels)] = 2
    return target


def touching_mask(labels: np.ndarray, *, gap: int = 2) -> np.ndarray:
    """Pixels near two different nuclei: where touching nuclei must be cut apart.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 background, >0 nucleus ids.
    gap
        A pixel is marked when the ``(2 * gap + 1)``-pixel square around it
        holds two different nuclei; this covers the rims of both nuclei where
        they touch and the background between nuclei up to about ``gap``
        pixels apart.

    Returns
    -------
    ndarray of bool, shape (H, W)
    """
    labels = np.asarray(labels).astype(np.int64, copy=False)
    if gap < 1:
        raise ValueError(f"gap must be at least 1 pixel, got {gap}")
    size = 2 * gap + 1
    highest = ndi.maximum_filter(labels, size=size, mode="constant", cval=0)
    # The smallest nucleus id nearby: background is lifted above every id before the minimum filter.
    ceiling = int(labels.max()) + 1
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, ceiling), size=size, mode="constant", cval=ceiling)
    return (highest > 0) & (lowest != ceiling) & (lowest != highest)


def binary_target(labels: np.ndarray) -> np.ndarray:
    """Foreground mask as class ids: uint8 (H, W), 0 background, 1 nucleus."""
    return (labels > 0).astype(np.uint8)


def distance_target(labels: np.ndarray) -> np.ndarray:
    """Normalized distance of every nucleus pixel to the edge of its own nucleus.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 background, >0 nucleus ids.

    Returns
    -------
    ndarray of float32, shape (H, W)
        0 on the background; inside a nucleus, the Euclidean distance (pixels)
        to the nearest pixel outside it, divided by the nucleus's largest such
        distance: 1 at its centre, ``1 / max`` on its rim. Image borders do not
        count as edges.
    """
    labels = np.asarray(labels)
    distance = np.zeros(labels.shape, dtype=np.float32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        # One pixel of margin so the nucleus's edge is inside the crop; the image border is padded with the nucleus.
        padded = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        inside = labels[padded] == index
        edt = ndi.distance_transform_edt(inside)
        peak = float(edt.max())
        if peak > 0:
            region = distance[padded]
            region[inside] = edt[inside] / peak
    return distance


def make_target(labels: np.ndarray, kind: str) -> np.ndarray:
    """Class-id target of the given ``kind`` (a key of :data:`nucseg.models.outputs.TARGETS`).

    ``three_class_distance`` gives its three classes here; its distance map
    is :func:`distance_target`.
    """
    output_layout(kind)
    if kind in ("three_class", "three_class_distance"):
        return three_class_target(labels)
    if kind == "binary":
        return binary_target(labels)
    raise ValueError(f"target {kind!r} has no class-id target; known: {', '.join(TARGETS)}")

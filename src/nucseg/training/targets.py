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
"""

from __future__ import annotations

import numpy as np

#: Number of classes per target kind.
TARGET_CLASSES = {"three_class": 3, "binary": 2}


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
    from skimage.segmentation import find_boundaries

    target = (labels > 0).astype(np.uint8)
    target[find_boundaries(labels, mode="inner")] = 2
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
    from scipy import ndimage as ndi

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


def make_target(labels: np.ndarray, kind: str) -> np.ndarray:
    """Class-id target of the given ``kind`` (a key of :data:`TARGET_CLASSES`)."""
    if kind == "three_class":
        return three_class_target(labels)
    if kind == "binary":
        return binary_target(labels)
    raise ValueError(f"unknown target {kind!r}; choose one of: {', '.join(TARGET_CLASSES)}")

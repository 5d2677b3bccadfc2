"""Linking the 2-D nuclei of consecutive Z planes into 3-D nuclei, by overlap (as Cellpose's ``stitch_threshold``)."""

from __future__ import annotations

import numpy as np


def link_planes(labels: np.ndarray, threshold: float) -> np.ndarray:
    """Give a nucleus the label of the nucleus it overlaps most in the plane before, when they overlap enough.

    Plane by plane from the first: a nucleus whose best match in the
    previous (already linked) plane has an intersection over union of at
    least ``threshold`` takes that match's label; every other nucleus gets a
    new label. Each label of the previous plane goes to at most one nucleus
    (the best-overlapping one).

    Parameters
    ----------
    labels : ndarray of int, shape (Z, H, W)
        The 2-D segmentation of every plane (labels need not be unique across planes).
    threshold : float
        Smallest IoU that links two nuclei, in (0, 1].

    Returns
    -------
    ndarray of uint32, shape (Z, H, W)
        3-D nuclei numbered 1..N, 0 background.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a (Z, H, W) stack, got shape {labels.shape}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    linked = np.zeros(labels.shape, dtype=np.uint32)
    next_label = 1
    for z in range(labels.shape[0]):
        ids, index = np.unique(labels[z], return_inverse=True)
        index = index.reshape(labels.shape[1:])
        table = _match(index, ids != 0, linked[z - 1], threshold) if z else np.zeros(len(ids), np.uint32)
        for i in np.flatnonzero((ids != 0) & (table == 0)):
            table[i] = next_label
            next_label += 1
        linked[z] = table[index]
    return linked


def _match(index: np.ndarray, is_nucleus: np.ndarray, previous: np.ndarray, threshold: float) -> np.ndarray:
    """Per id index of a plane: the label of ``previous`` it links to, or 0."""
    table = np.zeros(len(is_nucleus), dtype=np.uint32)
    both = is_nucleus[index] & (previous > 0)
    if not both.any():
        return table
    pairs, overlap = np.unique(np.stack([index[both], previous[both]]), axis=1, return_counts=True)
    area = np.bincount(index.ravel(), minlength=len(is_nucleus))
    area_previous = np.bincount(previous.ravel())
    iou = overlap / (area[pairs[0]] + area_previous[pairs[1]] - overlap)
    taken: set[int] = set()
    for k in np.argsort(-iou, kind="stable"):  # best overlaps first; each earlier label links once
        if iou[k] < threshold:
            break
        current, earlier = int(pairs[0, k]), int(pairs[1, k])
        if table[current] == 0 and earlier not in taken:
            table[current] = earlier
            taken.add(earlier)
    return table

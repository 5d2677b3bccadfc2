"""Automatic sizing: how much to resize an image so its nuclei match the training size.

``diameter="auto"`` (the default of :meth:`nucseg.inference.model.NetworkModel.segment`)
is a policy in two passes, as Cellpose sizes images with its size model:
a first pass at native resolution finds the nuclei, and
:func:`nucseg.postprocess.measure.size_factor` turns their median diameter
into a factor; an image that needs one runs again at it. On an image of
more than :data:`AUTO_SIZE_CROP_ABOVE` pixels the first pass sees only the
centre quarter (half the height and half the width), so it costs a quarter
of a full pass, unless that crop holds fewer than :data:`AUTO_SIZE_MIN_NUCLEI`
whole nuclei, or the nuclei its edge cuts are larger than its whole ones
(:data:`AUTO_SIZE_CUT_RATIO`): then the crop is too small for the nuclei.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nucseg.postprocess import measure
from nucseg.postprocess.measure import median_nucleus_diameter, size_factor

#: ``diameter`` value that sizes each image automatically.
AUTO_DIAMETER = "auto"
#: Automatic sizing measures the nuclei of an image of more than this many pixels on its centre
#: quarter (half its height and half its width) instead of on the whole image, so that its first
#: pass costs a quarter of a full pass on large images (0.3 MP, chosen on the validation split: against 1 MP
#: it cut the time of the 66 validation images by 23 % at the same DSB score, 0.602 against 0.601) ...
AUTO_SIZE_CROP_ABOVE = 300_000
#: ... unless that crop holds fewer whole nuclei than this; then the whole image is measured.
AUTO_SIZE_MIN_NUCLEI = 10
#: ... or when the nuclei cut by its edge (not measured) have a median area above this many times that
#: of its whole nuclei: cut nuclei are only parts, so they are larger only when the crop's whole
#: objects are the small ones. On an ISBI 2009 validation image of ~110 px nuclei the crop's whole
#: objects were mostly debris (median 23 px), so sizing ran at native resolution (AP@0.5 0.59,
#: 23 false nuclei) instead of at the factor the whole image calls for.
AUTO_SIZE_CUT_RATIO = 2.0


def sized_on_crop(image: np.ndarray) -> bool:
    """Whether automatic sizing measures ``image`` on its centre quarter."""
    return image.shape[0] * image.shape[1] > AUTO_SIZE_CROP_ABOVE


def centre_quarter(image: np.ndarray) -> np.ndarray:
    """The centre of ``image``: half its height and half its width, shape (H // 2, W // 2[, C])."""
    height, width = image.shape[:2]
    return image[height // 4 : height // 4 + height // 2, width // 4 : width // 4 + width // 2]


@dataclass
class SizeEstimate:
    """What automatic sizing found.

    Attributes
    ----------
    factor
        The resize factor it picked (1.0 when none is needed or nothing was found).
    measured_diameter
        Median diameter of the first pass's nuclei, pixels (None when it found none).
    clipped
        Whether the factor that would match them lies outside
        :data:`nucseg.postprocess.measure.AUTO_SCALE_LIMITS`, so ``factor``
        stopped at a limit: the nuclei are too far from the training size for
        automatic sizing, and a ``diameter`` should be given.
    first_pass
        The whole image's native-resolution result, or None when only the
        centre quarter was segmented.
    """

    factor: float
    measured_diameter: float | None
    clipped: bool
    first_pass: Any | None


def estimate_factor(
    image: np.ndarray,
    segment_native: Callable[[np.ndarray], Any],
    training_diameter: float | None,
) -> SizeEstimate:
    """What automatic sizing finds for ``image``.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        The raw image.
    segment_native
        Segments a raw image (or a crop of it, normalized as the whole) at
        native resolution; returns an object with ``labels``.
    training_diameter
        Median nucleus diameter of the training images, pixels.
    """
    from skimage.segmentation import clear_border

    first_pass = None
    labels = None
    if sized_on_crop(image):
        crop_labels = segment_native(centre_quarter(image)).labels
        labels = clear_border(crop_labels)
        if np.count_nonzero(np.unique(labels)) < AUTO_SIZE_MIN_NUCLEI or _cut_nuclei_larger(crop_labels, labels):
            labels = None
    if labels is None:
        first_pass = segment_native(image)
        labels = first_pass.labels
    measured = median_nucleus_diameter([labels])
    low, high = measure.AUTO_SCALE_LIMITS
    clipped = bool(measured and training_diameter and not low <= training_diameter / measured <= high)
    return SizeEstimate(size_factor(labels, training_diameter), measured, clipped, first_pass)


def _cut_nuclei_larger(crop_labels: np.ndarray, whole_labels: np.ndarray) -> bool:
    """Whether the nuclei that the crop's edge cuts have a median area above
    :data:`AUTO_SIZE_CUT_RATIO` times that of its whole nuclei (``whole_labels``, the same ids)."""
    areas = np.bincount(crop_labels.ravel())
    whole = np.zeros(areas.size, bool)
    whole[np.unique(whole_labels)] = True
    present = areas > 0
    present[0] = False
    cut_areas, whole_areas = areas[present & ~whole], areas[present & whole]
    if not cut_areas.size or not whole_areas.size:
        return False
    return bool(np.median(cut_areas) > AUTO_SIZE_CUT_RATIO * np.median(whole_areas))

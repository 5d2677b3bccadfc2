"""Image kinds (fluorescence, brightfield, histology), told from the pixels alone."""

from __future__ import annotations

import numpy as np

from nucseg.preprocess.normalize import statistics_sample, to_channels


#: Kinds of image that :func:`image_kind` tells apart.
IMAGE_KINDS = ("fluorescence", "brightfield", "histology")


def image_kind(image: np.ndarray) -> str:
    """Classify a raw DSB2018-style image as fluorescence, brightfield or histology.

    A documented heuristic, not a learned classifier:

    1. *Colour*: an RGB(A) image whose colour channels differ by more than 2 %
       of full scale on average (stained tissue, H&E) is ``"histology"``.
    2. *Background*: a gray image (one channel, or equal channels) whose
       median, i.e. its background, is above half of full scale is
       ``"brightfield"`` (dark nuclei on a bright field); otherwise
       ``"fluorescence"`` (bright nuclei on a dark background).

    Full scale is 255 for uint8, the smallest ``2**b - 1`` (b = 8, 10, 12, 14,
    16) that holds the image maximum for other integer images (12-bit camera
    data stored in uint16), and ``max(1, image max)`` for float images.

    Parameters
    ----------
    image : ndarray, shape (H, W), (H, W, 3) or (H, W, 4)
        Raw image; the alpha channel is ignored.

    Returns
    -------
    str
        One of :data:`IMAGE_KINDS`.

    Raises
    ------
    ValueError
        Not a gray, RGB or RGBA image.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))) or image.size == 0:
        raise ValueError(f"image_kind takes a gray, RGB or RGBA image, got shape {image.shape}")
    sample = statistics_sample(image)
    data = sample.astype(np.float32) if sample.ndim == 2 else sample[..., :3].astype(np.float32)
    scale = _full_scale(image.dtype, float(data.max()))
    if data.ndim == 3:
        channel_difference = max(float(np.mean(np.abs(data[..., 0] - data[..., c]))) for c in (1, 2))
        if channel_difference > 0.02 * scale:
            return "histology"
        data = data.mean(axis=2)
    return "brightfield" if float(np.median(data)) > 0.5 * scale else "fluorescence"


def raw_image_kind(image: np.ndarray) -> str:
    """The kind of a raw image as nucseg segments it: after channel conversion.

    :func:`image_kind` of the image that :func:`nucseg.preprocess.normalize.to_channels`
    makes of it, so a colour export of one fluorescence channel (DAPI in blue
    on black) is gray fluorescence. Taken on :func:`statistics_sample` of the
    image, which gives the same kind as the whole image at a fraction of the cost.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C) with C in 1, 3, 4

    Returns
    -------
    str
        One of :data:`IMAGE_KINDS`.
    """
    return image_kind(to_channels(statistics_sample(np.asarray(image)), 3))


def _full_scale(dtype: np.dtype, maximum: float) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype.kind in "ui":
        for bits in (8, 10, 12, 14, 16, 32, 64):
            if maximum <= 2**bits - 1:
                return float(2**bits - 1)
    return max(1.0, maximum)

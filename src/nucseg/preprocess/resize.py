"""The one resizer of images, probability maps and label images (Pillow).

Intensities and probabilities are resized with Pillow's bilinear filter on
32-bit float images, which widens its support when shrinking (anti-aliased,
as torch's ``interpolate(..., antialias=True)``): every output value is a
weighted mean of input values, so probabilities stay probabilities. Labels
are resized by nearest neighbour. Pillow does this in C, several times
faster than ``skimage.transform.resize``, and without torch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_channels(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize every channel of a channels-first array bilinearly, anti-aliased when shrinking.

    Parameters
    ----------
    array : ndarray, shape (C, H, W)
    shape : (int, int)
        Output (H, W) in pixels.

    Returns
    -------
    ndarray of float32, shape (C,) + shape
    """
    height, width = (int(n) for n in shape)
    channels = np.asarray(array, dtype=np.float32)
    out = np.empty((channels.shape[0], height, width), dtype=np.float32)
    for index, channel in enumerate(channels):
        resized = Image.fromarray(np.ascontiguousarray(channel), mode="F").resize((width, height), Image.BILINEAR)
        out[index] = np.asarray(resized, dtype=np.float32)
    return out


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an intensity image to ``shape`` (H, W), as :func:`resize_channels` does.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    shape : (int, int)
        Output (H, W) in pixels.

    Returns
    -------
    ndarray of float32, shape ``shape`` or ``shape + (C,)``, values in the input's range
    """
    if image.ndim == 2:
        return resize_channels(image[None], shape)[0]
    return np.ascontiguousarray(resize_channels(np.moveaxis(image, -1, 0), shape).transpose(1, 2, 0))


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a label image to ``shape`` (H, W) with nearest-neighbour interpolation.

    Label values are kept (no new values appear); objects smaller than the
    new pixel size may vanish when shrinking.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
    shape : (int, int)
        Output (H, W) in pixels.

    Returns
    -------
    ndarray, shape ``shape``, dtype of ``labels``
    """
    labels = np.asarray(labels)
    if labels.max(initial=0) > np.iinfo(np.int32).max or labels.min(initial=0) < 0:
        raise ValueError("label values must fit in int32")
    height, width = (int(n) for n in shape)
    resized = Image.fromarray(np.ascontiguousarray(labels, dtype=np.int32), mode="I").resize(
        (width, height), Image.NEAREST
    )
    return np.asarray(resized).astype(labels.dtype)

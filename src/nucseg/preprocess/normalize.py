"""Image preprocessing: colour conversion, percentile normalization, resizing.

All functions take and return plain numpy arrays with the channel axis last.
The same functions run at training and at inference time, driven by the
:class:`NormalizationConfig` saved with every model, so that an image is
normalized exactly as the model saw its training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NormalizationConfig:
    """How raw images become network input.

    Attributes
    ----------
    low_percentile, high_percentile
        Per-channel intensities at these percentiles map to 0 and 1.
    channels
        Number of input channels of the network (gray is replicated, alpha dropped).
    """

    low_percentile: float = 1.0
    high_percentile: float = 99.8
    channels: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {self.low_percentile}, {self.high_percentile}"
            )
        if self.channels < 1:
            raise ValueError(f"channels must be at least 1, got {self.channels}")


def to_channels(image: np.ndarray, channels: int = 3) -> np.ndarray:
    """Convert an image to exactly ``channels`` channels, channels last.

    Gray images are replicated, RGBA loses its alpha channel (unless four
    channels are asked for), RGB to one channel takes the mean. A colour
    image whose content is in one channel only (a DAPI image exported as
    blue on black, a green-only GFP image: see :func:`single_colour_channel`)
    is that channel, a gray fluorescence image. Other channel
    counts raise ``ValueError``: the caller must choose channels explicitly
    rather than have them guessed.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    channels : int
        Number of output channels (usually 1 or 3).

    Returns
    -------
    ndarray, shape (H, W, channels), dtype of ``image``
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C), got {image.shape}")
    n = image.shape[2]
    if n == 4 and channels != 4:
        image, n = image[:, :, :3], 3
    if n == 3:
        colour = single_colour_channel(image)
        if colour is not None:
            image, n = image[:, :, colour : colour + 1], 1
    if n == channels:
        return image
    if n == 1:
        return np.repeat(image, channels, axis=2)
    if n == 3 and channels == 1:
        return image.mean(axis=2, keepdims=True).astype(image.dtype)
    raise ValueError(f"cannot convert an image with {n} channels to {channels}; select channels explicitly")


#: Image-wide statistics (a channel's bright end, an image's kind) are taken on at most about this many pixels.
STATISTICS_PIXELS = 250_000


def statistics_sample(image: np.ndarray) -> np.ndarray:
    """A strided subsample of ``image`` (every k-th row and column) of at most about :data:`STATISTICS_PIXELS` pixels.

    Plenty for image-wide statistics of megapixel images, and the same pixels
    whether it is taken once or again on its own result (k is 1 then).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)

    Returns
    -------
    ndarray, shape (ceil(H / k), ceil(W / k)[, C]), a view of ``image``
    """
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / STATISTICS_PIXELS)))
    return image[::step, ::step]


#: A colour channel whose bright end (99.9th percentile) is below this fraction of the brightest channel's holds
#: no content: JPEG and export noise stay well below it, any stained colour image far above.
EMPTY_CHANNEL_FRACTION = 0.05


def equal_channels(image: np.ndarray) -> bool:
    """Whether every channel of an image holds the same values: gray stored as colour, as many PNG
    and JPEG exports are.

    Parameters
    ----------
    image : ndarray, shape (H, W, C)
        Pass the colour channels only (an alpha channel differs from them).

    Returns
    -------
    bool
        True for one channel too.
    """
    first = image[:, :, 0]
    return all(np.array_equal(first, image[:, :, c]) for c in range(1, image.shape[2]))


def single_colour_channel(image: np.ndarray) -> int | None:
    """The one channel of an RGB image that holds all its content, or None.

    Fluorescence is often exported as a colour image with the nuclei in one
    channel (DAPI in blue, GFP in green) and the others black. Taken as a
    colour photograph, it looks like nothing the network has seen.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3)

    Returns
    -------
    int or None
        The index of the only channel whose bright end exceeds
        :data:`EMPTY_CHANNEL_FRACTION` of the brightest channel's; None when
        two or more do (a colour image, or gray stored as RGB) or none does.
    """
    sample = statistics_sample(image)
    if equal_channels(sample):  # gray stored as colour, the common case: no percentiles needed to say so
        return None
    sample = sample.reshape(-1, image.shape[2])
    if sample.dtype in (np.uint8, np.uint16):
        bright = _integer_percentiles(sample, (99.9,))[0]
    else:
        bright = np.percentile(sample.astype(np.float32), 99.9, axis=0)
    if bright.max() <= 0:
        return None
    # integer images: a level or two of export noise is empty too, however dim the image
    noise = 2 * np.iinfo(image.dtype).max / 255 if image.dtype.kind in "ui" else 0.0
    full = np.flatnonzero(bright > max(EMPTY_CHANNEL_FRACTION * bright.max(), noise))
    return int(full[0]) if full.size == 1 else None


def channel_mean(image: np.ndarray) -> np.ndarray:
    """The mean of an image's channels, in float32.

    Parameters
    ----------
    image : ndarray, shape (H, W, C)
        Any number type.

    Returns
    -------
    ndarray of float32, shape (H, W)
        Summed one channel at a time: numpy's mean over a short last axis is about ten times slower.
    """
    mean = image[..., 0].astype(np.float32)
    for channel in range(1, image.shape[2]):
        mean += image[..., channel]
    mean /= image.shape[2]
    return mean


def percentile_range(image: np.ndarray, *, low: float = 1.0, high: float = 99.8) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel intensities at the ``low`` and ``high`` percentiles.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    low, high : float
        Percentiles in [0, 100].

    Returns
    -------
    low_values, high_values : ndarray of float64, shape (C,) (shape (1,) for a 2-D image)
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    image = np.asarray(image)
    flat = image.reshape(-1, 1) if image.ndim == 2 else image.reshape(-1, image.shape[-1])
    # Percentiles of a strided subsample: identical to the full computation
    # for practical purposes and much faster on megapixel images.
    step = max(1, flat.shape[0] // 1_000_000)
    if flat.dtype in (np.uint8, np.uint16):
        low_values, high_values = _integer_percentiles(flat[::step], (low, high))
        return low_values, high_values
    low_values, high_values = np.percentile(
        flat[::step].astype(working_float(flat.dtype), copy=False), [low, high], axis=0
    )
    return low_values, high_values


def working_float(dtype: np.dtype) -> type:
    """The float type that holds differences of pixels of ``dtype`` exactly enough: float32, or float64 for
    integers over 16 bits and float64 (float32 would merge the levels of a 32-bit camera offset by 2**31)."""
    dtype = np.dtype(dtype)
    return np.float64 if dtype.itemsize > 4 or (dtype.kind in "iu" and dtype.itemsize > 2) else np.float32


def _integer_percentiles(flat: np.ndarray, percentiles: tuple[float, ...]) -> np.ndarray:
    """``np.percentile(flat, percentiles, axis=0)`` (linear interpolation) of uint8/uint16 data, from histograms.

    About ten times faster than sorting: the k-th smallest value of a channel
    is where its cumulative histogram first exceeds k.

    Parameters
    ----------
    flat : ndarray of uint8 or uint16, shape (N, C)
    percentiles
        Percentiles in [0, 100].

    Returns
    -------
    ndarray of float64, shape (len(percentiles), C)
    """
    n = flat.shape[0]
    results = np.empty((len(percentiles), flat.shape[1]), dtype=np.float64)
    for channel in range(flat.shape[1]):
        cumulative = np.cumsum(np.bincount(flat[:, channel]))
        for row, percentile in enumerate(percentiles):
            position = percentile / 100.0 * (n - 1)
            below = int(np.floor(position))
            values = np.searchsorted(cumulative, [below + 1, min(below + 2, n)])  # order statistics below, below + 1
            results[row, channel] = values[0] + (position - below) * (values[1] - values[0])
    return results


def normalize_percentile(
    image: np.ndarray,
    *,
    low: float = 1.0,
    high: float = 99.8,
    eps: float = 1e-6,
) -> np.ndarray:
    """Scale each channel so that its ``low`` and ``high`` percentiles map to 0 and 1.

    Values outside are not clipped (as in CSBDeep/StarDist), so bright
    structures keep their contrast.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    low, high : float
        Percentiles in [0, 100] (:func:`percentile_range`).
    eps : float
        Smallest divisor: a constant channel becomes 0, not NaN or inf.

    Returns
    -------
    ndarray of float32, same shape as ``image``
    """
    return normalize_with_range(image, *percentile_range(image, low=low, high=high), eps=eps)


def normalize_with_range(image: np.ndarray, low: np.ndarray, high: np.ndarray, *, eps: float = 1e-6) -> np.ndarray:
    """Scale each channel so that the intensities ``low`` and ``high`` map to 0 and 1 (not clipped).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    low, high : array_like, shape (C,) (or (1,) for a 2-D image)
        Per-channel intensities, e.g. from :func:`percentile_range` of the
        image, or of a larger image that ``image`` is a part of.
    eps : float
        Smallest divisor: a constant channel becomes 0, not NaN or inf.

    Returns
    -------
    ndarray of float32, same shape as ``image``
    """
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    image = np.asarray(image)
    working = working_float(image.dtype)
    data = image.astype(working, copy=False)
    scale = np.maximum(high - low, eps).astype(working)
    return ((data - low.astype(working)) / scale).astype(np.float32, copy=False)


def prepare_image(image: np.ndarray, config: NormalizationConfig = NormalizationConfig()) -> np.ndarray:
    """Channel conversion then percentile normalization: raw image to network input.

    Returns
    -------
    ndarray of float32, shape (H, W, config.channels)
    """
    return normalize_percentile(
        to_channels(image, config.channels), low=config.low_percentile, high=config.high_percentile
    )

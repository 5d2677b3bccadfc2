"""Image kinds (fluorescence, brightfield, histology), told from the pixels alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nucseg.preprocess.normalize import (
    channel_mean,
    equal_channels,
    single_colour_channel,
    statistics_sample,
    to_channels,
)


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
    scale = full_scale(image.dtype, float(data.max()))
    if data.ndim == 3:
        channel_difference = max(float(np.mean(np.abs(data[..., 0] - data[..., c]))) for c in (1, 2))
        if channel_difference > 0.02 * scale:
            return "histology"
        data = channel_mean(data)
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


def full_scale(dtype: np.dtype, maximum: float) -> float:
    """The brightest value an image of ``dtype`` whose maximum is ``maximum`` could hold (see :func:`image_kind`)."""
    if dtype == np.uint8:
        return 255.0
    if dtype.kind in "ui":
        for bits in (8, 10, 12, 14, 16, 32, 64):
            if maximum <= 2**bits - 1:
                return float(2**bits - 1)
    return max(1.0, maximum)


#: A colour image whose darkest channel (with content) has its median below this fraction of full scale has a
#: dark background: fluorescence, not light through a stained slide (measured on the
#: annotated sets: ``benchmarks/bench_composites.py``).
COMPOSITE_MAX_BACKGROUND = 0.18
#: Stains absorb in every colour channel at once, so the channels of H&E and brightfield co-vary; fluorescence
#: channels show different structures. Below this Pearson correlation of two channels with content, they do not.
COMPOSITE_MAX_CORRELATION = 0.9


@dataclass(frozen=True)
class CompositeEvidence:
    """Why a colour image is, or is not, taken for a fluorescence composite (see :func:`composite_evidence`).

    Attributes
    ----------
    background
        Median of the darkest channel with content, as a fraction of full
        scale: near 0 for fluorescence, whose nuclear channel is black between
        the nuclei even where a cytoplasm stain fills the image; high for
        light through a slide, bright in every channel.
    correlation
        Lowest Pearson correlation between two channels that hold content.
    nuclear_channel
        The channel (0-based) whose bright objects look most like nuclei:
        compact (area-weighted solidity of the Otsu foreground's objects) and
        sparse (a nuclear stain covers less of the image than a cytoplasm or
        whole-cell stain of the same cells); None when not a composite.
    composite
        Whether the image is a fluorescence composite: dark background and channels that do not co-vary.
    """

    background: float
    correlation: float
    nuclear_channel: int | None
    composite: bool


def composite_evidence(image: np.ndarray) -> CompositeEvidence | None:
    """Whether a colour image is several fluorescence channels merged (nuclei in blue, other stains in red and
    green on black), as Fiji and microscope software export them, rather than a photograph of a stained slide.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3) or (H, W, 4)
        Raw colour image; alpha is ignored.

    Returns
    -------
    CompositeEvidence or None
        None when the image is not colour, is grey stored as colour (three
        equal channels), holds content in one channel
        only (a single fluorescence channel exported as colour, which
        :func:`nucseg.preprocess.normalize.to_channels` takes as gray), or
        is black in at least 99.9 % of its pixels.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or single_colour_channel(image[..., :3]) is not None:
        return None
    sample = statistics_sample(image)[..., :3]
    if equal_channels(sample):
        return None  # grey stored as colour, as many PNG and JPEG exports are: one channel's content
    sample = sample.astype(np.float32)
    scale = full_scale(image.dtype, float(sample.max()))
    bright = np.percentile(sample.reshape(-1, 3), 99.9, axis=0)
    content = [c for c in range(3) if bright[c] > 0.05 * bright.max()]
    if not content:  # black, or bright in under 0.1 % of the pixels: no content to tell a composite by
        return None
    background = min(float(np.median(sample[..., c])) for c in content) / scale
    flat = sample.reshape(-1, 3)
    correlations = [_correlation(flat[:, a], flat[:, b]) for i, a in enumerate(content) for b in content[i + 1 :]]
    correlation = min(correlations, default=1.0)
    composite = background < COMPOSITE_MAX_BACKGROUND and correlation < COMPOSITE_MAX_CORRELATION
    nuclear = max(content, key=lambda c: _nucleus_likeness(sample[..., c])) if composite else None
    return CompositeEvidence(background, correlation, nuclear, composite)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


def _nucleus_likeness(channel: np.ndarray) -> float:
    """Area-weighted solidity of the objects above the channel's Otsu threshold, times the fraction of the
    image they leave free (0 when there are none)."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    if channel.max() == channel.min():
        return 0.0
    foreground = channel > threshold_otsu(channel)
    regions = [region for region in regionprops(label(foreground)) if region.area >= 9]
    if not regions:
        return 0.0
    areas = np.array([region.area for region in regions], dtype=np.float64)
    solidity = float(np.average([region.solidity for region in regions], weights=areas))
    return solidity * (1.0 - float(foreground.mean()))

"""Pictures for a person to check: nucleus outlines on images, sample grids, prediction snapshots.

Every function returns a plain uint8 RGB array, ``(H, W, 3)``; only
:func:`save_sample_grid` writes a file. Images are shown as a person sees
them (:func:`display_image`: 8-bit colour as it is, other images with Fiji's
auto-contrast); each nucleus outline (its pixels that touch another label or
the background) is drawn in its own colour, edged in black outside.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nucseg.datasets.kinds import full_scale, image_kind
from nucseg.datasets.sample import Sample
from nucseg.io.images import write_png
from nucseg.io.pixels import usable_pixels
from nucseg.preprocess.normalize import normalize_with_range, percentile_range, to_channels
from nucseg.preprocess.resize import resize_image, resize_labels

#: Pixels between the panels of a grid or snapshot.
GAP = 4
_GAP_VALUE = 48  # dark gray: separates panels on dark and bright images alike
_GOLDEN_RATIO = 0.618033988749895
_SKIPPED_HUES = (0.56, 0.80)  # blue to violet, as fractions of the colour wheel


def outline_colors(count: int) -> np.ndarray:
    """Distinct, vivid colours for nucleus outlines.

    Fully saturated, full-value hues in the golden-ratio sequence (so that
    consecutive labels get far-apart hues), skipping blue to violet: those are
    dark on black fluorescence backgrounds and vanish on haematoxylin-stained
    nuclei. The others stand out on bright fluorescent nuclei and on dark
    stained or brightfield nuclei alike (outlines lie on the nucleus' own
    edge pixels).

    Returns
    -------
    ndarray of uint8, shape (count, 3)
    """
    hues = (np.arange(count) * _GOLDEN_RATIO) % 1.0 * (1.0 - _SKIPPED_HUES[1] + _SKIPPED_HUES[0])
    hues = np.where(hues >= _SKIPPED_HUES[0], hues + _SKIPPED_HUES[1] - _SKIPPED_HUES[0], hues)
    rgb = [colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues]
    return np.round(np.array(rgb, dtype=np.float64).reshape(count, 3) * 255).astype(np.uint8)


#: Fiji's auto-contrast: 0.35 % of the pixels saturated, half at each end of the display range.
DISPLAY_PERCENTILES = (0.175, 99.825)
#: The display range spans at least this fraction of full scale, so that an empty field stays dark instead of
#: being stretched into noise.
MIN_DISPLAY_SPAN = 0.1


def display_image(image: np.ndarray) -> np.ndarray:
    """An image as a person sees it: 8-bit colour as it is, other images with Fiji's auto-contrast.

    8-bit RGB(A) in colour (H&E, fluorescence merges) keeps its own colours;
    gray stored as RGB and one fluorescence channel exported in colour are
    gray (:func:`nucseg.preprocess.normalize.to_channels`).
    Every other image is shown per channel from its :data:`DISPLAY_PERCENTILES`
    (Fiji's "Auto"), over at least :data:`MIN_DISPLAY_SPAN` of full scale
    (:func:`nucseg.datasets.kinds.full_scale`; 12 bits at least for 16-bit
    and wider integers): a blank slide stays dark.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Raw image, any dtype. Gray, RGB and RGBA (alpha dropped) are shown
        as such; other channel counts as the mean of their channels.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
    """
    image = usable_pixels(np.asarray(image))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        if image.dtype == np.uint8 and image_kind(image) == "histology":  # in colour: stains, or merged channels
            return np.ascontiguousarray(image[..., :3])
        image = to_channels(image, 1)[..., 0] if image.dtype == np.uint8 else image[..., :3]
    elif image.ndim == 3:
        image = image.mean(axis=2, dtype=np.float64)
    low, high = percentile_range(image, low=DISPLAY_PERCENTILES[0], high=DISPLAY_PERCENTILES[1])
    # a 16-bit or wider integer image is at least 12-bit camera data, however dim
    deepest = max(float(image.max()), 4095.0 if image.dtype.kind in "iu" and image.dtype.itemsize > 1 else 0.0)
    span = MIN_DISPLAY_SPAN * full_scale(image.dtype, deepest)
    shown = normalize_with_range(image, low, np.maximum(high, low + span))
    shown = np.round(np.clip(shown, 0.0, 1.0) * 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(shown[..., None], 3, axis=2) if shown.ndim == 2 else shown)


def outline_overlay(
    image: np.ndarray, labels: np.ndarray, *, colors: np.ndarray | None = None, width: int = 1
) -> np.ndarray:
    """Draw each nucleus outline on the image as a person sees it: in its own colour, edged in black.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Raw image, any dtype (shown as by :func:`display_image`).
    labels : ndarray of int, shape (H, W)
        Instance labels, 0 background.
    colors : array-like of uint8, shape (K, 3), optional
        Outline colours; label ``k`` gets ``colors[(k - 1) % K]``. Default:
        ``outline_colors(64)``.
    width
        Width of the coloured outline, in pixels.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
        The coloured pixels are the nucleus' own edge (:func:`~nucseg.postprocess.outlines.inner_edges`,
        grown inwards to ``width``); the background pixels
        just outside (``max(1, width // 2)`` of them) are black, so that an
        outline shows on dark and light nuclei and backgrounds alike.
    """
    labels = np.asarray(labels)
    if labels.shape != np.shape(image)[:2]:
        raise ValueError(f"labels of shape {labels.shape} do not match image of shape {np.shape(image)}")
    return _draw_outlines(display_image(image), labels, colors, width=width)


def _draw_outlines(rgb: np.ndarray, labels: np.ndarray, colors: np.ndarray | None, *, width: int = 1) -> np.ndarray:
    from scipy import ndimage as ndi

    from nucseg.postprocess.outlines import inner_edges

    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"outline width must be a whole number of pixels, at least 1, got {width!r}")
    if colors is None:
        colors = _DEFAULT_COLORS
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(colors) == 0:
        raise ValueError("colors must hold at least one colour")
    out = rgb.copy()
    inside = labels > 0
    edge = inner_edges(labels)
    if width > 1:
        edge = ndi.binary_dilation(edge, iterations=width - 1) & inside
    rim = ndi.binary_dilation(inside, iterations=max(1, width // 2)) & ~inside
    out[rim] = 0
    out[edge] = colors[(labels[edge].astype(np.int64) - 1) % len(colors)]
    return out


def prediction_snapshot(image: np.ndarray, true_labels: np.ndarray, pred_labels: np.ndarray) -> np.ndarray:
    """Input | true outlines | predicted outlines, side by side, with small captions.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 1|3|4)
        Raw or normalized image.
    true_labels, pred_labels : ndarray of int, shape (H, W)

    Returns
    -------
    ndarray of uint8, shape (H, 3 * W + 2 * GAP, 3)
    """
    for labels in (true_labels, pred_labels):
        if np.shape(labels) != np.shape(image)[:2]:
            raise ValueError(f"labels of shape {np.shape(labels)} do not match image of shape {np.shape(image)}")
    shown = display_image(image)
    panels = [
        (shown, "input"),
        (_draw_outlines(shown, np.asarray(true_labels), None), f"truth: {_count(true_labels)}"),
        (_draw_outlines(shown, np.asarray(pred_labels), None), f"predicted: {_count(pred_labels)}"),
    ]
    return _hstack([_caption(panel, text) for panel, text in panels])


def sample_grid(samples: Sequence[Sample], *, n: int = 8, seed: int = 0, tile_size: int = 256) -> np.ndarray:
    """A grid of randomly chosen samples, each shown as image | outlines.

    Each image is scaled to fit a ``tile_size`` square (aspect ratio kept) and
    its outlines are drawn at that scale, so they stay visible on large images.
    The image tile carries the sample name, the outline tile the nucleus count.

    Parameters
    ----------
    samples
        Annotated samples (:func:`nucseg.datasets.layouts.load_dataset`).
    n
        Number of samples shown (all of them if fewer).
    seed
        Seed of the random choice.
    tile_size
        Side of each square tile, in pixels.

    Returns
    -------
    ndarray of uint8, shape (rows * (tile_size + GAP) - GAP, cols * 2 * (tile_size + GAP) - GAP, 3)
        ``cols = ceil(sqrt(k / 2))`` sample pairs per row for ``k`` samples shown.
    """
    if not samples:
        raise ValueError("no samples to show")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if tile_size < 16:
        raise ValueError(f"tile_size must be at least 16, got {tile_size}")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(samples), size=min(n, len(samples)), replace=False))
    pairs = [_sample_pair(samples[i], tile_size) for i in chosen]
    cols = int(np.ceil(np.sqrt(len(pairs) / 2)))
    rows = [_hstack(pairs[r : r + cols], width=cols) for r in range(0, len(pairs), cols)]
    return _vstack(rows)


def save_sample_grid(
    samples: Sequence[Sample], path: str | Path, *, n: int = 8, seed: int = 0, overwrite: bool = True
) -> Path:
    """Write :func:`sample_grid` as a PNG, atomically; return the path.

    With ``overwrite=False`` an existing file is kept and
    :class:`nucseg.io.OutputExistsError` raised.
    """
    return write_png(path, sample_grid(samples, n=n, seed=seed), overwrite=overwrite)


def _sample_pair(sample: Sample, tile_size: int) -> np.ndarray:
    height, width = sample.labels.shape
    scale = tile_size / max(height, width)
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    shown = display_image(sample.image)
    if shape != (height, width):
        shown = np.round(np.clip(resize_image(shown, shape), 0, 255)).astype(np.uint8)
        labels = resize_labels(sample.labels, shape)
    else:
        labels = sample.labels
    name = sample.name if len(sample.name) <= 16 else sample.name[:14] + ".."
    image_tile = _caption(_pad(shown, tile_size), name)
    outline_tile = _caption(_pad(_draw_outlines(shown, labels, None), tile_size), f"{_count(sample.labels)} nuclei")
    return _hstack([image_tile, outline_tile])


def _count(labels: np.ndarray) -> int:
    values = np.unique(np.asarray(labels))
    return int(np.count_nonzero(values))


def _pad(rgb: np.ndarray, size: int) -> np.ndarray:
    tile = np.full((size, size, 3), _GAP_VALUE // 2, dtype=np.uint8)
    tile[: rgb.shape[0], : rgb.shape[1]] = rgb
    return tile


def _caption(rgb: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` small, white on a black box, in the top-left corner."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(rgb)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    right = draw.textbbox((3, 2), text, font=font)[2]
    bottom = draw.textbbox((3, 2), "Ag|", font=font)[3]  # the same box height for every caption
    draw.rectangle((0, 0, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def _hstack(panels: Sequence[np.ndarray], *, width: int | None = None) -> np.ndarray:
    """Panels of equal height side by side, GAP apart; pad to ``width`` panels with gap colour."""
    panels = list(panels)
    if width is not None and len(panels) < width:
        blank = np.full_like(panels[0], _GAP_VALUE)
        panels += [blank] * (width - len(panels))
    gap = np.full((panels[0].shape[0], GAP, 3), _GAP_VALUE, dtype=np.uint8)
    parts = [part for panel in panels for part in (panel, gap)][:-1]
    return np.concatenate(parts, axis=1)


def _vstack(rows: Sequence[np.ndarray]) -> np.ndarray:
    gap = np.full((GAP, rows[0].shape[1], 3), _GAP_VALUE, dtype=np.uint8)
    parts = [part for row in rows for part in (row, gap)][:-1]
    return np.concatenate(parts, axis=0)


_DEFAULT_COLORS = outline_colors(64)

"""Images that show things other than nuclei, built from real ones, to measure the quality flags on.

Each builder takes a real image (and, where it needs them, its nuclei) and
returns the failure case issue 34 met on public files, with the nuclei the
new image still holds as its truth:

:func:`with_text`
    burned-in white text (a label, a scale note) over a fluorescence image:
    the letters are found as nuclei;
:func:`as_cell_stain`
    a whole-cell stain given as the nuclear channel: each nucleus grown into
    a cell body with dimmer, textured cytoplasm, cells touching;
:func:`with_stroma`
    H&E with fibrous stroma texture between the nuclei (a frozen section's
    look): texture is found as nuclei.

``benchmarks/calibrate_quality.py --not-nuclei`` builds them from a model's
test images; the tests build them from the sample images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: The text :func:`with_text` burns in: what microscope software stamps on an export.
DEFAULT_TEXT = "DAPI 20x  A1\nexp 200 ms  #3"


def _grey_uint8(image: np.ndarray) -> np.ndarray:
    """``image`` as one 8-bit channel, its 0.1-99.9 percentile range stretched over 0-255."""
    from nucseg.preprocess.normalize import to_channels

    grey = to_channels(image, 1)[..., 0].astype(np.float32)
    low, high = np.percentile(grey, [0.1, 99.9])
    return np.clip((grey - low) / max(float(high - low), 1e-6) * 255, 0, 255).astype(np.uint8)


def with_text(image: np.ndarray, *, text: str = DEFAULT_TEXT, height: float = 0.08) -> np.ndarray:
    """A grey fluorescence image with ``text`` burned in, in white, from its top left corner.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        A fluorescence image (stretched to 8 bits first).
    height
        Letter height as a share of the image height.

    Returns
    -------
    ndarray of uint8, shape (H, W)
    """
    from PIL import Image, ImageDraw, ImageFont

    grey = _grey_uint8(image)
    rows, cols = grey.shape
    size = max(10, int(round(height * rows)))
    canvas = Image.fromarray(grey)
    ImageDraw.Draw(canvas).multiline_text(
        (cols // 20, rows // 20), text, fill=255, font=ImageFont.load_default(size=size), spacing=size // 3
    )
    return np.asarray(canvas)


def as_cell_stain(image: np.ndarray, *, grow: float = 1.0, seed: int = 0) -> np.ndarray:
    """A whole-cell (cytoplasm) stain of the cells whose nuclei ``image`` shows.

    Each nucleus (an area above Otsu's threshold) is grown by ``grow``
    nucleus diameters into a cell body, cells meeting where they touch
    (:func:`skimage.segmentation.expand_labels`); each cell gets its own
    brightness, fine texture, a dimmer nucleus (the stain fills the
    cytoplasm) and darker borders where cells meet; then a blur of 1.5 pixels.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        A fluorescence image of nuclei.
    grow
        How far cells reach beyond their nucleus, in nucleus diameters
        (the median equivalent diameter of the areas above Otsu's threshold).

    Returns
    -------
    ndarray of uint8, shape (H, W)
    """
    from skimage.filters import threshold_otsu
    from skimage.segmentation import expand_labels

    from nucseg.postprocess.outlines import inner_edges

    grey = _grey_uint8(image).astype(np.float32) / 255
    spots, count = ndi.label(grey > threshold_otsu(grey))
    areas = np.bincount(spots.ravel())[1:]
    width = 2 * float(np.sqrt(np.median(areas[areas >= 9]) / np.pi)) if (areas >= 9).any() else 20.0
    cells = expand_labels(spots, distance=grow * width)
    rng = np.random.default_rng(seed)
    brightness = np.concatenate([[0.05], rng.uniform(0.5, 1.0, count)])
    texture = ndi.gaussian_filter(rng.random(grey.shape), 1.0)
    stain = brightness[cells] * (0.75 + 0.5 * (texture - texture.mean()) / max(float(np.ptp(texture)), 1e-6) * 2)
    stain[spots > 0] *= 0.8
    stain[inner_edges(cells)] *= 0.6
    stain = ndi.gaussian_filter(stain, 1.5)
    return np.clip(stain / max(float(stain.max()), 1e-6) * 255, 0, 255).astype(np.uint8)


def with_stroma(image: np.ndarray, labels: np.ndarray, *, strength: float = 0.7, seed: int = 0) -> np.ndarray:
    """An H&E image with fibrous stroma texture painted between its nuclei.

    Streaks of noise stretched along the rows darken the tissue toward
    haematoxylin's purple; the nuclei (``labels``, grown by 3 pixels) keep
    their pixels.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W, 3) or (H, W, 4)
    labels : ndarray of int, shape (H, W)
        The image's nuclei.
    strength
        Darkening of the densest streaks, as a share of about 60 grey levels.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
    """
    rgb = np.asarray(image)[..., :3].astype(np.float32)
    noise = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(labels.shape), (2, 6))
    streaks = np.clip(noise / max(float(noise.std()), 1e-6), 0, None)
    streaks[ndi.binary_dilation(labels > 0, iterations=3)] = 0
    purple = np.array([-40.0, -60.0, -10.0], dtype=np.float32)  # toward haematoxylin
    return np.clip(rgb + strength * streaks[..., None] * purple, 0, 255).astype(np.uint8)

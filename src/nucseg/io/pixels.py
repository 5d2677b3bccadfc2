"""The one rule for pixel types: which pixel values nucseg segments, and how.

Every path that segments pixels applies :func:`usable_pixels`: whole image
files (:meth:`nucseg.io.opened.OpenedImage.read_stack`), regions of images read
block by block (:meth:`nucseg.io.opened.OpenedImage.read`) and arrays given to
``Model.segment``.

- NaN and infinite pixels are refused, in one line with their count. They
  have no agreed meaning (ImageJ's "NaN background" is a mask, a ratio
  image's infinities a division by zero, a stitched mosaic's NaNs missing
  tiles), and any value put in their place is a guess that changes what the
  network sees: the median would give a thresholded image's background the
  nuclei's intensity; the minimum would make a brightfield hole a dark
  nucleus. The message says how to replace them (Fiji: Process > Noise >
  Remove NaNs).
- Booleans become uint8 0 and 255, as a 1-bit PNG is read.
- Every other integer (8 to 64 bits, signed or not) and float type is kept:
  percentile normalization is invariant to offset and scale, so negative
  floats (background-subtracted data) and 32/64-bit integers segment as the
  same image in 16 bits would.
- A constant image is kept: it has no nuclei, and segmenting it finds none.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from nucseg.errors import InputError
from nucseg.io.channels import ChosenChannel

#: The advice that ends the message about NaN and infinite pixels.
REPLACE_NON_FINITE = (
    "replace them with a background value and run again (Fiji: Process > Noise > Remove NaNs; numpy: np.nan_to_num)"
)


def usable_pixels(image: np.ndarray, path: str | Path | None = None, *, region: str = "") -> np.ndarray:
    """``image`` as nucseg segments it, or an :class:`InputError` naming what is wrong with its pixels.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C) (any shape is accepted)
        Raw pixels.
    path
        The file the pixels come from, for the message (None for an array).
    region
        Where in the file the pixels are, for the message of a block
        (``"rows 0:512, columns 512:1024"``); empty for a whole image.

    Returns
    -------
    ndarray, same shape
        ``image`` itself, or uint8 0/255 for a boolean image.

    Raises
    ------
    InputError
        NaN or infinite pixels (the message counts them); pixels that are not
        numbers (complex, text, objects).
    """
    image = np.asarray(image)
    kind = image.dtype.kind
    if kind == "b":
        return image.astype(np.uint8) * np.uint8(255)
    if kind not in "uif":
        raise InputError(
            path, f"pixels of type {image.dtype} are not intensities; nucseg segments integer, float or boolean images"
        )
    if kind == "f":
        non_finite = image.size - int(np.count_nonzero(np.isfinite(image)))
        if non_finite:
            where = f" in {region}" if region else ""
            share = "every pixel" if non_finite == image.size else f"{non_finite:,} of {image.size:,} pixels"
            verb = "is" if non_finite == image.size or non_finite == 1 else "are"
            raise InputError(
                path,
                f"{share}{where} {verb} NaN or infinite ({_counts(image)}); nucseg segments finite "
                f"intensities only: {REPLACE_NON_FINITE}",
            )
    return image


def usable_channels(chosen: ChosenChannel, path: str | Path | None = None) -> ChosenChannel:
    """:func:`usable_pixels` of the channel chosen and of every channel measured."""
    every = None if chosen.every_channel is None else usable_pixels(chosen.every_channel, path)
    return dataclasses.replace(chosen, image=usable_pixels(chosen.image, path), every_channel=every)


def _counts(image: np.ndarray) -> str:
    """``"12 NaN, 3 +inf"``: how many of each kind of non-finite value ``image`` holds."""
    counts = {
        "NaN": int(np.count_nonzero(np.isnan(image))),
        "+inf": int(np.count_nonzero(np.isposinf(image))),
        "-inf": int(np.count_nonzero(np.isneginf(image))),
    }
    return ", ".join(f"{count:,} {name}" for name, count in counts.items() if count)

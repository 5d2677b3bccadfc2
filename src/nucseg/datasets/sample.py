"""What a dataset is made of: samples (an image with its instance labels) and the files they come from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DatasetWarning(UserWarning):
    """A dataset was read, but something in it deserves a look (overlaps, binary masks)."""


@dataclass
class Sample:
    """One annotated image.

    Attributes
    ----------
    name
        Image identifier (the DSB2018 id, or the file stem).
    image : ndarray, shape (H, W) or (H, W, C)
        Raw image in its native dtype.
    labels : ndarray of int32, shape (H, W)
        Instance labels, 0 background, 1..N nuclei.
    image_path
        The image file.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    image_path: Path


@dataclass(frozen=True)
class SampleFiles:
    """The files that make one sample, before decoding."""

    name: str
    image_path: Path
    mask_paths: tuple[Path, ...]
    layout: str  # "dsb2018" (one binary mask per nucleus) or "paired" (one label image)

"""Images larger than memory, read region by region: the block-wise view of the one reader,
:func:`nucseg.io.opened.open_image` (TIFF through tifffile's Zarr interface, Zarr stores), and the
pyramid level that labels of a given shape were made from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nucseg.errors import InputError
from nucseg.io.channels import Channel
from nucseg.io.formats import is_zarr, TIFF_SUFFIXES
from nucseg.io.opened import image_pixel_size, MissingLevelError, OpenedImage
from nucseg.io.opened import open_image as _open

__all__ = ["image_pixel_size", "image_planes", "image_shape", "is_zarr", "open_image", "open_level_of_shape"]


def open_image(path: str | Path, *, channel_axis: int | str | None = None, channel: Channel = None) -> OpenedImage:
    """Open a TIFF or Zarr image for reading region by region (``image.read(rows, cols)``).

    :func:`nucseg.io.opened.open_image`, refusing at once what cannot be read
    by region: PNG and JPEG files, Z-stacks and time series, and a
    multi-channel microscopy image without ``channel``. For fast block reads
    the TIFF should be tiled (as microscopy slides and pyramidal OME-TIFFs
    are); a TIFF stored in one strip is decoded whole for every block.

    Parameters
    ----------
    path
        TIFF file (or TIFF-based slide) or Zarr folder.
    channel_axis, channel
        As for :func:`nucseg.io.opened.open_image`.

    Raises
    ------
    InputError
        Missing or unreadable file, not 2-D with optional channels, an
        undeclared channel axis, or no ``channel`` for a multi-channel
        microscopy image.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if not (is_zarr(path) or (path.suffix.lower() in TIFF_SUFFIXES and path.is_file())):
        raise InputError(path, "block-wise reading needs a TIFF file or a Zarr store")
    image = _open(path, channel_axis=channel_axis, channel=channel)
    image.check_one_plane()
    image.check_channel_chosen()
    return image


def image_planes(path: str | Path, *, channel_axis: int | str | None = None) -> tuple[int, int, int]:
    """(planes, H, W) of an image file, read from its header only: a TIFF Z-stack or time series has
    as many planes as its declared T and Z axes hold together; every other image has one.

    Raises
    ------
    InputError
        As :func:`nucseg.io.opened.open_image`.
    """
    image = _open(path, channel_axis=channel_axis)
    return int(np.prod(image.plane_shape)), *image.shape


def image_shape(path: str | Path, *, channel_axis: int | str | None = None) -> tuple[int, int]:
    """(H, W) of a 2-D image file or Zarr store, read from its header only.

    Raises
    ------
    InputError
        As :func:`nucseg.io.opened.open_image`, or a Z-stack or time series.
    """
    image = _open(path, channel_axis=channel_axis)
    image.check_one_plane()
    return image.shape


def open_level_of_shape(path: str | Path, shape: tuple[int, ...]) -> OpenedImage:
    """The pyramid level of an image file whose height and width are ``shape``: the image that labels
    of that shape were made from (``nucseg segment --level``). Opens headers only, level 0 first.

    Parameters
    ----------
    path
        Image file or Zarr store (any that :func:`nucseg.io.opened.open_image` opens).
    shape
        ``(H, W)`` of the labels (a longer shape: its first two sizes).

    Returns
    -------
    OpenedImage
        The level, opened, not yet read.

    Raises
    ------
    InputError
        The file cannot be opened, or none of its levels is ``H x W``.
    """
    wanted = tuple(shape[:2])
    level = 0
    while True:
        try:
            opened = _open(path, level=level)
        except MissingLevelError:
            raise InputError(Path(path), f"has no resolution level of {wanted[0]} x {wanted[1]} pixels") from None
        if opened.shape == wanted:
            return opened
        level += 1

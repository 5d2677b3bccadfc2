"""Reading images and label images; writing label images and PNGs.

Images are returned as plain numpy arrays in their native dtype, shaped
``(H, W)`` for single-channel images or ``(H, W, C)`` with the channel axis
last. Nothing is guessed silently: a TIFF whose channel axis is not stated by
the file itself (RGB photometric samples, or an ImageJ/OME ``C`` axis) needs
an explicit ``channel_axis``.

:func:`read_image`, :func:`read_stack` and :func:`read_pixel_size` are the
everyday names of the one reader, :func:`nucseg.io.opened.open_image`; the
formats and their suffixes are in :mod:`nucseg.io.formats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nucseg.errors import first_line, InputError
from nucseg.io.atomic import atomic_write
from nucseg.io.channels import Channel
from nucseg.io.formats import check_readable_file, decode_pillow, IMAGE_SUFFIXES, TIFF_SUFFIXES
from nucseg.io.opened import image_pixel_size, ImageStack, open_image

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "ImageStack",
    "MaskCrop",
    "labels_dtype",
    "read_image",
    "read_label_stack",
    "read_labels",
    "read_mask_crop",
    "read_pixel_size",
    "read_stack",
    "write_labels",
    "write_png",
]


def read_image(
    path: str | Path,
    *,
    channel_axis: int | str | None = None,
    channel: Channel = None,
    palette_indices: bool = False,
) -> np.ndarray:
    """Read a PNG, JPEG or TIFF image.

    Parameters
    ----------
    path
        Image file.
    channel_axis
        Axis of the channels in a 3-D TIFF whose file does not declare it, for
        example a ``(C, H, W)`` stack of fluorescence channels, counted after
        length-1 axes are dropped. If the file declares its channel axis, a
        different ``channel_axis`` is an error. Ignored for 2-D images and for
        PNG and JPEG, whose channels are always last.
    channel
        The channel to return, of a multi-channel image: a number counted
        from 1 or a channel name stored in the file (see
        :mod:`nucseg.io.channels`). A multi-channel image that is not plain
        8-bit RGB(A) photography is refused without it.
    palette_indices
        Return the palette indices of a palette PNG (as for label images
        stored with a colour map) instead of its RGB(A) colours.

    Returns
    -------
    image : ndarray, shape (H, W) or (H, W, C)
        Native dtype (uint8, uint16, float32, ...), channels last. 1-bit
        images become uint8 0/255; CMYK JPEGs become RGB; the alpha channel of
        a gray + alpha PNG is dropped.

    Raises
    ------
    InputError
        The file is missing, empty, truncated, of an unsupported format, a
        multi-channel TIFF without a stated channel axis, or a multi-channel
        microscopy image without ``channel``.
    """
    return open_image(path, channel_axis=channel_axis, channel=channel, palette_indices=palette_indices).read()


@dataclass(frozen=True)
class MaskCrop:
    """The nonzero part of a mask image, as read by :func:`read_mask_crop`.

    Attributes
    ----------
    shape
        (H, W) of the whole mask image.
    slices
        Rows and columns of the bounding box of the nonzero pixels; None when
        the mask is empty.
    foreground : ndarray of bool, shape of the bounding box
        True where the mask is nonzero (palette index, or any colour channel;
        alpha is ignored).
    """

    shape: tuple[int, int]
    slices: tuple[slice, slice] | None
    foreground: np.ndarray


def read_mask_crop(path: str | Path) -> MaskCrop:
    """Read a binary mask as the bounding box of its nonzero pixels.

    Much faster than :func:`read_image` for masks that cover a small part of
    their image (one nucleus per file, as in DSB2018): for gray PNGs the box
    is found by Pillow and only its pixels become an array.

    Raises
    ------
    InputError
        As :func:`read_image`.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES and path.suffix.lower() in IMAGE_SUFFIXES:
        check_readable_file(path)

        def to_crop(im: Image.Image) -> MaskCrop | None:
            if im.mode not in ("1", "L", "I;16", "I"):
                return None
            shape = (im.height, im.width)
            box = im.getbbox()
            if box is None:
                return MaskCrop(shape, None, np.zeros((0, 0), dtype=bool))
            left, top, right, bottom = box
            return MaskCrop(shape, (slice(top, bottom), slice(left, right)), np.asarray(im.crop(box)) > 0)

        crop = decode_pillow(path, to_crop)
        if crop is not None:
            return crop
    mask = read_image(path, palette_indices=True)
    foreground = np.any(mask[..., :3] > 0, axis=-1) if mask.ndim == 3 else mask > 0
    rows, cols = np.nonzero(foreground.any(axis=1))[0], np.nonzero(foreground.any(axis=0))[0]
    if rows.size == 0:
        return MaskCrop(foreground.shape, None, np.zeros((0, 0), dtype=bool))
    slices = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return MaskCrop(foreground.shape, slices, foreground[slices])


def read_stack(path: str | Path, *, channel_axis: int | str | None = None, channel: Channel = None) -> ImageStack:
    """Read an image with all its planes: TIFF Z-stacks and time series that declare their Z and T axes
    (ImageJ hyperstacks, OME-TIFF), and 2-D images of every format as one plane.

    ``channel_axis`` and ``channel`` are as for :func:`read_image`, per plane.

    Raises
    ------
    InputError
        As :func:`read_image`.
    """
    return open_image(path, channel_axis=channel_axis, channel=channel).read_stack()


def read_labels(path: str | Path) -> np.ndarray:
    """Read an instance label image (0 background, 1..N objects).

    Palette PNGs give their palette indices; an RGB(A) file is accepted when
    its colour channels are equal (gray stored as RGB).

    Returns
    -------
    labels : ndarray of int32 (int64 above 2**31 - 1), shape (H, W)

    Raises
    ------
    InputError
        Unreadable file, more than one channel, or negative / non-integer values.
    """
    path = Path(path)
    image = read_image(path, palette_indices=True)
    if image.ndim == 3:
        channels = image[..., :3] if image.shape[2] == 4 else image
        if not all(np.array_equal(channels[..., 0], channels[..., c]) for c in range(1, channels.shape[2])):
            raise InputError(path, f"label image must have one channel, got shape {image.shape}")
        image = channels[..., 0]
    if image.dtype.kind == "f":
        if not np.all(np.isfinite(image)) or not np.all(np.mod(image, 1) == 0):
            raise InputError(path, "label image holds non-integer values")
    if image.dtype.kind in "if" and image.size and image.min() < 0:
        raise InputError(path, "label image holds negative values")
    if image.size and image.max() >= 2**63:
        raise InputError(path, "label image holds values too large for int64")
    return image.astype(np.int64 if image.max(initial=0) >= 2**31 else np.int32)


def read_label_stack(path: str | Path) -> np.ndarray:
    """Read a label image of one plane or a stack of planes (Z, T or pages a TIFF does not name).

    Returns
    -------
    labels : ndarray of int, shape (H, W), (P, H, W) or (T, Z, H, W)
        As stored, length-1 axes dropped (not squeezed below 2-D).

    Raises
    ------
    InputError
        Unreadable file, or values that are not non-negative integers.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return read_labels(path)
    import tifffile

    try:
        array = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(path, f"cannot decode TIFF ({first_line(exc)})") from None
    array = array.reshape([n for n in array.shape[:-2] if n > 1] + list(array.shape[-2:]))
    if array.dtype.kind not in "biu" or (array.dtype.kind == "i" and array.size and array.min() < 0):
        raise InputError(path, f"a label image holds non-negative integers, got {array.dtype} values")
    return array


def labels_dtype(labels: np.ndarray) -> np.dtype:
    """The smallest unsigned dtype (uint16 or uint32) that holds ``labels``."""
    return np.dtype(np.uint16) if int(labels.max(initial=0)) <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


def write_labels(path: str | Path, labels: np.ndarray, *, overwrite: bool = True, axes: str = "YX") -> Path:
    """Write an instance label image as a compressed TIFF, atomically.

    Parameters
    ----------
    path
        Output file; should end in ``.tif`` or ``.tiff``.
    labels : ndarray of int or bool, shape (H, W), or a stack such as (Z, H, W)
        0 for background, 1..N for objects. Stored as uint16, or uint32 when a
        label exceeds 65,535 (zlib-compressed TIFF).
    overwrite
        If False, refuse to replace an existing file (:class:`OutputExistsError`).
    axes
        The axis letters of a stack (``"ZYX"``, ``"TZYX"``), stored in the file
        so that readers (tifffile, Fiji) see its planes: an ImageJ hyperstack
        (uint16), or tifffile's shaped metadata (uint32, which ImageJ cannot hold).

    Raises
    ------
    ValueError
        ``labels`` is not a 2-D integer array of values in [0, 2**32 - 1].
    """
    import tifffile

    labels = np.asarray(labels)
    if labels.ndim != len(axes) or labels.ndim < 2:
        raise ValueError(f"labels of shape {labels.shape} do not match axes {axes!r}")
    if labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative")
    if int(labels.max(initial=0)) > np.iinfo(np.uint32).max:
        raise ValueError(f"labels must be at most {np.iinfo(np.uint32).max}, got {labels.max()}")
    data = labels.astype(labels_dtype(labels), copy=False)
    stack = {}
    if labels.ndim > 2:  # an ImageJ hyperstack, so that Fiji sees Z and T; ImageJ has no 32-bit integers
        stack = {"imagej": data.dtype == np.uint16, "metadata": {"axes": axes}}
    with atomic_write(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, data, compression="zlib", photometric="minisblack", **stack)
    return Path(path)


def write_png(path: str | Path, image: np.ndarray, *, overwrite: bool = True) -> Path:
    """Write an image as PNG, atomically.

    Parameters
    ----------
    image : ndarray
        uint8 of shape (H, W), (H, W, 3) or (H, W, 4); or uint16 of shape (H, W).
    overwrite
        If False, refuse to replace an existing file (:class:`OutputExistsError`).
    """
    from PIL import Image

    image = np.ascontiguousarray(image)
    gray = image.ndim == 2
    colour = image.ndim == 3 and image.shape[2] in (3, 4)
    if not ((image.dtype == np.uint8 and (gray or colour)) or (image.dtype == np.uint16 and gray)):
        raise ValueError(f"write_png takes uint8 (H, W), (H, W, 3|4) or uint16 (H, W); got {image.dtype} {image.shape}")
    with atomic_write(path, overwrite=overwrite) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return Path(path)


def read_pixel_size(path: str | Path) -> float | None:
    """The pixel size that a TIFF's OME or ImageJ metadata states, in microns; None if it states none.

    OME-TIFF: ``PhysicalSizeX`` in ``PhysicalSizeXUnit`` (µm by default).
    ImageJ/Fiji TIFF: the ``XResolution`` tag (pixels per unit) with the
    ``unit`` of the ImageJ description (micron, µm, nm, mm). Other files
    (and a resolution without a length unit, as in most PNGs and JPEGs)
    give None. :func:`nucseg.io.opened.image_pixel_size` reads OME-Zarr's too.
    """
    path = Path(path)
    return image_pixel_size(path) if path.suffix.lower() in TIFF_SUFFIXES else None

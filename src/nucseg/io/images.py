"""Reading images and label images; writing label images and PNGs.

Images are returned as plain numpy arrays in their native dtype, shaped
``(H, W)`` for single-channel images or ``(H, W, C)`` with the channel axis
last. Nothing is guessed silently: a TIFF whose channel axis is not stated by
the file itself (RGB photometric samples, or an ImageJ/OME ``C`` axis) needs
an explicit ``channel_axis``.

Pillow decodes PNG and JPEG, tifffile decodes TIFF. Pillow keeps only the
high byte of each sample of a 16-bit colour PNG; :func:`read_image` recovers
the full 16 bits (see :func:`_read_png_16bit_colour`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from nucseg.errors import first_line, InputError
from nucseg.io.atomic import atomic_write
from nucseg.io.channels import Channel, choose_channel, ChosenChannel, tiff_channel_names
from nucseg.io.axes import axis_roles, DECLARED_CHANNEL_AXES, tiff_series_axes
from nucseg.io.pixels import usable_channels

if TYPE_CHECKING:
    from PIL import Image

_T = TypeVar("_T")

#: TIFF and the TIFF-based formats tifffile reads (whole-slide images: Aperio SVS, Hamamatsu NDPI, Leica SCN,
#: Ventana BIF, PerkinElmer QPTIFF; BigTIFF), lower case: the first series, full resolution (level 0).
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif", ".qptiff", ".btf", ".tf8", ".tf2")
#: File suffixes that :func:`read_image` understands (lower case): the one list every reader and finder uses.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *TIFF_SUFFIXES)
#: Suffixes of formats that store pixel values exactly (usable for label images).
LOSSLESS_SUFFIXES = (".png", ".tif", ".tiff")


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
    return _read_2d(Path(path), channel_axis, channel, palette_indices=palette_indices).image


def _read_2d(path: Path, channel_axis: int | str | None, channel: Channel, *,
             palette_indices: bool = False) -> ChosenChannel:
    """:func:`read_image`, with the name of the channel chosen."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(
            path, f"unsupported image format {suffix or '(no suffix)'!r}; supported: {', '.join(IMAGE_SUFFIXES)}"
        )
    _check_readable_file(path)
    if suffix not in TIFF_SUFFIXES:
        image = _read_pillow(path, palette_indices=palette_indices)
        rgb_samples, names = True, None
    else:
        image, rgb_samples, names, _ = _read_tiff(path, channel_axis)
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise InputError(path, f"expected a 2-D image with optional channels, got shape {image.shape}")
    return choose_channel(path, image, 2, channel, names, rgb_samples=rgb_samples)


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "file does not exist")
    if not path.is_file():
        raise InputError(path, "not a file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise InputError(path, "file is not readable (permission denied)")


def _decode_pillow(path: Path, to_array: Callable[[Image.Image], _T]) -> _T | np.ndarray:
    """Decode ``path`` with Pillow and return ``to_array(image)``, translating Pillow's errors.

    A 16-bit colour PNG goes to :func:`_read_png_16bit_colour` instead.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open_pillow(path) as im:
            _check_png_can_hold(path, im)
            rawmode = _png_rawmode(im)
            if rawmode not in _PNG16_COLOUR_RAWMODES:
                im.load()
                return to_array(im)
    except UnidentifiedImageError:
        raise InputError(path, "not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"refused as a possible decompression bomb ({first_line(exc)}); if the image is "
                               "genuine, convert it to a tiled TIFF") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(path, f"cannot decode image ({first_line(exc)})") from None
    return _read_png_16bit_colour(path, rawmode)


def open_pillow(path: Path) -> Image.Image:
    """``PIL.Image.open(path)`` without Pillow's warning for images of 89-179 million pixels.

    nucseg checks such files itself (a PNG must be large enough for its
    header's pixels; the memory budget chooses how a large image is
    processed), so the warning would only be noise; Pillow still raises
    ``DecompressionBombError`` above that.
    """
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


#: Deflate's highest compression ratio: no PNG stores more raw bytes than this many times its size.
_DEFLATE_MAX_RATIO = 1032


def _check_png_can_hold(path: Path, im: Image.Image) -> None:
    """Refuse a PNG too small for the pixels its header claims (Pillow decodes the missing rows as 0)."""
    if im.format != "PNG":
        return
    width, height = im.size
    bits = 1 if im.mode in ("1", "P") else 8 * len(im.getbands())  # the fewest bits a pixel of the mode can take
    raw_bytes = height * (1 + -(-width * bits // 8))  # a filter byte, then the packed samples of each row
    if path.stat().st_size * _DEFLATE_MAX_RATIO < raw_bytes:
        raise InputError(path, f"truncated or corrupt: {path.stat().st_size} bytes cannot hold the "
                               f"{width} x {height} pixels its header states")


# Pillow decodes a 16-bit colour PNG into 8-bit modes, keeping the high byte of
# each sample. The raw modes below make its decoder take the low byte instead.
_PNG16_LOW_BYTE_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
_PNG16_COLOUR_RAWMODES = (*_PNG16_LOW_BYTE_RAWMODES, "LA;16B")


def _read_pillow(path: Path, *, palette_indices: bool) -> np.ndarray:
    def to_array(im: Image.Image) -> np.ndarray:
        if im.mode == "P" and palette_indices:
            pass
        elif im.mode in ("P", "PA"):
            im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
        elif im.mode in ("1", "LA"):
            im = im.convert("L")
        elif im.mode == "I;16B":
            im = im.convert("I;16")
        elif im.mode in ("CMYK", "YCbCr"):
            im = im.convert("RGB")
        return np.asarray(im)

    array = _decode_pillow(path, to_array)
    if array.dtype == np.int32 and array.size and array.min() >= 0 and array.max() < 2**16:
        array = array.astype(np.uint16)  # mode "I" of older Pillow versions for 16-bit gray PNGs
    return array


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
        _check_readable_file(path)

        def to_crop(im: Image.Image) -> MaskCrop | None:
            if im.mode not in ("1", "L", "I;16", "I"):
                return None
            shape = (im.height, im.width)
            box = im.getbbox()
            if box is None:
                return MaskCrop(shape, None, np.zeros((0, 0), dtype=bool))
            left, top, right, bottom = box
            return MaskCrop(shape, (slice(top, bottom), slice(left, right)), np.asarray(im.crop(box)) > 0)

        crop = _decode_pillow(path, to_crop)
        if crop is not None:
            return crop
    mask = read_image(path, palette_indices=True)
    foreground = np.any(mask[..., :3] > 0, axis=-1) if mask.ndim == 3 else mask > 0
    rows, cols = np.nonzero(foreground.any(axis=1))[0], np.nonzero(foreground.any(axis=0))[0]
    if rows.size == 0:
        return MaskCrop(foreground.shape, None, np.zeros((0, 0), dtype=bool))
    slices = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return MaskCrop(foreground.shape, slices, foreground[slices])


def _png_rawmode(im: object) -> str | None:
    if getattr(im, "format", None) != "PNG" or len(im.tile) != 1:
        return None
    args = im.tile[0][3]
    rawmode = args[0] if isinstance(args, tuple) else args
    return rawmode if isinstance(rawmode, str) else None


def _read_png_16bit_colour(path: Path, rawmode: str) -> np.ndarray:
    """Decode a 16-bit RGB, RGBA or gray + alpha PNG without losing the low byte.

    Pillow has no 16-bit colour modes. Its PNG decoder is run with raw modes
    of the same bits per pixel (so that PNG row filters are undone
    correctly) that unpack the high and the low byte of each sample;
    gray + alpha is unpacked as four bytes (gray high, gray low, alpha high,
    alpha low) and loses its alpha channel as 8-bit gray + alpha does.
    """
    if rawmode == "LA;16B":
        raw = _decode_with_rawmode(path, "RGBA").astype(np.uint16)
        return (raw[..., 0] << 8) | raw[..., 1]
    high = _decode_with_rawmode(path, rawmode).astype(np.uint16)
    low = _decode_with_rawmode(path, _PNG16_LOW_BYTE_RAWMODES[rawmode])
    return (high << 8) | low


def _decode_with_rawmode(path: Path, rawmode: str) -> np.ndarray:
    try:
        with open_pillow(path) as im:
            codec, extents, offset, _ = im.tile[0]
            im.tile = [(codec, extents, offset, rawmode)]
            im.load()
            return np.asarray(im)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(path, f"cannot decode 16-bit PNG ({first_line(exc)})") from None


def _read_tiff(path: Path, channel_axis: int | str | None, *,
               planes: bool = False) -> tuple[np.ndarray, bool, list[str] | None, str]:
    """The image, axes ordered (T, Z,) Y, X(, C); whether its channels are RGB samples (``S``, not an
    ImageJ/OME ``C`` axis); its channel names if stored; its plane axes ("", "Z", "T" or "TZ")."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = tiff_series_axes(series.shape, series.axes)
            if not any(count for page in series.pages if page is not None for count in page.databytecounts):
                raise InputError(path, "holds no pixel data (every strip or tile is empty): truncated or corrupt")
            array = series.asarray()
            roles = axis_roles(path, array.shape, axes, DECLARED_CHANNEL_AXES, channel_axis, planes=planes)
            count = next((n for n, role in zip(array.shape, roles) if role == "c"), 1)
            names = tiff_channel_names(tif, count) if count > 1 else None
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(path, f"cannot decode TIFF ({first_line(exc)})") from None
    rgb_samples = next((axis for axis, role in zip(axes, roles) if role == "c"), "") == "S"
    kept = [role for role in roles if role]
    array = array.reshape([n for n, role in zip(array.shape, roles) if role])
    order = [axis for axis in ("t", "z", "y", "x", "c") if axis in kept]
    plane_axes = "".join(axis.upper() for axis in order if axis in "tz")
    return np.transpose(array, [kept.index(axis) for axis in order]), rgb_samples, names, plane_axes


@dataclass(frozen=True)
class ImageStack:
    """An image's planes: a Z-stack, a time series, or both; a 2-D image is one plane.

    Attributes
    ----------
    planes : ndarray, shape (P, H, W) or (P, H, W, C)
        Every plane, in the file's order (T slowest), channels last.
    plane_shape
        The sizes of the plane axes: ``(T, Z)``, ``(Z,)``, ``(T,)`` or ``()``
        for a 2-D image, whose product is P.
    plane_axes
        Their letters: ``"TZ"``, ``"Z"``, ``"T"`` or ``""``.
    channel_name
        What measurements call the one channel chosen of several
        (:func:`nucseg.io.channels.channel_labels`), or None when every
        channel is kept.
    channels : ndarray, shape (P, H, W, C), optional
        Every channel of every plane, when one channel was chosen for
        ``planes``: measurements take the intensities of all of them.
    channel_names
        What measurements call each channel of ``channels``.
    """

    planes: np.ndarray
    plane_shape: tuple[int, ...]
    plane_axes: str
    channel_name: str | None = None
    channels: np.ndarray | None = None
    channel_names: tuple[str, ...] = ()

    def intensities(self) -> tuple[np.ndarray, list[str] | None]:
        """The planes to measure intensities on, (P, H, W) or (P, H, W, C), and their channels' names.

        Every channel of the file when one was chosen, named; otherwise
        ``planes`` and None (channels by position).
        """
        if self.channels is None:
            return self.planes, None
        return self.channels, list(self.channel_names)

    def plane_names(self) -> list[str]:
        """``"z=3"``, ``"t=0,z=3"``, ... for every plane (``""`` for the one plane of a 2-D image)."""
        return [",".join(f"{axis.lower()}={i}" for axis, i in zip(self.plane_axes, index))
                for index in np.ndindex(*self.plane_shape)] if self.plane_axes else [""]


def read_stack(path: str | Path, *, channel_axis: int | str | None = None, channel: Channel = None) -> ImageStack:
    """Read an image with all its planes: TIFF Z-stacks and time series that declare their Z and T axes
    (ImageJ hyperstacks, OME-TIFF), and 2-D images of every format as one plane.

    ``channel_axis`` and ``channel`` are as for :func:`read_image`, per plane.

    Raises
    ------
    InputError
        As :func:`read_image`.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        chosen = usable_channels(_read_2d(path, channel_axis, channel), path)
        every = None if chosen.every_channel is None else chosen.every_channel[None]
        return ImageStack(chosen.image[None], (), "", chosen.name, every, chosen.channel_names)
    _check_readable_file(path)
    array, rgb_samples, names, plane_axes = _read_tiff(path, channel_axis, planes=True)
    plane_shape = array.shape[:len(plane_axes)]
    planes = array.reshape((-1, *array.shape[len(plane_axes):]))
    chosen = usable_channels(choose_channel(path, planes, 3, channel, names, rgb_samples=rgb_samples), path)
    return ImageStack(chosen.image, tuple(int(n) for n in plane_shape), plane_axes, chosen.name,
                      chosen.every_channel, chosen.channel_names)


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
        raise ValueError(
            f"write_png takes uint8 (H, W), (H, W, 3|4) or uint16 (H, W); got {image.dtype} {image.shape}"
        )
    with atomic_write(path, overwrite=overwrite) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return Path(path)


#: Microns per unit of the length units that OME, ImageJ and OME-Zarr (NGFF) metadata use.
MICRONS_PER_UNIT = {"um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
                    "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6,
                    "meter": 1e6, "angstrom": 1e-4}


def read_pixel_size(path: str | Path) -> float | None:
    """The pixel size that a TIFF's OME or ImageJ metadata states, in microns; None if it states none.

    OME-TIFF: ``PhysicalSizeX`` in ``PhysicalSizeXUnit`` (µm by default).
    ImageJ/Fiji TIFF: the ``XResolution`` tag (pixels per unit) with the
    ``unit`` of the ImageJ description (micron, µm, nm, mm). Other files
    (and a resolution without a length unit, as in most PNGs and JPEGs)
    give None.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome and tif.ome_metadata:
                return _ome_pixel_size(tif.ome_metadata)
            if tif.is_imagej and tif.imagej_metadata:
                unit = str(tif.imagej_metadata.get("unit", "")).strip().lower().replace("\\u00b5", "µ")
                tag = tif.pages.first.tags.get("XResolution")
                if unit in MICRONS_PER_UNIT and tag is not None:
                    numerator, denominator = tag.value
                    if numerator > 0 and denominator > 0:
                        return float(denominator / numerator * MICRONS_PER_UNIT[unit])
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(path, f"cannot read TIFF metadata ({first_line(exc)})") from None
    return None


def _ome_pixel_size(ome_xml: str) -> float | None:
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return None
    pixels = next((node for node in root.iter() if node.tag.endswith("}Pixels")), None)
    if pixels is None or pixels.get("PhysicalSizeX") is None:
        return None
    unit = pixels.get("PhysicalSizeXUnit", "µm").strip().lower()
    size = float(pixels.get("PhysicalSizeX"))
    return size * MICRONS_PER_UNIT[unit] if unit in MICRONS_PER_UNIT and size > 0 else None

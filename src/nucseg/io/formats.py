"""The image file formats nucseg reads: the one suffix list, Zarr stores, and decoding PNG and JPEG.

Pillow decodes PNG and JPEG, tifffile decodes TIFF (:mod:`nucseg.io.opened`).
Pillow keeps only the high byte of each sample of a 16-bit colour PNG;
:func:`read_pillow` recovers the full 16 bits (see :func:`_read_png_16bit_colour`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from nucseg.errors import first_line, InputError

if TYPE_CHECKING:
    from PIL import Image

_T = TypeVar("_T")

#: TIFF-based whole-slide formats (Aperio SVS, Hamamatsu NDPI, Leica SCN, Ventana BIF, PerkinElmer QPTIFF), lower
#: case: their resolution tags state the pixel size.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".qptiff")
#: TIFF and the TIFF-based formats tifffile reads (the slides, BigTIFF), lower case: the first series, full
#: resolution (level 0) unless a level is asked for.
TIFF_SUFFIXES = (".tif", ".tiff", *SLIDE_SUFFIXES, ".btf", ".tf8", ".tf2")
#: File suffixes of the image files nucseg reads (lower case): the one list every reader and finder uses.
#: Zarr stores are folders, recognised by :func:`is_zarr`.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *TIFF_SUFFIXES)
#: Suffixes of formats that store pixel values exactly (usable for label images).
LOSSLESS_SUFFIXES = (".png", ".tif", ".tiff")
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")

#: Microns per unit of the length units that OME, ImageJ and OME-Zarr (NGFF) metadata use.
MICRONS_PER_UNIT = {
    "um": 1.0,
    "\u00b5m": 1.0,
    "\u03bcm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "angstrom": 1e-4,
}


def is_zarr(path: str | Path) -> bool:
    """True if ``path`` is a Zarr store (a folder with Zarr metadata)."""
    path = Path(path)
    return path.is_dir() and any((path / marker).is_file() for marker in _ZARR_MARKERS)


def check_image_file(path: Path) -> None:
    """Refuse, in one line, a path that is no image file nucseg reads: its suffix, missing, empty or unreadable."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(
            path, f"unsupported image format {suffix or '(no suffix)'!r}; supported: {', '.join(IMAGE_SUFFIXES)}"
        )
    check_readable_file(path)


def check_readable_file(path: Path) -> None:
    """Refuse a path that does not exist, is not a file, is empty or cannot be read."""
    if not path.exists():
        raise InputError(path, "file does not exist")
    if not path.is_file():
        raise InputError(path, "not a file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise InputError(path, "file is not readable (permission denied)")


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


@contextlib.contextmanager
def pillow_errors(path: Path) -> Iterator[None]:
    """Pillow's errors about ``path`` as one-line :class:`InputError`\\ s."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except UnidentifiedImageError:
        raise InputError(path, "not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        raise InputError(
            path,
            f"refused as a possible decompression bomb ({first_line(exc)}); if the image is "
            "genuine, convert it to a tiled TIFF",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(path, f"cannot decode image ({first_line(exc)})") from None


@contextlib.contextmanager
def pillow_header(path: Path) -> Iterator[Image.Image]:
    """The image ``path`` opened with Pillow, its header checked (a PNG must hold the pixels it states),
    its pixels not decoded; Pillow's errors as :func:`pillow_errors`."""
    with pillow_errors(path), open_pillow(path) as im:
        _check_png_can_hold(path, im)
        yield im


def decode_pillow(path: Path, to_array: Callable[[Image.Image], _T]) -> _T | np.ndarray:
    """Decode ``path`` with Pillow and return ``to_array(image)``, translating Pillow's errors.

    A 16-bit colour PNG goes to :func:`_read_png_16bit_colour` instead.
    """
    with pillow_header(path) as im:
        rawmode = png_rawmode(im)
        if rawmode not in PNG16_COLOUR_CHANNELS:
            im.load()
            return to_array(im)
    return _read_png_16bit_colour(path, rawmode)


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
        raise InputError(
            path,
            f"truncated or corrupt: {path.stat().st_size} bytes cannot hold the "
            f"{width} x {height} pixels its header states",
        )


# Pillow decodes a 16-bit colour PNG into 8-bit modes, keeping the high byte of
# each sample. The raw modes below make its decoder take the low byte instead.
_PNG16_LOW_BYTE_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
#: The raw modes of 16-bit colour PNGs, and the channels :func:`read_pillow` gives them (gray + alpha: one).
PNG16_COLOUR_CHANNELS = {"RGB;16B": 3, "RGBA;16B": 4, "LA;16B": 1}


def pillow_layout(im: Image.Image, *, palette_indices: bool = False) -> tuple[np.dtype, int]:
    """The dtype and the number of channels of what :func:`read_pillow` makes of ``im``, from its header."""
    rawmode = png_rawmode(im)
    if rawmode in PNG16_COLOUR_CHANNELS:
        return np.dtype(np.uint16), PNG16_COLOUR_CHANNELS[rawmode]
    mode = im.mode
    if mode == "P":
        return np.dtype(np.uint8), 1 if palette_indices else 4 if "transparency" in im.info else 3
    if mode in ("1", "L", "LA"):
        return np.dtype(np.uint8), 1
    if mode.startswith("I;16"):
        return np.dtype(np.uint16), 1
    if mode in ("I", "F"):
        return np.dtype(np.int32 if mode == "I" else np.float32), 1
    if mode in ("CMYK", "YCbCr"):
        return np.dtype(np.uint8), 3
    return np.dtype(np.uint8), len(im.getbands())


def read_pillow(path: Path, *, palette_indices: bool) -> np.ndarray:
    """A PNG or JPEG as an array (H, W) or (H, W, C): 1-bit images as uint8 0/255, CMYK as RGB, the alpha
    channel of gray + alpha dropped; palette images as their colours, or their indices with ``palette_indices``."""

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

    array = decode_pillow(path, to_array)
    if array.dtype == np.int32 and array.size and array.min() >= 0 and array.max() < 2**16:
        array = array.astype(np.uint16)  # mode "I" of older Pillow versions for 16-bit gray PNGs
    return array


def png_rawmode(im: object) -> str | None:
    """The raw mode Pillow decodes a PNG's pixels with (None for other formats)."""
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

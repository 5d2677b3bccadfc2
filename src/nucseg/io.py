"""Reading images and label images, and writing outputs atomically.

Images are returned as plain numpy arrays in their native dtype, shaped
``(H, W)`` for single-channel images or ``(H, W, C)`` with the channel axis
last. Nothing is guessed silently: a TIFF whose channel axis is not stated by
the file itself (RGB photometric, or a 2-D page) needs an explicit
``channel_axis``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nucseg.errors import InputError

#: File suffixes that :func:`read_image` understands (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_TIFF_SUFFIXES = (".tif", ".tiff")


def is_image_file(path: str | Path) -> bool:
    """Return True if ``path`` has a suffix that :func:`read_image` reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | Path, *, channel_axis: int | None = None) -> np.ndarray:
    """Read a PNG, JPEG or TIFF image.

    Parameters
    ----------
    path
        Image file.
    channel_axis
        Axis of the channels in a multi-channel TIFF whose layout the file does
        not declare (for example a ``(C, H, W)`` stack of fluorescence
        channels). Ignored for PNG and JPEG, whose channels are always last.

    Returns
    -------
    image : ndarray, shape (H, W) or (H, W, C)
        Native dtype (uint8, uint16, float32, ...), channels last.

    Raises
    ------
    InputError
        The file is missing, empty, truncated, of an unsupported format, or a
        multi-channel TIFF without a stated channel axis.
    """
    path = Path(path)
    _check_readable_file(path)
    suffix = path.suffix.lower()
    if suffix in _TIFF_SUFFIXES:
        image = _read_tiff(path, channel_axis)
    elif suffix in IMAGE_SUFFIXES:
        image = _read_pillow(path)
    else:
        raise InputError(
            path, f"unsupported image format {suffix or '(no suffix)'!r}; "
            f"supported: {', '.join(IMAGE_SUFFIXES)}"
        )
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise InputError(path, f"expected a 2-D image with optional channels, got shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "file does not exist")
    if not path.is_file():
        raise InputError(path, "not a file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
            elif im.mode == "I;16B":
                im = im.convert("I;16")
            elif im.mode in ("LA",):
                im = im.convert("L")
            array = np.asarray(im)
    except UnidentifiedImageError:
        raise InputError(path, "not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"cannot decode image ({_first_line(exc)})") from None
    if array.dtype == np.int32:  # Pillow's mode "I" for 16-bit PNGs
        array = array.astype(np.uint16) if array.min() >= 0 and array.max() < 2**16 else array
    return array


def _read_tiff(path: Path, channel_axis: int | None) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array = series.asarray()
            photometric = tif.pages[0].photometric
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(path, f"cannot decode TIFF ({_first_line(exc)})") from None
    array = np.squeeze(array)
    if array.ndim == 2:
        return array
    if channel_axis is not None:
        if array.ndim != 3:
            raise InputError(path, f"TIFF has shape {array.shape}; only 2-D images with one channel axis are supported")
        try:
            return np.moveaxis(array, channel_axis, -1)
        except np.exceptions.AxisError:
            raise InputError(path, f"channel axis {channel_axis} is out of range for shape {array.shape}") from None
    if array.ndim == 3 and photometric == tifffile.PHOTOMETRIC.RGB and array.shape[-1] in (3, 4):
        return array
    raise InputError(
        path,
        f"multi-channel TIFF of shape {array.shape} without a declared channel axis; "
        "pass channel_axis (CLI: --channel-axis)",
    )


def read_labels(path: str | Path) -> np.ndarray:
    """Read an instance label image (0 background, 1..N objects).

    Returns
    -------
    labels : ndarray of int32 or int64, shape (H, W)

    Raises
    ------
    InputError
        Unreadable file, more than one channel, or negative / non-integer values.
    """
    path = Path(path)
    image = read_image(path)
    if image.ndim == 3:
        channels = image[..., :3] if image.shape[2] == 4 else image
        if not all(np.array_equal(channels[..., 0], channels[..., c]) for c in range(1, channels.shape[2])):
            raise InputError(path, f"label image must have one channel, got shape {image.shape}")
        image = channels[..., 0]
    if image.dtype.kind == "f":
        if not np.all(np.mod(image, 1) == 0):
            raise InputError(path, "label image holds non-integer values")
    if image.dtype.kind in "if" and image.size and image.min() < 0:
        raise InputError(path, "label image holds negative values")
    return image.astype(np.int64 if image.max(initial=0) >= 2**31 else np.int32)


def labels_dtype(labels: np.ndarray) -> np.dtype:
    """The smallest unsigned dtype (uint16 or uint32) that holds ``labels``."""
    return np.dtype(np.uint16) if int(labels.max(initial=0)) <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


def write_labels(path: str | Path, labels: np.ndarray, *, overwrite: bool = True) -> Path:
    """Write an instance label image as a compressed TIFF, atomically.

    Parameters
    ----------
    path
        Output file; should end in ``.tif`` or ``.tiff``.
    labels : ndarray of int, shape (H, W)
        0 for background, 1..N for objects. Stored as uint16, or uint32 when
        more than 65,535 labels are used.
    overwrite
        If False, refuse to replace an existing file.
    """
    import tifffile

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative")
    data = labels.astype(labels_dtype(labels), copy=False)
    with atomic_write(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, data, compression="zlib", photometric="minisblack")
    return Path(path)


def write_png(path: str | Path, image: np.ndarray, *, overwrite: bool = True) -> Path:
    """Write a uint8 (H, W) or (H, W, 3|4) array as PNG, atomically."""
    from PIL import Image

    with atomic_write(path, overwrite=overwrite) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
    return Path(path)


@contextlib.contextmanager
def atomic_write(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    A reader never sees a half-written file, and a failure (or a kill) leaves
    no partial output under the final name. The temporary file keeps the
    suffix of ``path`` so that writers that choose a format by suffix work.

    Raises
    ------
    FileExistsError
        ``overwrite`` is False and ``path`` exists.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

"""Images larger than memory, read region by region (TIFF through tifffile's Zarr interface, Zarr stores)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg.errors import first_line, InputError
from nucseg.io.channels import Channel, channel_index, channel_labels, is_photographic, tiff_channel_names
from nucseg.io.axes import axis_roles, DECLARED_CHANNEL_AXES, tiff_series_axes
from nucseg.io.images import open_pillow, read_pixel_size, TIFF_SUFFIXES
from nucseg.io.ngff import ngff_metadata, NgffMetadata
from nucseg.io.pixels import usable_pixels

_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


@dataclass(frozen=True)
class LazyImage:
    """A TIFF or Zarr image read region by region.

    Get one from :func:`open_image`. Picklable (it holds the path, not an
    open file), so tasks on other machines open the file themselves.

    Attributes
    ----------
    path
        TIFF file or Zarr store.
    shape
        (H, W) in pixels.
    channels
        Number of channels read, or 0 for a single-channel image (or one
        channel chosen of several).
    dtype
        Pixel dtype.
    channel_names
        What measurements call each channel of the file, when one was
        chosen (see :meth:`every_channel`).
    """

    path: Path
    shape: tuple[int, int]
    channels: int
    dtype: np.dtype
    _kind: str
    _array_path: str
    _axes: tuple[str, ...]  # per stored axis: "y", "x", "c", or "" for a length-1 axis that is dropped
    _channel: int | None = None  # the one channel read (0-based), or None for all
    _letters: str = ""  # the stored axes' letters (tifffile's, or Q for unnamed)
    channel_names: tuple[str, ...] = ()

    @property
    def channel_name(self) -> str | None:
        """What measurements call the one channel chosen of several, or None."""
        return None if self._channel is None or not self.channel_names else self.channel_names[self._channel]

    def every_channel(self) -> LazyImage:
        """The same image with every channel read: what measurements take their intensities from."""
        if self._channel is None:
            return self
        return dataclasses.replace(self, channels=len(self.channel_names), _channel=None)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """Pixels of ``image[rows, cols]``: shape (h, w) or (h, w, C), native dtype."""
        channels = slice(None) if self._channel is None else self._channel
        selection = tuple({"y": rows, "x": cols, "c": channels}.get(axis, 0) for axis in self._axes)
        kept = [axis for axis in self._axes if axis and (axis != "c" or self._channel is None)]
        array = self._open()
        try:
            data = np.asarray(array[selection])
        finally:
            self._close(array)
        order = [kept.index(axis) for axis in ("y", "x", "c") if axis in kept]
        region = f"rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}"
        return usable_pixels(np.ascontiguousarray(np.transpose(data, order)), self.path, region=region)

    def _open(self):
        import zarr

        if self._kind == "tiff":
            import tifffile

            store = tifffile.imread(self.path, aszarr=True, series=0, level=0)
            return zarr.open_array(store, mode="r")
        return zarr.open_array(str(self.path / self._array_path) if self._array_path else str(self.path), mode="r")

    def _close(self, array) -> None:
        store = getattr(array, "store", None)
        close = getattr(store, "close", None)
        if self._kind == "tiff" and close is not None:
            close()


def is_zarr(path: str | Path) -> bool:
    """True if ``path`` is a Zarr store (a folder with Zarr metadata)."""
    path = Path(path)
    return path.is_dir() and any((path / marker).is_file() for marker in _ZARR_MARKERS)


def open_image(path: str | Path, *, channel_axis: int | str | None = None, channel: Channel = None) -> LazyImage:
    """Open a TIFF or Zarr image for reading region by region.

    TIFFs follow the rules of :func:`nucseg.io.images.read_image` (length-1 axes
    dropped; the channel axis declared by the file or given). For fast
    block reads the TIFF should be tiled (as microscopy slides and
    pyramidal OME-TIFFs are); a TIFF stored in one strip is decoded whole
    for every block. Zarr: an array, or an OME-Zarr image group (its
    full-resolution level); a 3-D array needs ``channel_axis`` unless
    OME-Zarr metadata names its channel axis.

    Parameters
    ----------
    path
        ``.tif``/``.tiff`` file or Zarr folder.
    channel_axis
        Channel axis of a 3-D image whose file does not declare it, counted
        after length-1 axes are dropped.
    channel
        The one channel to read of a multi-channel image (1-based, or a name
        the TIFF's metadata states; see :mod:`nucseg.io.channels`). Needed for
        any multi-channel image but 8-bit RGB(A) (a Zarr store states no
        photometric interpretation: 8-bit with 3 or 4 channels counts as RGB(A)).

    Raises
    ------
    InputError
        Missing or unreadable file, not 2-D with optional channels, an
        undeclared channel axis, or no ``channel`` for a multi-channel
        microscopy image.
    """
    path = Path(path)
    image = _open_all_channels(path, channel_axis)
    if image.channels == 0:
        return image if channel is None else dataclasses.replace(
            image, _channel=channel_index(path, channel, 1, None, photographic=False))
    letter = next((axis for axis, role in zip(image._letters, image._axes) if role == "c"), "")
    photographic = is_photographic(image.channels, image.dtype, rgb_samples=image._kind == "zarr" or letter == "S")
    names = _tiff_names(path, image.channels) if image._kind == "tiff" else _zarr_metadata(path).channel_names or None
    index = channel_index(path, channel, image.channels, names, photographic=photographic)
    return image if index is None else dataclasses.replace(image, channels=0, _channel=index,
                                                           channel_names=channel_labels(image.channels, names))


def image_planes(path: str | Path, *, channel_axis: int | str | None = None) -> tuple[int, int, int]:
    """(planes, H, W) of an image file, read from its header only: a TIFF Z-stack or time series has
    as many planes as its declared T and Z axes hold together; every other image has one.

    Raises
    ------
    InputError
        As :func:`image_shape`.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or is_zarr(path):
        return (1, *image_shape(path, channel_axis=channel_axis))
    if not path.is_file():
        raise InputError(path, "file does not exist")
    shape, _, axes, declared = _tiff_layout(path)
    roles = axis_roles(path, shape, axes, declared, channel_axis, planes=True)
    sizes = {role: n for n, role in zip(shape, roles) if role}
    return int(np.prod([n for n, role in zip(shape, roles) if role in ("t", "z")])), sizes["y"], sizes["x"]


def _open_all_channels(path: Path, channel_axis: int | str | None) -> LazyImage:
    if not path.exists():
        raise InputError(path, "file does not exist")
    if is_zarr(path):
        shape, dtype, axes, array_path, declared = _zarr_layout(path)
        kind = "zarr"
    elif path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        shape, dtype, axes, declared = _tiff_layout(path)
        array_path, kind = "", "tiff"
    else:
        raise InputError(path, "block-wise reading needs a TIFF file or a Zarr store")
    roles = axis_roles(path, shape, axes, declared, channel_axis)
    kept_shape = [n for n, role in zip(shape, roles) if role]
    by_role = dict(zip([role for role in roles if role], kept_shape))
    return LazyImage(path, (by_role["y"], by_role["x"]), by_role.get("c", 0), np.dtype(dtype), kind, array_path,
                     tuple(roles), None, axes)


def _tiff_names(path: Path, count: int) -> list[str] | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tiff_channel_names(tif, count)


def _tiff_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, str, str]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), series.dtype, tiff_series_axes(series.shape, series.axes), \
                DECLARED_CHANNEL_AXES
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(path, f"cannot read TIFF ({first_line(exc)})") from None


def _zarr_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, str, str, str]:
    """Shape, dtype, axis letters, array path inside the store, and which letters declare channels."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputError(path, f"cannot open Zarr store ({first_line(exc)})") from None
    if hasattr(node, "shape"):
        return tuple(node.shape), node.dtype, "Q" * len(node.shape), "", ""
    attributes = dict(node.attrs)
    multiscales = attributes.get("multiscales") or attributes.get("ome", {}).get("multiscales")
    if not multiscales:
        arrays = sorted(name for name, _ in node.arrays())
        raise InputError(path, "Zarr group without OME-Zarr multiscales metadata; give the path of one of its "
                               f"arrays ({', '.join(arrays) or 'it has none'})")
    try:
        dataset = multiscales[0]["datasets"][0]["path"]
        names = [axis["name"] if isinstance(axis, dict) else str(axis) for axis in multiscales[0]["axes"]]
        array = node[dataset]
    except (KeyError, IndexError, TypeError) as exc:
        raise InputError(path, f"malformed OME-Zarr multiscales metadata ({first_line(exc)})") from None
    letters = "".join({"y": "Y", "x": "X", "c": "C", "z": "Z", "t": "T"}.get(name.lower(), "Q") for name in names)
    if len(letters) != array.ndim:
        raise InputError(path, f"OME-Zarr names {len(letters)} axes for an array of {array.ndim} dimensions")
    return tuple(array.shape), array.dtype, letters, dataset, "C"


def _zarr_metadata(path: Path) -> NgffMetadata:
    """The channel names and pixel size an OME-Zarr image group states (none for a plain array)."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputError(path, f"cannot open Zarr store ({first_line(exc)})") from None
    return NgffMetadata() if hasattr(node, "shape") else ngff_metadata(dict(node.attrs))


def image_pixel_size(path: str | Path) -> float | None:
    """Microns per pixel that an image file states: OME-Zarr's ``scale`` transform, or a TIFF's OME or
    ImageJ metadata (:func:`nucseg.io.images.read_pixel_size`); None where it states none."""
    path = Path(path)
    return _zarr_metadata(path).pixel_size if is_zarr(path) else read_pixel_size(path)


def image_shape(path: str | Path, *, channel_axis: int | str | None = None) -> tuple[int, int]:
    """(H, W) of an image file or Zarr store, read from its header only.

    Raises
    ------
    InputError
        As :func:`open_image`, or an unreadable PNG/JPEG.
    """
    path = Path(path)
    if is_zarr(path) or path.suffix.lower() in TIFF_SUFFIXES:
        return _open_all_channels(path, channel_axis).shape
    from PIL import Image, UnidentifiedImageError

    try:
        with open_pillow(path) as im:
            return im.height, im.width
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"refused as a possible decompression bomb ({first_line(exc)})") from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(path, f"cannot read image header ({first_line(exc)})") from None

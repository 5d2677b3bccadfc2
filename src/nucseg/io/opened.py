"""The one image reader: a file opened once for what it holds, then read whole or region by region.

:func:`open_image` opens a PNG, JPEG, TIFF (ImageJ, OME, plain, and the
TIFF-based slide formats of :data:`nucseg.io.formats.TIFF_SUFFIXES`) or Zarr
store (an array, or an OME-Zarr image, NGFF 0.4 or 0.5) once: its header and
metadata, not its pixels. It applies the one set of axis rules
(:func:`nucseg.io.axes.axis_roles`: the axes the file declares, or
``channel_axis`` / ``axes``) and the channel choice
(:mod:`nucseg.io.channels`). The :class:`OpenedImage` it returns knows the
image's shape, axes, dtype, channel names and pixel size, and reads its
pixels whole (:meth:`OpenedImage.read`, :meth:`OpenedImage.read_stack`) or
by region (``read(rows, cols)``), opening the file again for them: it holds
the path, not an open file, so it pickles to other processes and machines.

Whole reads follow :func:`nucseg.io.images.read_image` (the stored values)
and :func:`nucseg.io.images.read_stack` (their pixels checked by
:func:`nucseg.io.pixels.usable_pixels`); region reads are checked as
:func:`~nucseg.io.images.read_stack`'s, naming the region.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nucseg.errors import first_line, InputError
from nucseg.io.axes import axis_roles, DECLARED_CHANNEL_AXES, tiff_series_axes
from nucseg.io.channels import (
    Channel,
    channel_index,
    ChosenChannel,
    channel_labels,
    choose_channel,
    is_photographic,
    names_of_channels,
    tiff_stated_names,
)
from nucseg.io.formats import (
    check_image_file,
    is_zarr,
    MICRONS_PER_UNIT,
    pillow_header,
    pillow_layout,
    read_pillow,
    SLIDE_SUFFIXES,
    TIFF_SUFFIXES,
)
from nucseg.io.ngff import ngff_metadata
from nucseg.io.pixels import usable_channels, usable_pixels


@dataclass(frozen=True)
class _Stored:
    """What a file states, before any axis or channel rule."""

    kind: str  # "pillow", "tiff" or "zarr"
    shape: tuple[int, ...]
    letters: str  # per stored axis: tifffile's letter, OME-Zarr's name as a letter, or Q for unknown
    declared: str  # the letters that declare a channel axis
    dtype: np.dtype
    names: tuple[str, ...] = ()  # channel names as the metadata states them
    names_per_plane: bool = False  # ImageJ Labels: one per plane
    pixel_size: float | None = None
    pixel_size_error: str = ""  # metadata whose pixel size could not be read: said when it is asked for
    array_path: str = ""  # of a Zarr image group: the array of the level read
    level: int = 0
    palette_indices: bool = False


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
        return (
            [
                ",".join(f"{axis.lower()}={i}" for axis, i in zip(self.plane_axes, index))
                for index in np.ndindex(*self.plane_shape)
            ]
            if self.plane_axes
            else [""]
        )


@dataclass(frozen=True)
class OpenedImage:
    """An image file opened by :func:`open_image`: what it holds, and its pixels on demand.

    Attributes
    ----------
    path
        The file, or Zarr store.
    shape
        (H, W) in pixels (of the level opened).
    channels
        Number of channels read, or 0 for a single-channel image (or one
        channel chosen of several).
    dtype
        Pixel dtype as stored (a PNG's: as :meth:`read` gives it).
    plane_shape
        Sizes of the plane axes, ``(T, Z)``, ``(Z,)``, ``(T,)`` or ``()``.
    plane_axes
        Their letters: ``"TZ"``, ``"Z"``, ``"T"`` or ``""`` for a 2-D image.
    channel_names
        What measurements call each channel of the file (its names, or
        ``ch1``, ``ch2``, ...), when one was chosen (see :meth:`every_channel`).
    """

    path: Path
    shape: tuple[int, int]
    channels: int
    dtype: np.dtype
    plane_shape: tuple[int, ...]
    plane_axes: str
    _stored: _Stored = field(repr=False)
    _roles: tuple[str, ...] = field(repr=False)  # per stored axis: "t", "z", "y", "x", "c" or "" (dropped)
    _layout: int | str | None = field(default=None, repr=False)  # the channel_axis or axes given
    _channel: int | None = field(default=None, repr=False)  # the one channel read (0-based), or None for all
    _every: bool = field(default=False, repr=False)  # every channel asked for (measurements), chosen or not
    channel_names: tuple[str, ...] = ()

    @property
    def axes(self) -> str:
        """The axes of what :meth:`read_stack` reads: plane axes, then ``YX``, then ``C`` with channels."""
        return self.plane_axes + "YX" + ("C" if self.channels else "")

    @property
    def lazy(self) -> bool:
        """Whether a region is read without decoding the whole image (TIFF, Zarr; not PNG or JPEG)."""
        return self._stored.kind != "pillow"

    @property
    def pixel_size(self) -> float | None:
        """Microns per pixel that the file states, of the level opened; None where it states none.

        OME-TIFF: ``PhysicalSizeX`` in ``PhysicalSizeXUnit`` (µm by default).
        ImageJ/Fiji TIFF: the ``XResolution`` tag (pixels per unit) with the
        ``unit`` of the ImageJ description. Aperio SVS: ``MPP`` in its
        description. Other slide formats (NDPI, SCN, ...): the ``XResolution``
        tag in pixels per centimetre. OME-Zarr: the ``scale``
        transform along ``x`` with its axis unit. PNG and JPEG: None.

        Raises
        ------
        InputError
            Metadata that states a pixel size that cannot be read.
        """
        if self._stored.pixel_size_error:
            raise InputError(self.path, f"cannot read TIFF metadata ({self._stored.pixel_size_error})")
        return self._stored.pixel_size

    @property
    def stated_channel_names(self) -> tuple[str, ...] | None:
        """The name of each channel of the file as its metadata states it (OME, ImageJ ``Labels``, OME-Zarr
        ``omero``), or None where it names not every channel."""
        count = self._channel_count()
        names = names_of_channels(self._stored.names, count, per_plane=self._stored.names_per_plane)
        return None if names is None or count < 2 else tuple(names)

    @property
    def channel_name(self) -> str | None:
        """What measurements call the one channel chosen of several, or None."""
        return None if self._channel is None or not self.channel_names else self.channel_names[self._channel]

    def every_channel(self) -> OpenedImage:
        """The same image with every channel read: what measurements take their intensities from."""
        if self._channel is None:
            return self
        return dataclasses.replace(self, channels=len(self.channel_names), _channel=None, _every=True)

    def check_one_plane(self) -> None:
        """Refuse a Z-stack or time series in one line (what :meth:`read` and region reads need)."""
        if self.plane_axes:
            stored = self._stored
            axis_roles(self.path, stored.shape, stored.letters, stored.declared, self._layout)

    def check_channel_chosen(self) -> None:
        """Refuse a multi-channel microscopy image without a channel chosen, listing its channels."""
        if self._channel is None and not self._every:
            channel_index(
                self.path, None, self._channel_count(), self.stated_channel_names, photographic=self._photographic()
            )

    def read(self, rows: slice | None = None, cols: slice | None = None) -> np.ndarray:
        """The pixels of the whole image, or of ``image[rows, cols]``.

        Returns
        -------
        ndarray, shape (H, W) or (H, W, C) (or the region's (h, w), (h, w, C))
            Native dtype, channels last: the chosen channel, or every channel.
            The whole image as stored (as :func:`nucseg.io.images.read_image`
            gives it); a region checked by :func:`nucseg.io.pixels.usable_pixels`.

        Raises
        ------
        InputError
            A Z-stack or time series (see :meth:`read_stack`), a
            multi-channel microscopy image without a channel chosen, an
            undecodable file, or (a region) unusable pixels.
        """
        if rows is None and cols is None:
            self.check_one_plane()
            if self._every:
                return self._decode()
            return choose_channel(
                self.path, self._decode(), 2, self._choice(), self._names(), rgb_samples=self._rgb_samples()
            ).image
        rows, cols = rows or slice(0, self.shape[0]), cols or slice(0, self.shape[1])
        self.check_one_plane()
        self.check_channel_chosen()
        region = f"rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}"
        if not self.lazy:
            return usable_pixels(np.ascontiguousarray(self.read()[rows, cols]), self.path, region=region)
        channels = slice(None) if self._channel is None else self._channel
        selection = tuple({"y": rows, "x": cols, "c": channels}.get(role, 0) for role in self._roles)
        kept = [role for role in self._roles if role and (role != "c" or self._channel is None)]
        array, close = self._open_array()
        try:
            data = np.asarray(array[selection])
        finally:
            close()
        order = [kept.index(axis) for axis in ("y", "x", "c") if axis in kept]
        return usable_pixels(np.ascontiguousarray(np.transpose(data, order)), self.path, region=region)

    def read_stack(self) -> ImageStack:
        """Every plane of the image, the chosen channel, with every channel for measurements when one was
        chosen; pixels checked by :func:`nucseg.io.pixels.usable_pixels`.

        Raises
        ------
        InputError
            As :meth:`read`.
        """
        array = self._decode()
        planes = array.reshape((-1, *array.shape[len(self.plane_axes) :]))
        if self._every:
            chosen = ChosenChannel(planes)
        else:
            chosen = choose_channel(
                self.path, planes, 3, self._choice(), self._names(), rgb_samples=self._rgb_samples()
            )
        chosen = usable_channels(chosen, self.path)
        return ImageStack(
            chosen.image, self.plane_shape, self.plane_axes, chosen.name, chosen.every_channel, chosen.channel_names
        )

    def _channel_count(self) -> int:
        return self.channels or (len(self.channel_names) if self._channel is not None else 1)

    def _names(self) -> list[str] | None:
        names = self.stated_channel_names
        return None if names is None else list(names)

    def _choice(self) -> Channel:
        return None if self._channel is None else self._channel + 1

    def _rgb_samples(self) -> bool:
        """Whether the channels are RGB samples (a TIFF's ``S`` axis, a PNG's, a Zarr store's, which states
        nothing), not an ImageJ/OME ``C`` axis."""
        stored = self._stored
        letter = next((axis for axis, role in zip(stored.letters, self._roles) if role == "c"), "")
        return stored.kind != "tiff" or letter == "S"

    def _photographic(self) -> bool:
        return is_photographic(self._channel_count(), self.dtype, rgb_samples=self._rgb_samples())

    def _decode(self) -> np.ndarray:
        """Every pixel, axes ordered (T, Z,) Y, X(, C), every channel."""
        stored = self._stored
        if stored.kind == "pillow":
            image = read_pillow(self.path, palette_indices=stored.palette_indices)
            if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
                raise InputError(self.path, f"expected a 2-D image with optional channels, got shape {image.shape}")
            return image
        if stored.kind == "tiff":
            import tifffile

            try:
                with tifffile.TiffFile(self.path) as tif:
                    array = tif.series[0].levels[stored.level].asarray()
            except Exception as exc:  # tifffile raises many types for corrupt files
                raise InputError(self.path, f"cannot decode TIFF ({first_line(exc)})") from None
        else:
            array, close = self._open_array()
            try:
                array = np.asarray(array[...])
            finally:
                close()
        kept = [role for role in self._roles if role]
        array = array.reshape([n for n, role in zip(array.shape, self._roles) if role])
        order = [axis for axis in ("t", "z", "y", "x", "c") if axis in kept]
        return np.transpose(array, [kept.index(axis) for axis in order])

    def _open_array(self):
        """The stored array as a Zarr array, and the function that closes it."""
        import zarr

        stored = self._stored
        if stored.kind == "tiff":
            import tifffile

            store = tifffile.imread(self.path, aszarr=True, series=0, level=stored.level)
            return zarr.open_array(store, mode="r"), store.close
        location = self.path / stored.array_path if stored.array_path else self.path
        return zarr.open_array(str(location), mode="r"), lambda: None


def open_image(
    path: str | Path,
    *,
    channel_axis: int | str | None = None,
    axes: str | None = None,
    channel: Channel = None,
    level: int = 0,
    palette_indices: bool = False,
) -> OpenedImage:
    """Open an image file once: its header and metadata, with the axis rules and the channel choice applied.

    Parameters
    ----------
    path
        A PNG, JPEG or TIFF file (:data:`nucseg.io.formats.IMAGE_SUFFIXES`), or
        a Zarr store: an array, or an OME-Zarr image group.
    channel_axis
        Channel axis of a 3-D TIFF or Zarr array whose file does not declare
        it, counted after length-1 axes (and declared Z and T axes) are
        dropped; or, as a string, the letters of ``axes``. If the file
        declares its channel axis, a different one is an error. Ignored for
        PNG and JPEG, whose channels are always last.
    axes
        Instead of ``channel_axis``: the letters of the axes of a file that
        does not declare them (``--axes``, StarDist's convention: ``ZYX``,
        ``CYX``, ``YXC``, ``TZYX``; see :func:`nucseg.io.axes.given_axes`).
    channel
        The channel that shows the nuclei, of a multi-channel image: a
        number counted from 1, or a channel name the file states. Checked
        here; a multi-channel microscopy image without it is refused when its
        pixels are read (it opens, to say what its channels are).
    level
        Resolution level of a pyramid (a slide, a pyramidal OME-TIFF, an
        OME-Zarr multiscale image): 0, full resolution, unless asked.
    palette_indices
        Read a palette PNG as its palette indices (label images stored with a
        colour map) instead of its colours.

    Raises
    ------
    InputError
        Missing, empty, unreadable or corrupt file; an unsupported format; not
        2-D with optional channels and declared Z/T axes; an undeclared
        channel axis; a channel that names none of the image's; no such level.
    """
    path = Path(path)
    if axes is not None and channel_axis is not None:
        raise InputError(path, "give the axes or the channel axis, not both")
    layout = axes if axes is not None else channel_axis
    stored = _open_stored(path, level=level, palette_indices=palette_indices)
    if stored.kind == "pillow":
        roles = ("y", "x", "c")[: len(stored.shape)]
    else:
        roles = tuple(axis_roles(path, stored.shape, stored.letters, stored.declared, layout, planes=True))
    sizes = {role: n for n, role in zip(stored.shape, roles) if role}
    plane_axes = "".join(axis.upper() for axis in ("t", "z") if axis in sizes)
    image = OpenedImage(
        path,
        (sizes["y"], sizes["x"]),
        sizes.get("c", 0),
        stored.dtype,
        tuple(sizes[axis.lower()] for axis in plane_axes),
        plane_axes,
        stored,
        roles,
        layout,
    )
    if not image.channels or channel is None:
        return image
    index = channel_index(path, channel, image.channels, image._names(), photographic=image._photographic())
    if index is None:
        return image
    return dataclasses.replace(
        image, channels=0, _channel=index, channel_names=channel_labels(image.channels, image._names())
    )


def image_pixel_size(path: str | Path) -> float | None:
    """Microns per pixel that an image file states (see :attr:`OpenedImage.pixel_size`); None where it
    states none. Reads its metadata only, whatever its axes and channels."""
    path = Path(path)
    if not is_zarr(path) and path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    stored = _open_stored(path, level=0)
    if stored.pixel_size_error:
        raise InputError(path, f"cannot read TIFF metadata ({stored.pixel_size_error})")
    return stored.pixel_size


def _open_stored(path: Path, *, level: int, palette_indices: bool = False) -> _Stored:
    if is_zarr(path):
        return _zarr_stored(path, level)
    check_image_file(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _tiff_stored(path, level)
    _check_level(path, level, 1)
    with pillow_header(path) as im:
        dtype, count = pillow_layout(im, palette_indices=palette_indices)
        shape = (im.height, im.width) if count == 1 else (im.height, im.width, count)
    return _Stored("pillow", shape, "YXS"[: len(shape)], "S", dtype, palette_indices=palette_indices)


class MissingLevelError(InputError):
    """A resolution level the file does not have was asked for."""


def _check_level(path: Path, level: int, levels: int) -> None:
    if not 0 <= level < levels:
        raise MissingLevelError(
            path, f"has {levels} resolution level(s), 0 to {levels - 1}; level {level} was asked for"
        )


def _tiff_stored(path: Path, level: int) -> _Stored:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _check_level(path, level, len(series.levels))
            chosen = series.levels[level]
            if not any(count for page in chosen.pages if page is not None for count in page.databytecounts):
                raise InputError(path, "holds no pixel data (every strip or tile is empty): truncated or corrupt")
            letters = tiff_series_axes(chosen.shape, chosen.axes)
            names, per_plane = tiff_stated_names(tif)
            pixel_size, error = None, ""
            try:
                pixel_size = _tiff_pixel_size(tif)
            except Exception as exc:  # said when the pixel size is asked for, as before it was read here
                error = first_line(exc)
            if pixel_size is not None and level:
                x = letters.index("X")
                pixel_size *= series.shape[x] / chosen.shape[x]
            return _Stored(
                "tiff",
                tuple(chosen.shape),
                letters,
                DECLARED_CHANNEL_AXES,
                np.dtype(chosen.dtype),
                names,
                per_plane,
                pixel_size,
                error,
                level=level,
            )
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(path, f"cannot decode TIFF ({first_line(exc)})") from None


def _tiff_pixel_size(tif) -> float | None:
    if tif.is_ome and tif.ome_metadata:
        return _ome_pixel_size(tif.ome_metadata)
    if tif.is_svs:
        from tifffile.tifffile import svs_description_metadata

        mpp = svs_description_metadata(tif.pages.first.description).get("MPP")
        return float(mpp) if isinstance(mpp, (int, float)) and mpp > 0 else None
    if Path(tif.filename).suffix.lower() in SLIDE_SUFFIXES:
        return _centimetre_resolution(tif.pages.first)
    if tif.is_imagej and tif.imagej_metadata:
        unit = str(tif.imagej_metadata.get("unit", "")).strip().lower().replace("\\u00b5", "µ")
        tag = tif.pages.first.tags.get("XResolution")
        if unit in MICRONS_PER_UNIT and tag is not None:
            numerator, denominator = tag.value
            if numerator > 0 and denominator > 0:
                return float(denominator / numerator * MICRONS_PER_UNIT[unit])
    return None


def _centimetre_resolution(page) -> float | None:
    """Microns per pixel from the ``XResolution`` tag when ``ResolutionUnit`` is centimetre (as NDPI, SCN and
    other slide scanners write it); None otherwise (the inch unit's 72 dpi is a default, not a statement)."""
    unit, resolution = page.tags.get("ResolutionUnit"), page.tags.get("XResolution")
    if unit is None or resolution is None or int(unit.value) != 3:
        return None
    numerator, denominator = resolution.value
    return float(denominator / numerator * 1e4) if numerator > 0 and denominator > 0 else None


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


def _zarr_stored(path: Path, level: int) -> _Stored:
    """A Zarr array, or the array of ``level`` of an OME-Zarr image group with its axes, channel names and
    pixel size."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputError(path, f"cannot open Zarr store ({first_line(exc)})") from None
    if hasattr(node, "shape"):
        _check_level(path, level, 1)
        return _Stored("zarr", tuple(node.shape), "Q" * len(node.shape), "", np.dtype(node.dtype))
    attributes = dict(node.attrs)
    multiscales = attributes.get("multiscales") or attributes.get("ome", {}).get("multiscales")
    if not multiscales:
        arrays = sorted(name for name, _ in node.arrays())
        raise InputError(
            path,
            "Zarr group without OME-Zarr multiscales metadata; give the path of one of its "
            f"arrays ({', '.join(arrays) or 'it has none'})",
        )
    try:
        datasets = multiscales[0]["datasets"]
        _check_level(path, level, len(datasets))
        names = [axis["name"] if isinstance(axis, dict) else str(axis) for axis in multiscales[0]["axes"]]
        full, array = node[datasets[0]["path"]], node[datasets[level]["path"]]
    except (KeyError, IndexError, TypeError) as exc:
        raise InputError(path, f"malformed OME-Zarr multiscales metadata ({first_line(exc)})") from None
    letters = "".join({"y": "Y", "x": "X", "c": "C", "z": "Z", "t": "T"}.get(name.lower(), "Q") for name in names)
    if len(letters) != array.ndim:
        raise InputError(path, f"OME-Zarr names {len(letters)} axes for an array of {array.ndim} dimensions")
    metadata = ngff_metadata(attributes)
    pixel_size = metadata.pixel_size
    if pixel_size is not None and level and "X" in letters:
        pixel_size *= full.shape[letters.index("X")] / array.shape[letters.index("X")]
    return _Stored(
        "zarr",
        tuple(array.shape),
        letters,
        "C",
        np.dtype(array.dtype),
        metadata.channel_names,
        pixel_size=pixel_size,
        array_path=datasets[level]["path"],
        level=level,
    )

"""OME-Zarr (OME-NGFF 0.4): an image with its nuclei as a ``labels/nuclei`` group, and the metadata of inputs.

Written as NGFF 0.4 in Zarr format 2 (``/``-separated chunk keys), the
version most viewers read (napari with napari-ome-zarr, QuPath, Fiji's
MoBIE, the OME-NGFF validator). The image and its labels are multiscale:
level 0 at full resolution, then every second pixel of the level before
(nearest, so labels stay labels), down to about :data:`SMALLEST_LEVEL`
pixels on the longer side. Arrays are written region by region
(:func:`write_region`), so an image larger than memory is written block by
block.

Reading: :func:`ngff_metadata` gives the channel names (``omero``) and the
pixel size (the ``scale`` transform of the full-resolution level, in
micrometres) of an OME-Zarr input, NGFF 0.4 or 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.io.formats import MICRONS_PER_UNIT

NGFF_VERSION = "0.4"
#: Pyramid levels stop once the longer side is at most this many pixels.
SMALLEST_LEVEL = 1024
#: Chunk side of level 0, pixels (levels below may have smaller chunks, see :func:`level_chunks`).
CHUNK = 512
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def pyramid_factors(height: int, width: int) -> list[int]:
    """Downsampling factors of the levels of an image of ``height`` x ``width``: 1, 2, 4, ... (at most 256)."""
    factors = [1]
    while max(height, width) / factors[-1] > SMALLEST_LEVEL and factors[-1] < 256:
        factors.append(factors[-1] * 2)
    return factors


def level_chunks(factors: Sequence[int], block_size: int | None) -> list[int]:
    """Chunk side of each level: :data:`CHUNK`, or less where a block of ``block_size`` pixels (a multiple
    of 256) shrinks below it, so that every block writes whole chunks of every level."""
    if block_size is None:
        return [CHUNK] * len(factors)
    return [max(1, min(CHUNK, block_size // factor)) for factor in factors]


@dataclass(frozen=True)
class NgffImage:
    """The layout of an image to write as OME-Zarr.

    Attributes
    ----------
    axes
        Lowercase NGFF axis names in order, e.g. ``"cyx"``, ``"yx"``, ``"tzyx"``;
        the last two are ``y`` and ``x``.
    shape
        Size of each axis.
    dtype
        Pixel dtype of the image.
    pixel_size
        Micrometres per pixel in y and x (None: unknown, stated as 1 pixel).
    channel_names
        Name of each channel, when the image has a ``c`` axis.
    """

    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype
    pixel_size: float | None = None
    channel_names: tuple[str, ...] = ()

    @property
    def label_axes(self) -> str:
        """The axes of the labels: the image's without its channel axis."""
        return self.axes.replace("c", "")

    @property
    def label_shape(self) -> tuple[int, ...]:
        return tuple(n for axis, n in zip(self.axes, self.shape) if axis != "c")


def create_ngff(
    path: str | Path, image: NgffImage, *, labels_dtype: np.dtype, name: str, block_size: int | None = None
) -> list[int]:
    """Create the (empty) OME-Zarr group of ``image`` with a ``labels/nuclei`` label image; its factors.

    Parameters
    ----------
    path
        The group's folder (created; it must not exist).
    image
        What the image is.
    labels_dtype
        Integer dtype of the labels.
    name
        The image's name in the metadata.
    block_size
        Side of the blocks that will write it (see :func:`level_chunks`);
        None for one write of the whole image.

    Returns
    -------
    list of int
        The downsampling factor of each level.
    """
    import zarr

    height, width = image.shape[-2:]
    factors = pyramid_factors(height, width)
    chunks = level_chunks(factors, block_size)
    root = zarr.open_group(str(path), mode="w-", zarr_format=2)
    _add_levels(root, image.axes, image.shape, image.dtype, factors, chunks)
    root.attrs.update(
        {
            "multiscales": [_multiscale(name, image.axes, factors, image.pixel_size)],
            **({"omero": _omero(image)} if "c" in image.axes else {}),
        }
    )
    labels_group = root.create_group("labels")
    labels_group.attrs.update({"labels": ["nuclei"]})
    nuclei = labels_group.create_group("nuclei")
    _add_levels(nuclei, image.label_axes, image.label_shape, np.dtype(labels_dtype), factors, chunks)
    nuclei.attrs.update(
        {
            "multiscales": [_multiscale("nuclei", image.label_axes, factors, image.pixel_size)],
            "image-label": {"version": NGFF_VERSION, "source": {"image": "../../"}},
        }
    )
    return factors


def write_region(
    path: str | Path, factors: Sequence[int], rows: slice, cols: slice, *, image: np.ndarray | None, labels: np.ndarray
) -> None:
    """Write ``image[..., rows, cols]`` and ``labels[..., rows, cols]`` into every level of the group.

    ``rows.start`` and ``cols.start`` must be multiples of every factor
    (block corners are). ``image`` (None: leave the image as it is) and
    ``labels`` are in the group's axis order, the region's pixels last.
    """
    import zarr

    root = zarr.open_group(str(path), mode="r+", zarr_format=2)
    for level, factor in enumerate(factors):
        region = (
            slice(rows.start // factor, -(-rows.stop // factor)),
            slice(cols.start // factor, -(-cols.stop // factor)),
        )
        if image is not None:
            root[str(level)][(Ellipsis, *region)] = image[..., ::factor, ::factor]
        root[f"labels/nuclei/{level}"][(Ellipsis, *region)] = labels[..., ::factor, ::factor]


def _add_levels(
    group: Any, axes: str, shape: tuple[int, ...], dtype: np.dtype, factors: Sequence[int], chunks: Sequence[int]
) -> None:
    for level, (factor, chunk) in enumerate(zip(factors, chunks)):
        level_shape = (*shape[:-2], *(-(-n // factor) for n in shape[-2:]))
        level_chunk = (*(1 for _ in shape[:-2]), chunk, chunk)
        if "c" in axes:  # the channels of a pixel together
            index = axes.index("c")
            level_chunk = level_chunk[:index] + (shape[index],) + level_chunk[index + 1 :]
        group.create_array(
            str(level),
            shape=level_shape,
            chunks=level_chunk,
            dtype=dtype,
            fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )


def _multiscale(name: str, axes: str, factors: Sequence[int], pixel_size: float | None) -> dict[str, Any]:
    spatial = pixel_size if pixel_size is not None else 1.0
    axis_list = []
    for axis in axes:
        entry = {"name": axis, "type": _AXIS_TYPES[axis]}
        if axis in "yx" and pixel_size is not None:
            entry["unit"] = "micrometer"
        axis_list.append(entry)
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [spatial * factor if axis in "yx" else 1.0 for axis in axes]}
            ],
        }
        for level, factor in enumerate(factors)
    ]
    return {"version": NGFF_VERSION, "name": name, "axes": axis_list, "datasets": datasets}


def _omero(image: NgffImage) -> dict[str, Any]:
    channels = image.shape[image.axes.index("c")]
    names = image.channel_names or tuple(f"ch{i + 1}" for i in range(channels))
    if np.issubdtype(image.dtype, np.integer):
        low, high = float(np.iinfo(image.dtype).min), float(np.iinfo(image.dtype).max)
    else:
        low, high = 0.0, 1.0
    window = {"min": low, "max": high, "start": low, "end": high}
    return {"channels": [{"label": str(label), "color": "FFFFFF", "active": True, "window": window} for label in names]}


# ------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class NgffMetadata:
    """What an OME-Zarr image states about itself.

    Attributes
    ----------
    channel_names
        The ``omero`` channel labels (empty when it names none).
    pixel_size
        Micrometres per pixel from the full-resolution level's ``scale``
        transform along ``x`` (None when no unit or a unit that is not a length).
    """

    channel_names: tuple[str, ...] = ()
    pixel_size: float | None = None


def ngff_metadata(attributes: Mapping[str, Any]) -> NgffMetadata:
    """The channel names and pixel size an OME-Zarr group's attributes state (NGFF 0.4, or 0.5 under ``ome``)."""
    attributes = attributes.get("ome", attributes)
    channels = (attributes.get("omero") or {}).get("channels") or []
    names = tuple(str(channel.get("label", "")) for channel in channels if isinstance(channel, Mapping))
    if not all(names):
        names = ()
    return NgffMetadata(names, _pixel_size((attributes.get("multiscales") or [{}])[0]))


def _pixel_size(multiscale: Mapping[str, Any]) -> float | None:
    try:
        axes = [axis if isinstance(axis, Mapping) else {"name": axis} for axis in multiscale["axes"]]
        x = [axis["name"].lower() for axis in axes].index("x")
        scale = [1.0] * len(axes)
        for transforms in (
            multiscale.get("coordinateTransformations") or [],
            multiscale["datasets"][0].get("coordinateTransformations") or [],
        ):
            for transform in transforms:
                if transform.get("type") == "scale":
                    scale = [a * float(b) for a, b in zip(scale, transform["scale"])]
        unit = MICRONS_PER_UNIT.get(str(axes[x].get("unit", "")).lower())
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if unit is None or not scale[x] > 0:
        return None
    return scale[x] * unit

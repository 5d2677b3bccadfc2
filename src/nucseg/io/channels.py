"""Which channel of a multi-channel image holds the nuclei: chosen by the user, never guessed.

A multi-channel microscopy image (an ImageJ or OME TIFF with a ``C`` axis, a
16-bit RGB TIFF, a Zarr store with channels) is segmented on the one channel
the user names with ``--channel N`` (counted from 1, as Fiji numbers them) or
``--channel NAME`` (a channel name stored in the file's OME or ImageJ
metadata). Without a choice it is refused in one line that lists the
channels. Plain 8-bit RGB(A) photography (PNG, JPEG, RGB TIFF) is taken as
it is: H&E and brightfield are colour images; a colour image whose content
is one fluorescence channel is recognised by
:func:`nucseg.preprocess.normalize.to_channels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg.errors import InputError

#: What ``--channel`` takes: a 1-based index or a channel name, or None (no choice).
Channel = int | str | None


def channel_index(
    path: Path | None,
    channel: Channel,
    count: int,
    names: Sequence[str] | None,
    *,
    photographic: bool,
    option: str = "--channel",
) -> int | None:
    """The 0-based index of the channel to segment, or None to keep every channel.

    Single-channel images are taken as they are, whatever ``channel`` says: a
    batch's choice is for its multi-channel images.

    Parameters
    ----------
    path
        The file, for messages.
    channel
        The user's choice: 1-based index, name, or None.
    count
        Number of channels of the image (1 for a single-channel image).
    names
        Channel names from the file's metadata, one per channel, or None.
    photographic
        Whether the image is plain 8-bit RGB(A) photography, which is taken
        as it is when no channel is chosen.
    option
        How the user makes the choice, for messages: ``"--channel"`` on the
        command line, ``"channel="`` in the Python API (an array, which has
        no channel names).

    Raises
    ------
    InputError
        No choice for a multi-channel microscopy image, or a choice that names
        no channel of the image.
    """
    listed = describe_channels(count, names)
    if count == 1:  # nothing to choose: a batch's --channel is for its multi-channel images
        return None
    if channel is None:
        if photographic:
            return None
        if option.endswith("="):
            raise InputError(
                path,
                f"image has {count} channels ({listed}); choose the one that shows the nuclei "
                f"with {option}N (1 to {count}); only 8-bit RGB(A) images are taken as colour",
            )
        raise InputError(
            path,
            f"image has {count} channels ({listed}); choose the one that shows the nuclei with "
            f"{option} N (1 to {count}) or {option} NAME",
        )
    if isinstance(channel, str) and not channel.isdigit():
        matches = [i for i, name in enumerate(names or []) if name.lower() == channel.lower()]
        if len(matches) != 1:
            raise InputError(path, f"no channel named {channel!r}; the image has {count} channel(s) ({listed})")
        return matches[0]
    index = int(channel)
    if not 1 <= index <= count:
        chosen = f"{option}{index}" if option.endswith("=") else f"{option} {index}"
        raise InputError(path, f"{chosen} is out of range: the image has {count} channel(s) ({listed}), counted from 1")
    return index - 1


def is_photographic(count: int, dtype: np.dtype, *, rgb_samples: bool) -> bool:
    """Whether an image of ``count`` channels is plain RGB(A) photography, taken as it is.

    ``rgb_samples``: the file stores the channels as the samples of RGB pixels
    (a TIFF's ``S`` axis, a PNG or JPEG), or states nothing about them (a Zarr
    array); an ImageJ/OME ``C`` axis holds microscopy channels instead.
    Only 8-bit images count: a 16-bit or float RGB image (a PNG too) is more
    often three microscopy channels than a photograph.
    """
    return rgb_samples and count in (3, 4) and np.dtype(dtype) == np.uint8


@dataclass(frozen=True)
class ChosenChannel:
    """An image after the channel choice of :func:`choose_channel`.

    Attributes
    ----------
    image : ndarray, shape (..., H, W) or (..., H, W, C)
        The chosen channel, or every channel when none was chosen.
    name
        What measurements call the chosen channel (one of
        :func:`channel_labels`), or None when every channel is kept.
    every_channel : ndarray, shape (..., H, W, C), optional
        Every channel of the image, when one was chosen: measurements take
        the intensities of all of them (None when every channel is kept).
    channel_names
        What measurements call each channel of ``every_channel``.
    """

    image: np.ndarray
    name: str | None = None
    every_channel: np.ndarray | None = None
    channel_names: tuple[str, ...] = ()


def choose_channel(
    path: Path | None,
    image: np.ndarray,
    spatial_ndim: int,
    channel: Channel,
    names: Sequence[str] | None,
    *,
    rgb_samples: bool,
    option: str = "--channel",
) -> ChosenChannel:
    """``image`` with a length-1 channel axis dropped and the channel of :func:`channel_index` selected.

    Parameters
    ----------
    image : ndarray, shape (..., H, W) or (..., H, W, C)
        Channels last, after ``spatial_ndim`` other axes (2 for an image, 3 for a stack of planes).
    rgb_samples
        As for :func:`is_photographic`.
    option
        As for :func:`channel_index`.
    """
    if image.ndim == spatial_ndim + 1 and image.shape[-1] == 1:
        image = image[..., 0]
    count = image.shape[-1] if image.ndim == spatial_ndim + 1 else 1
    photographic = is_photographic(count, image.dtype, rgb_samples=rgb_samples)
    index = channel_index(path, channel, count, names, photographic=photographic, option=option)
    if index is None:
        return ChosenChannel(image)
    labels = channel_labels(count, names)
    return ChosenChannel(select_channel(image, index), labels[index], image, labels)


def channel_labels(count: int, names: Sequence[str] | None) -> tuple[str, ...]:
    """What measurement columns call each of the ``count`` channels of a file.

    Their names in the file's metadata, or ``ch<N>`` with ``N`` counted from
    1, as ``--channel`` and Fiji count, where the file names none or repeats
    a name: ``mean_intensity_DAPI``, ``mean_intensity_ch2``.
    """
    numbered = tuple(f"ch{i}" for i in range(1, count + 1))
    stated = tuple(name.strip() for name in names or ())
    if len(stated) != count or not all(stated) or len(set(stated)) != count:
        return numbered
    return stated


def describe_channels(count: int, names: Sequence[str] | None) -> str:
    """``"1 DAPI, 2 GFP, 3 actin"``, or ``"1, 2, 3"`` without names (``"1, 2, ..., 40"`` for many)."""
    if names and len(names) == count:
        return ", ".join(f"{i} {name}" for i, name in enumerate(names, start=1))
    if count > 8:
        return f"1, 2, ..., {count}"
    return ", ".join(str(i) for i in range(1, count + 1))


def select_channel(image: np.ndarray, index: int | None) -> np.ndarray:
    """``image[..., index]`` of a channels-last image, or ``image`` when ``index`` is None."""
    return image if index is None else np.ascontiguousarray(image[..., index])


def tiff_stated_names(tif) -> tuple[tuple[str, ...], bool]:
    """The channel names that a TIFF's OME or ImageJ metadata states, as stated, and whether they are
    ImageJ's per-plane ``Labels`` (which :func:`names_of_channels` reduces to one per channel).

    Parameters
    ----------
    tif : tifffile.TiffFile
        The open file.
    """
    names: list[str] = []
    if tif.is_ome and tif.ome_metadata:
        import xml.etree.ElementTree as ElementTree

        try:
            root = ElementTree.fromstring(tif.ome_metadata)
        except ElementTree.ParseError:
            root = None
        if root is not None:
            image = next((node for node in root.iter() if node.tag.endswith("}Image")), None)
            channels = [] if image is None else [node for node in image.iter() if node.tag.endswith("}Channel")]
            names = [node.get("Name", "") for node in channels]
        return tuple(names), False
    if tif.is_imagej and tif.imagej_metadata:
        labels = tif.imagej_metadata.get("Labels")
        names = list(labels) if isinstance(labels, (list, tuple)) else []
    return tuple(str(name) for name in names), True


def names_of_channels(names: Sequence[str], count: int, *, per_plane: bool = False) -> list[str] | None:
    """The names of the ``count`` channels of an image, one each, from the ``names`` its file states; None
    where they do not name each channel.

    ``per_plane``: an ImageJ hyperstack labels every plane, channels fastest
    (C, then Z, then T), so its channel names repeat.
    """
    names = list(names)
    if (
        per_plane
        and len(names) > count
        and len(names) % count == 0
        and all(name == names[index % count] for index, name in enumerate(names))
    ):
        names = names[:count]
    names = [str(name).strip() for name in names]
    return names if len(names) == count and all(names) else None

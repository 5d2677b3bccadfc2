"""The one set of axis rules for multi-dimensional image files (TIFF, Zarr).

Length-1 axes are dropped; what remains must be Y, X and at most one channel
axis. The channel axis is the one the file declares (tifffile's ``S``
samples or an ImageJ/OME ``C`` axis) or the one the caller gives; nothing is
guessed. The one reader, :func:`nucseg.io.opened.open_image`, decides with
:func:`axis_roles`.
"""

from __future__ import annotations

from pathlib import Path

from nucseg.errors import InputError

#: tifffile axis codes that a file uses to declare its channel axis:
#: samples of a pixel (RGB, planar or not) and ImageJ / OME channels.
DECLARED_CHANNEL_AXES = "SC"


def tiff_series_axes(shape: tuple[int, ...], axes: str) -> str:
    """The axis letters of a tifffile series, or ``Q..QYX`` where it has no usable axes metadata."""
    return axes if len(axes) == len(shape) else "Q" * (len(shape) - 2) + "YX"


#: Axis letters of planes: Z-stacks and time series, as ImageJ and OME metadata declare them.
PLANE_AXES = "TZ"


#: Letters of ``--axes`` (StarDist's convention): T time, Z depth, C channel (S: samples, as C), Y, X.
GIVEN_AXES_LETTERS = "TZCSYX"
#: tifffile letters that declare nothing: Q unknown, I a sequence of images.
_UNDECLARED = "QI"


def check_axes_letters(axes: str, path: Path | None = None) -> str:
    """``axes`` (``--axes``) in capitals, when it names each axis once with :data:`GIVEN_AXES_LETTERS`.

    Raises
    ------
    InputError
        Not a string, unknown or repeated letters, or no Y and X.
    """
    given = axes.upper() if isinstance(axes, str) else ""
    if set(given) - set(GIVEN_AXES_LETTERS) or len(set(given)) != len(given) or not {"Y", "X"} <= set(given):
        raise InputError(
            path,
            f"--axes {axes!r}: name each axis once with the letters {GIVEN_AXES_LETTERS}, "
            "Y and X among them (e.g. ZYX, CYX, YXC)",
        )
    return given


def given_axes(path: Path, shape: tuple[int, ...], file_axes: str, axes: str) -> str:
    """The axis letters that ``axes`` (``--axes``, e.g. ``ZYX``, ``CYX``, ``YXC``) gives an image of ``shape``.

    ``axes`` names every axis of the stored array, or every axis longer
    than 1. It may declare what the file does not, never contradict it.

    Raises
    ------
    InputError
        Unknown or repeated letters, no Y and X, a count that fits neither, or
        a contradiction of the axes the file declares.
    """
    given = check_axes_letters(axes, path)
    if len(given) == len(shape):
        letters = given
    else:
        longer = [i for i, n in enumerate(shape) if n > 1]
        if len(given) != len(longer):
            raise InputError(path, f"--axes {given} names {len(given)} axes; the image has shape {tuple(shape)}")
        letters = "".join(given[longer.index(i)] if i in longer else "Q" for i in range(len(shape)))
    declared = [(mine, theirs) for mine, theirs in zip(letters, file_axes) if theirs not in _UNDECLARED]
    if any(mine != theirs and {mine, theirs} != {"C", "S"} for mine, theirs in declared):
        raise InputError(
            path, f"--axes {given} contradicts the axes the file declares ({file_axes}); leave --axes out for this file"
        )
    return letters


def axis_roles(
    path: Path,
    shape: tuple[int, ...],
    axes: str,
    declared_letters: str,
    channel_axis: int | str | None,
    *,
    planes: bool = False,
) -> list[str]:
    """Per stored axis: "y", "x", "c", "t", "z" or "" (dropped length-1 axis).

    With ``planes``, declared T and Z axes (:data:`PLANE_AXES`) are planes,
    roles "t" and "z", and the rules below apply to the rest; without, a
    stack is refused in one line. ``channel_axis`` counts the axes that are
    kept and not planes; a string instead gives the letters of every axis
    (``--axes``, see :func:`given_axes`), declared as if the file did.
    """
    if isinstance(channel_axis, str):
        axes, declared_letters = given_axes(path, shape, axes, channel_axis), DECLARED_CHANNEL_AXES
        channel_axis = None
    kept = [i for i, (n, axis) in enumerate(zip(shape, axes)) if n > 1 or axis in "YX"]
    described = f"shape {tuple(shape)} (axes {axes})" if set(axes) != {"Q"} else f"shape {tuple(shape)}"
    stacked = [i for i in kept if axes[i] in PLANE_AXES]
    if stacked and not planes:
        kinds = " and ".join({"Z": "Z-stack", "T": "time series"}[axes[i]] for i in stacked)
        raise InputError(
            path,
            f"image of {described} is a {kinds}; nucseg segment segments it plane by plane "
            "(from Python: nucseg.io.images.read_stack)",
        )
    roles = [""] * len(shape)
    for i in stacked:
        roles[i] = axes[i].lower()
    kept = [i for i in kept if i not in stacked]
    if len(kept) not in (2, 3):
        raise InputError(
            path,
            f"image of {described}: only 2-D images with at most one channel axis (and Z or T axes "
            "that the file declares) are supported",
        )
    if len(kept) == 2:
        roles[kept[0]], roles[kept[1]] = "y", "x"
        return roles
    declared = [position for position, i in enumerate(kept) if axes[i] in declared_letters]
    declared_axis = declared[0] if len(declared) == 1 else None
    if channel_axis is None:
        if declared_axis is None:
            raise InputError(
                path,
                f"multi-channel image of {described} does not declare its channel axis; "
                "pass channel_axis (CLI: --channel-axis), or the axes (--axes: ZYX for Z planes, "
                "CYX for channels)",
            )
        channel_axis = declared_axis
    if not -3 <= channel_axis < 3:
        raise InputError(path, f"channel axis {channel_axis} is out of range for {described}")
    channel_axis %= 3
    if declared_axis is not None and channel_axis != declared_axis:
        raise InputError(
            path,
            f"channel axis {channel_axis} contradicts the file, whose channels are on axis "
            f"{declared_axis} of {described}",
        )
    spatial = [i for position, i in enumerate(kept) if position != channel_axis]
    roles[kept[channel_axis]] = "c"
    roles[spatial[0]], roles[spatial[1]] = "y", "x"
    return roles

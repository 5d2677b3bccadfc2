"""Every setting of one segment call, checked once where it is made: :class:`SegmentOptions`.

::

    from nucseg.inference.options import SegmentOptions

    options = SegmentOptions(diameter=17.5, tile_size=512, postprocess={"min_size": 30})
    result = model.segment(image, options=options)      # or model.segment(image, diameter=17.5, ...)
    report = nucseg.segment_files(["images/"], "out/", options=options.replace(channel="DAPI"))

A value that cannot be right (a tile size not a multiple of 32, a negative
scale, an unknown backend, a threshold outside [0, 1)) is refused when the
options are made, in one line (:class:`OptionsError`: an
:class:`~nucseg.errors.InputError` for the command line, a ``ValueError`` for
Python). What depends on the model (a diameter for a model that records no
training diameter, network options for the classical baseline) is its
:meth:`~nucseg.inference.base.Model.check_options`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.errors import InputError
from nucseg.inference import BACKENDS
from nucseg.inference.sizing import AUTO_DIAMETER
from nucseg.inference.tiling import check_tiling, DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from nucseg.io.axes import check_axes_letters
from nucseg.io.channels import Channel
from nucseg.postprocess.watershed import PostprocessConfig


class OptionsError(InputError, ValueError):
    """A segment option that cannot be right: one line for the command line, a ``ValueError`` for Python."""

    def __init__(self, problem: str):
        super().__init__(None, problem)

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.problem,))


@dataclass(frozen=True)
class PostprocessOverrides:
    """Post-processing settings that replace a model's own (:class:`~nucseg.postprocess.watershed.PostprocessConfig`).

    Each attribute is that of :class:`PostprocessConfig` of the same name, or
    None to keep the model's value (which may differ per image kind).
    """

    foreground_threshold: float | None = None
    marker_threshold: float | None = None
    min_marker_size: int | None = None
    min_size: int | None = None
    max_hole_size: int | None = None
    split_binary: bool | None = None
    split_min_distance: int | None = None
    size_frame: str | None = None

    def __post_init__(self) -> None:
        given = self.to_dict()
        try:  # PostprocessConfig holds the rules of every value
            checked = PostprocessConfig(**given)
        except ValueError as exc:
            raise OptionsError(str(exc)) from None
        for name in given:  # stored as the plain types PostprocessConfig keeps
            object.__setattr__(self, name, getattr(checked, name))

    def to_dict(self) -> dict[str, Any]:
        """The settings given, ``{name: value}`` of JSON types."""
        return {
            item.name: getattr(self, item.name)
            for item in dataclasses.fields(self)
            if getattr(self, item.name) is not None
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | PostprocessOverrides | None) -> PostprocessOverrides:
        """From ``{name: value}`` such as :meth:`to_dict` returns (None or empty: no overrides).

        Raises
        ------
        OptionsError
            Not a mapping, a name that is no setting, or a value out of range.
        """
        if isinstance(data, PostprocessOverrides):
            return data
        if data is None:
            return cls()
        try:
            PostprocessConfig.from_dict(data)  # the names and values it would refuse
        except ValueError as exc:
            raise OptionsError(str(exc)) from None
        return cls(**data)

    def apply(self, base: PostprocessConfig) -> PostprocessConfig:
        """``base`` with these settings in place of its own."""
        return dataclasses.replace(base, **self.to_dict()) if self else base

    def __bool__(self) -> bool:
        return bool(self.to_dict())


def microns_of(diameter: Any) -> float | None:
    """The microns of a diameter written ``"8um"`` or ``"8µm"``; None for anything else."""
    if isinstance(diameter, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(um|µm|micron|microns)\s*", diameter)
        if match and float(match.group(1)) > 0:
            return float(match.group(1))
    return None


_FILE_OPTIONS = ("channel_axis", "axes", "level")  # how a file is read: no option of an array


def _is_number(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))


def _is_whole(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


@dataclass(frozen=True)
class SegmentOptions:
    """Every setting of segmenting an image, validated when made.

    Attributes
    ----------
    scale
        Fixed resize factor before the network (1.0: native resolution);
        replaces automatic sizing. None: see ``diameter``.
    diameter
        ``"auto"`` (the default): size each image automatically; a number:
        the typical nucleus diameter in pixels; ``"8um"``: in microns (for
        files, with their pixel size: :meth:`in_pixels`); None: native
        resolution. A number and ``scale`` are not given together.
    postprocess
        Post-processing settings that replace the model's
        (:class:`PostprocessOverrides`; a mapping such as ``{"min_size": 30}`` is
        turned into one).
    channel
        The channel that shows the nuclei, of multi-channel images: counted
        from 1, or (files) a channel name stored in the file.
    channel_axis
        Files: the channel axis of multi-channel TIFFs that do not declare it.
    axes
        Files: instead of ``channel_axis``, the letters of the axes of files
        that declare none (``ZYX``, ``CYX``, ``YXC``, ``TZYX``, ...;
        :func:`nucseg.io.axes.given_axes`), in capitals.
    level
        Files: the resolution level of a pyramid (a slide, a pyramidal
        OME-TIFF, an OME-Zarr multiscale image) to segment: 0, full
        resolution (the default), 1 the next, ...
        (:func:`nucseg.io.opened.open_image`). Labels, measurements and pixel
        sizes are of that level.
    tile_size, overlap, batch_size
        Network tiles: side in pixels (a multiple of 32), overlap of
        neighbours in pixels, tiles per network call (None: the defaults of
        :mod:`nucseg.inference.tiling`).
    tta
        Test-time augmentation: average over the 4 flips (4x slower).
    backend
        One of :data:`nucseg.inference.BACKENDS`; None: the model's default.

    Raises
    ------
    OptionsError
        A value that cannot be right, in one line.
    """

    scale: float | None = None
    diameter: float | str | None = AUTO_DIAMETER
    postprocess: PostprocessOverrides = field(default_factory=PostprocessOverrides)
    channel: Channel = None
    channel_axis: int | None = None
    axes: str | None = None
    level: int = 0
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    tta: bool = False
    backend: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "postprocess", PostprocessOverrides.from_dict(self.postprocess))
        self._check_size()
        self._check_layout()
        self._check_tiling()
        if not isinstance(self.tta, (bool, np.bool_)):
            raise OptionsError(f"tta must be true or false, got {self.tta!r}")
        object.__setattr__(self, "tta", bool(self.tta))
        if self.backend is not None and self.backend not in BACKENDS:
            raise OptionsError(f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")

    def _check_size(self) -> None:
        scale, diameter = self.scale, self.diameter
        if scale is not None:
            if not (_is_number(scale) and np.isfinite(scale) and scale > 0):
                raise OptionsError(f"scale must be a positive number, got {scale!r}")
            object.__setattr__(self, "scale", float(scale))
        if isinstance(diameter, str):
            if diameter != AUTO_DIAMETER and microns_of(diameter) is None:
                raise OptionsError(
                    f"diameter must be a number of pixels or {AUTO_DIAMETER!r} (or, for files, "
                    f"microns such as '8um'), got {diameter!r}"
                )
        elif diameter is not None:
            if not (_is_number(diameter) and np.isfinite(diameter) and diameter > 0):
                raise OptionsError(f"diameter must be a positive number of pixels, got {diameter!r}")
            object.__setattr__(self, "diameter", float(diameter))
        if scale is not None and diameter is not None and diameter != AUTO_DIAMETER:
            raise OptionsError("give scale or diameter, not both")

    def _check_layout(self) -> None:
        channel = self.channel
        if channel is not None:
            if _is_whole(channel) or (isinstance(channel, str) and channel.strip().isdigit()):
                if int(channel) < 1:
                    raise OptionsError(f"channel {channel!r}: channels are counted from 1")
                if _is_whole(channel):
                    object.__setattr__(self, "channel", int(channel))
            elif not (isinstance(channel, str) and channel.strip()):
                raise OptionsError(f"channel must be a number counted from 1 or a channel name, got {channel!r}")
        if self.channel_axis is not None:
            if not _is_whole(self.channel_axis):
                raise OptionsError(f"channel axis must be a whole number, got {self.channel_axis!r}")
            object.__setattr__(self, "channel_axis", int(self.channel_axis))
        if self.axes is not None:
            if self.channel_axis is not None:
                raise OptionsError("give the axes (--axes) or the channel axis (--channel-axis), not both")
            try:
                object.__setattr__(self, "axes", check_axes_letters(self.axes))
            except InputError as exc:
                raise OptionsError(exc.problem) from None
        if not (_is_whole(self.level) and self.level >= 0):
            raise OptionsError(f"level must be a whole number, 0 (full resolution) or more, got {self.level!r}")
        object.__setattr__(self, "level", int(self.level))

    def _check_tiling(self) -> None:
        for name in ("tile_size", "overlap", "batch_size"):
            value = getattr(self, name)
            if value is not None:
                if not _is_whole(value):
                    raise OptionsError(f"{name} must be a whole number, got {value!r}")
                object.__setattr__(self, name, int(value))
        try:
            check_tiling(*self.tiling())
        except ValueError as exc:
            raise OptionsError(str(exc)) from None

    # ------------------------------------------------------------------ making and reading

    @classmethod
    def from_keywords(cls, options: SegmentOptions | None = None, **keywords: Any) -> SegmentOptions:
        """``options`` (None: the defaults) with ``keywords`` in place of their values.

        Raises
        ------
        TypeError
            A keyword that is no option.
        OptionsError
            As the class.
        """
        unknown = sorted(set(keywords) - {item.name for item in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unexpected segment option(s) {', '.join(unknown)}")
        if options is None:
            return cls(**keywords)
        if not isinstance(options, SegmentOptions):
            raise TypeError(f"options must be SegmentOptions, got {type(options).__name__}")
        return dataclasses.replace(options, **keywords) if keywords else options

    def replace(self, **changes: Any) -> SegmentOptions:
        """These options with ``changes`` (validated as any new options)."""
        return SegmentOptions.from_keywords(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The options that differ from the defaults, ``{name: value}`` of JSON types (``postprocess``: a dict).

        Block-wise runs store it in their scratch group to resume only with
        the same options; :meth:`from_dict` reads it back.
        """
        default = SegmentOptions()
        data = {
            item.name: getattr(self, item.name)
            for item in dataclasses.fields(self)
            if getattr(self, item.name) != getattr(default, item.name)
        }
        if "postprocess" in data:
            data["postprocess"] = self.postprocess.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentOptions:
        """From ``{name: value}`` such as :meth:`to_dict` returns.

        Raises
        ------
        OptionsError
            Not a mapping, a name that is no option, or a value as the class refuses.
        """
        if not isinstance(data, Mapping):
            raise OptionsError(f"segment options must be a mapping, got {type(data).__name__}")
        known = [item.name for item in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise OptionsError(f"unknown segment option(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        return cls(**data)

    # ------------------------------------------------------------------ views

    @property
    def layout(self) -> int | str | None:
        """What the file readers take as ``channel_axis``: the axes letters, else the channel axis."""
        return self.axes if self.axes is not None else self.channel_axis

    @property
    def microns(self) -> float | None:
        """The diameter in microns, when it was given so (``"8um"``)."""
        return microns_of(self.diameter)

    def tiling(self) -> tuple[int, int, int]:
        """(tile size, overlap, batch size) with the defaults of :mod:`nucseg.inference.tiling` filled in."""
        return (
            DEFAULT_TILE_SIZE if self.tile_size is None else self.tile_size,
            DEFAULT_OVERLAP if self.overlap is None else self.overlap,
            DEFAULT_BATCH_SIZE if self.batch_size is None else self.batch_size,
        )

    def network_options(self) -> list[str]:
        """The options given that only a network uses (``tta``, ``scale``, a ``diameter`` not ``"auto"``,
        ``backend``, ``postprocess``)."""
        diameter = self.diameter not in (AUTO_DIAMETER, None)
        return [
            name
            for name, given in (
                ("tta", self.tta),
                ("scale", self.scale is not None),
                ("diameter", diameter),
                ("backend", self.backend is not None),
                ("postprocess", bool(self.postprocess)),
            )
            if given
        ]

    def file_options(self) -> list[str]:
        """The options given that describe files, not arrays (``channel_axis``, ``axes``, a ``level`` above 0)."""
        default = SegmentOptions()
        return [name for name in _FILE_OPTIONS if getattr(self, name) != getattr(default, name)]

    def for_planes(self) -> SegmentOptions:
        """The options of each plane once a file's reader has applied ``channel``, ``channel_axis``, ``axes``
        and ``level``."""
        return dataclasses.replace(self, channel=None, channel_axis=None, axes=None, level=0)

    @classmethod
    def for_array(cls, options: SegmentOptions | None = None, **keywords: Any) -> SegmentOptions:
        """:meth:`from_keywords` for an array: options that describe files (:meth:`file_options`) are refused.

        Raises
        ------
        TypeError, OptionsError
            As :meth:`from_keywords`, or an option that describes files.
        """
        options = cls.from_keywords(options, **keywords)
        given = options.file_options()
        if given:
            raise OptionsError(f"{' and '.join(given)} describe files; an array is (H, W) or (H, W, C), channels last")
        return options

    def in_pixels(self, pixel_size: float | None, path: Path | None = None) -> SegmentOptions:
        """These options with a diameter in microns (``"8um"``) turned into pixels of ``pixel_size`` microns.

        Raises
        ------
        InputError
            A diameter in microns for an image whose pixel size is not known (``path`` names it).
        """
        microns = self.microns
        if microns is None:
            return self
        if pixel_size is None:
            raise InputError(
                path, f"--diameter {self.diameter} is in microns, but the image states no pixel size; give --pixel-size"
            )
        return dataclasses.replace(self, diameter=microns / pixel_size)

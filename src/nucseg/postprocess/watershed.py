"""Class probabilities to instance labels.

The network predicts, for every pixel, the probability of each class:

``three_class`` target, ``C == 3``
    0 background, 1 nucleus interior, 2 nucleus boundary (a thin band at the
    edge of every nucleus, including the line where two nuclei touch).
``binary`` target, ``C == 2``
    0 background, 1 nucleus.
``three_class_distance`` target, ``C == 4``
    the three classes, then (not a probability) the normalized distance to
    the nucleus edge, 1 at a nucleus's centre (:mod:`nucseg.models.outputs`).

:func:`instances_from_probabilities` turns such a map into an instance label
image. For three classes, every connected blob of confident interior seeds one
nucleus, and a marker-controlled watershed on the interior probability grows
the seeds over the whole foreground, so that touching nuclei are cut along the
predicted boundary. With a distance map, the seeds are the blobs of high
predicted distance instead and the flood follows the distance map: touching
nuclei meet in its valley even where the boundary class has a gap. For two
classes, nuclei are the connected components of the foreground, optionally
split by a watershed on their distance transform.

Everything is vectorised over objects (look-up tables built with
``np.bincount``), so the cost grows with the number of pixels, not with
pixels times objects, and 4096 x 4096 images are fine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from nucseg.postprocess import SIZE_FRAMES

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
#: Channel of the distance map in the output of ``three_class_distance`` models.
DISTANCE = 3


@dataclass(frozen=True)
class PostprocessConfig:
    """Settings that turn class probabilities into instance labels.

    Stored (flat, JSON-friendly) in the model folder and tuned per model.

    Attributes
    ----------
    foreground_threshold
        A pixel is nucleus when p(interior) + p(boundary) (three classes) or
        p(nucleus) (two classes) is above this probability, in [0, 1).
    marker_threshold
        Three classes only: pixels with p(interior) (or, with a distance map,
        the predicted distance) above this value, in [0, 1), seed nuclei; each
        connected blob of them seeds one nucleus.
    min_marker_size
        Three classes only: seeds smaller than this many pixels are dropped
        (their foreground still goes to a neighbouring nucleus, or becomes a
        nucleus of its own if it has no other seed).
    min_size
        Nuclei smaller than this many pixels are removed from the result.
    max_hole_size
        Holes in the foreground mask (background regions enclosed by
        foreground) of at most this many pixels are filled before the
        instances are built. 0 fills nothing.
    split_binary
        Two classes only: split touching nuclei with a watershed on the
        distance transform of the foreground. Off by default because it
        over-splits elongated or irregular nuclei; plain connected components
        are what the binary target's seed notebook did.
    split_min_distance
        Two classes with ``split_binary`` only: minimum distance in pixels
        between two seeds (peaks of the distance transform), roughly the
        radius of the smallest nucleus that should be split off.
    size_frame
        Where ``min_size`` and ``min_marker_size`` are counted: ``"image"``,
        pixels of the image as given; ``"network"``, pixels at the scale the
        network ran at (automatic sizing's factor), so that one setting fits
        small and large nuclei alike. :meth:`at_scale` turns the latter into
        the former for one image.
    """

    foreground_threshold: float = 0.5
    marker_threshold: float = 0.5
    min_marker_size: int = 4
    min_size: int = 10
    max_hole_size: int = 0
    split_binary: bool = False
    split_min_distance: int = 5
    size_frame: str = "image"

    def __post_init__(self) -> None:
        # Values are checked, then stored as plain Python types so that to_dict() is JSON-serializable.
        for name in ("foreground_threshold", "marker_threshold"):
            value = getattr(self, name)
            if (
                isinstance(value, (bool, np.bool_))
                or not isinstance(value, (int, float, np.integer, np.floating))
                or not 0.0 <= value < 1.0
            ):
                raise ValueError(f"postprocess {name} must be a probability in [0, 1), got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("min_marker_size", "min_size", "max_hole_size", "split_min_distance"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"postprocess {name} must be a non-negative integer (pixels), got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.split_min_distance < 1:
            raise ValueError(f"postprocess split_min_distance must be at least 1 pixel, got {self.split_min_distance}")
        if not isinstance(self.split_binary, (bool, np.bool_)):
            raise ValueError(f"postprocess split_binary must be true or false, got {self.split_binary!r}")
        object.__setattr__(self, "split_binary", bool(self.split_binary))
        if self.size_frame not in SIZE_FRAMES:
            raise ValueError(f"postprocess size_frame must be one of {', '.join(SIZE_FRAMES)}, got {self.size_frame!r}")

    def at_scale(self, scale: float) -> PostprocessConfig:
        """These settings for an image the network ran on at ``scale``, sizes in the image's pixels.

        With ``size_frame == "network"``, ``min_size`` and ``min_marker_size``
        are divided by ``scale ** 2`` (an area in network pixels is that many
        image pixels times ``scale ** 2``), rounded, seeds kept at 1 pixel or
        more; ``"image"`` settings come back as they are.

        Parameters
        ----------
        scale
            Resize factor the network ran at (> 1: the image was enlarged).

        Returns
        -------
        PostprocessConfig
            With ``size_frame == "image"``.
        """
        if self.size_frame == "image":
            return self
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale}")
        area = float(scale) ** 2
        return dataclasses.replace(
            self,
            size_frame="image",
            min_size=round(self.min_size / area),
            min_marker_size=max(1, round(self.min_marker_size / area)) if self.min_marker_size else 0,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{name: value}`` dict of JSON types."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostprocessConfig:
        """Build from a dict such as :meth:`to_dict` returns; missing keys keep their defaults.

        Raises
        ------
        ValueError
            A key is not a setting (typo or a newer format), or a value is out of range.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"postprocess settings must be a mapping, got {type(data).__name__}")
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(
                f"unknown postprocess setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        return cls(**data)


def instances_from_probabilities(
    probabilities: np.ndarray,
    config: PostprocessConfig = PostprocessConfig(),
    *,
    scale: float = 1.0,
) -> np.ndarray:
    """Instance labels from per-pixel class probabilities.

    Parameters
    ----------
    probabilities : ndarray of float, shape (C, H, W)
        Class probabilities summing to 1 over the classes. C == 3: background,
        interior, boundary. C == 2: background, nucleus. C == 4: the three
        classes, then the distance map in [0, 1].
    config
        Thresholds and size limits, see :class:`PostprocessConfig`.
    scale
        Resize factor the network ran at, for sizes given at network scale
        (:meth:`PostprocessConfig.at_scale`); the probabilities themselves are
        at the image's resolution.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 background, nuclei numbered 1..N without gaps.

    Raises
    ------
    ValueError
        Not a (C, H, W) array with C in {2, 3, 4}, or NaN / infinite values.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[0] not in (2, 3, 4):
        raise ValueError(f"probabilities must have shape (C, H, W) with C = 2, 3 or 4, got {probabilities.shape}")
    if probabilities.dtype.kind != "f":
        raise ValueError(f"probabilities must be floating point, got {probabilities.dtype}")
    if not np.isfinite(probabilities).all():
        raise ValueError("probabilities contain NaN or infinite values")
    config = config.at_scale(scale)
    if probabilities.shape[0] >= 3:
        labels = _instances_three_class(probabilities, config)
    else:
        labels = _instances_binary(probabilities, config)
    return remove_small_labels(labels, config.min_size)


def _instances_three_class(probabilities: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    from skimage.segmentation import watershed

    interior = probabilities[INTERIOR]
    foreground = (interior + probabilities[BOUNDARY]) > config.foreground_threshold
    foreground = fill_small_holes(foreground, config.max_hole_size)
    seed_map = probabilities[DISTANCE] if probabilities.shape[0] > DISTANCE else interior
    seeds, _ = ndi.label((seed_map > config.marker_threshold) & foreground)
    seeds = remove_small_labels(seeds, config.min_marker_size)
    markers = add_unseeded_components(seeds, foreground)
    if not markers.any():
        return markers
    # Flooding in order of decreasing p(interior) (or distance) fills the
    # confident interior first, so neighbouring seeds meet on the predicted
    # boundary line. Only the bounding box of the foreground is flooded, which
    # matters for sparse fields in large images.
    box = _bounding_box(foreground)
    markers[box] = watershed(-seed_map[box], _marker_edges(markers[box]), mask=foreground[box])
    return markers


def _marker_edges(markers: np.ndarray) -> np.ndarray:
    """Markers without their inner pixels (all four neighbours in the marker, none outside the image).

    Different markers are never 4-adjacent (they are distinct 4-connected
    components), so a flood from a marker's edge can only give its inner
    pixels back to the same marker; but the watershed queue no longer holds
    every marker pixel, which roughly halves its time on large images.
    """
    inner = ndi.binary_erosion(markers > 0, border_value=0)
    return np.where(inner, 0, markers)


def _instances_binary(probabilities: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    foreground = probabilities[1] > config.foreground_threshold
    foreground = fill_small_holes(foreground, config.max_hole_size)
    if config.split_binary:
        return split_by_distance(foreground, min_distance=config.split_min_distance)
    labels, _ = ndi.label(foreground)
    return labels.astype(np.int32, copy=False)


def split_by_distance(mask: np.ndarray, *, min_distance: int) -> np.ndarray:
    """Split a binary mask into objects with a watershed on its distance transform.

    Every local maximum of the Euclidean distance to the background, at least
    ``min_distance`` pixels from a higher one, seeds one object; touching
    round objects are cut at their neck. Connected components that get no
    seed are kept as objects of their own.

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
    min_distance : int
        Minimum distance between seeds in pixels (about the radius of the
        smallest object that should be split off).

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 background, objects 1..N (not necessarily sequential).
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    mask = np.asarray(mask, dtype=bool)
    labels = np.zeros(mask.shape, dtype=np.int32)
    if not mask.any():
        return labels
    box = _bounding_box(mask)
    mask_box = mask[box]
    distance = ndi.distance_transform_edt(mask_box)
    # Peaks per connected component, so that a neighbour's peak never suppresses a component's own.
    peaks = peak_local_max(
        distance, min_distance=max(1, int(min_distance)), exclude_border=False, labels=ndi.label(mask_box)[0]
    )
    is_peak = np.zeros(mask_box.shape, dtype=bool)
    is_peak[tuple(peaks.T)] = True
    # Adjacent peaks (a plateau maximum with min_distance 1) make one seed.
    seeds, _ = ndi.label(is_peak, structure=np.ones((3, 3), dtype=bool))
    markers = add_unseeded_components(seeds.astype(np.int32, copy=False), mask_box)
    labels[box] = watershed(-distance, markers, mask=mask_box)
    return labels


def add_unseeded_components(seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Add every connected component of ``mask`` that holds no seed as a seed of its own.

    Parameters
    ----------
    seeds : ndarray of int, shape (H, W)
        0 outside seeds, seed ids 1..K (need not be sequential).
    mask : ndarray of bool, shape (H, W)
        Foreground; components use 4-connectivity.

    Returns
    -------
    markers : ndarray of int32, shape (H, W)
        The seeds, plus each unseeded component of ``mask`` filled with a new
        id above ``seeds.max()``.
    """
    markers = np.asarray(seeds).astype(np.int32)
    components, n_components = ndi.label(mask)
    if n_components == 0:
        return markers
    seeded = np.zeros(n_components + 1, dtype=bool)
    seeded[components[markers > 0]] = True
    seeded[0] = True
    unseeded = ~seeded
    new_ids = np.zeros(n_components + 1, dtype=np.int32)
    new_ids[unseeded] = int(markers.max(initial=0)) + np.arange(1, int(unseeded.sum()) + 1, dtype=np.int32)
    extra = new_ids[components]
    np.copyto(markers, extra, where=extra > 0)
    return markers


def remove_small_labels(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Remove objects smaller than ``min_size`` pixels and renumber the rest 1..N.

    Parameters
    ----------
    labels : ndarray of non-negative int, shape (H, W)
    min_size : int
        Objects with fewer pixels are set to 0.

    Returns
    -------
    ndarray of int32, shape (H, W)
        Sequential labels 1..N in the order of the input ids.
    """
    labels = np.asarray(labels)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(int(min_size), 1)
    keep[0] = False
    lookup = np.zeros(sizes.size, dtype=np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lookup[labels]


def fill_small_holes(mask: np.ndarray, max_hole_size: int) -> np.ndarray:
    """Fill background regions of at most ``max_hole_size`` pixels that the mask encloses.

    Background regions touching the image border are never holes.
    (``skimage.morphology.remove_small_holes`` does the same, but its size
    argument changed name and meaning between scikit-image releases.)

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
    max_hole_size : int
        Largest hole to fill, in pixels; 0 returns ``mask`` unchanged.

    Returns
    -------
    ndarray of bool, shape (H, W)
    """
    mask = np.asarray(mask, dtype=bool)
    if max_hole_size <= 0:
        return mask
    background, _ = ndi.label(~mask)
    sizes = np.bincount(background.ravel())
    is_hole = sizes <= max_hole_size
    is_hole[0] = False
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        is_hole[edge] = False
    return mask | is_hole[background]


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)

"""Per-nucleus measurements: position, size, shape and intensity.

:func:`measure_nuclei` gives one row per nucleus of a label image, computed
with ``skimage.measure.regionprops_table``. Every column that has a unit
names it (``area_px`` or ``area_um2``), so that a table never hides its
unit. Sizes are in pixels, or in microns when the pixel size is known;
positions are pixel coordinates (to find the nucleus in the image), and, with
a pixel size, the centroid in microns too.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nucseg.io.atomic import atomic_write

_SHAPE_PROPERTIES = (
    "label",
    "centroid",
    "area",
    "perimeter",
    "equivalent_diameter_area",
    "eccentricity",
    "solidity",
    "bbox",
)


@dataclass(frozen=True)
class NucleusTable:
    """Measurements, one row per nucleus, in label order.

    Attributes
    ----------
    columns
        Column names in output order (see :func:`measure_nuclei`).
    rows
        One ``{column: value}`` dict per nucleus; values are Python ints and floats.
    """

    columns: tuple[str, ...]
    rows: list[dict[str, int | float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        """All values of one column as a 1-D array (length: number of nuclei)."""
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns)}")
        return np.array([row[name] for row in self.rows])


def measurement_columns(
    channels: int = 0, *, pixel_size: float | None = None, channel_names: Sequence[str] | None = None
) -> tuple[str, ...]:
    """Column names of :func:`measure_nuclei` for ``channels`` intensity channels (0: no image)."""
    names = _intensity_names(channels, channel_names)
    size_unit, area_unit = ("px", "px") if pixel_size is None else ("um", "um2")
    columns = [
        "label",
        "centroid_y_px",
        "centroid_x_px",
        *(("centroid_y_um", "centroid_x_um") if pixel_size is not None else ()),
        f"area_{area_unit}",
        f"perimeter_{size_unit}",
        f"equivalent_diameter_{size_unit}",
        "eccentricity",
        "solidity",
        "min_row_px",
        "min_col_px",
        "max_row_px",
        "max_col_px",
    ]
    columns += [f"mean_intensity_{name}" for name in names]
    columns += [f"max_intensity_{name}" for name in names]
    return tuple(columns)


def _intensity_names(channels: int, channel_names: Sequence[str] | None) -> list[str]:
    """What the intensity columns call each channel: ``channel_names``, or 0, 1, ... by position."""
    if channel_names is None:
        return [str(c) for c in range(channels)]
    if len(channel_names) != channels or len(set(channel_names)) != channels:
        raise ValueError(
            f"channel_names must name each of the image's {channels} channel(s) once, got {list(channel_names)}"
        )
    return list(channel_names)


def measure_nuclei(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    pixel_size: float | None = None,
    channel_names: Sequence[str] | None = None,
) -> NucleusTable:
    """Measure every nucleus of a label image.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 background, one positive id per nucleus (need not be sequential).
    image : ndarray, shape (H, W) or (H, W, C), optional
        Intensity image, any dtype; every channel is measured (drop an alpha
        channel first if it should not be).
    pixel_size
        Microns per pixel. When given, areas are in µm² and lengths in µm.
    channel_names
        What the intensity columns call each channel of ``image`` (e.g.
        ``["DAPI"]`` for the channel a file names so); by default its
        position, 0, 1, ...

    Returns
    -------
    NucleusTable
        Columns, in order (see :func:`measurement_columns`):

        ``label``
            the nucleus id in ``labels``;
        ``centroid_y_px``, ``centroid_x_px``
            centre of mass, pixel coordinates (row, column);
        ``centroid_y_um``, ``centroid_x_um``
            the same in microns from the image's top-left corner (with ``pixel_size`` only);
        ``area_px`` / ``area_um2``
            number of pixels, or area in µm²;
        ``perimeter_px`` / ``perimeter_um``
            contour length (scikit-image's 4-connected estimate);
        ``equivalent_diameter_px`` / ``equivalent_diameter_um``
            diameter of the disc of the same area;
        ``eccentricity``
            of the ellipse with the same second moments, 0 (circle) to 1;
        ``solidity``
            area / convex hull area, 0 to 1;
        ``min_row_px``, ``min_col_px``, ``max_row_px``, ``max_col_px``
            bounding box in pixels, max exclusive (``labels[min_row:max_row, min_col:max_col]``);
        ``mean_intensity_<c>``, ``max_intensity_<c>``
            per channel ``c`` of ``image`` (only with ``image``; ``c`` its
            position or its name in ``channel_names``), in image units.

    Raises
    ------
    ValueError
        ``labels`` not 2-D integer non-negative, ``image`` of another height and
        width, ``pixel_size`` not a positive number, or ``channel_names``
        not one distinct name per channel.
    """
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 2-D integer array, got {labels.dtype} of shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative")
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"pixel_size must be a positive number of microns per pixel, got {pixel_size!r}")
    channels = 0
    if image is not None:
        image = np.asarray(image)
        if image.ndim not in (2, 3) or image.shape[:2] != labels.shape:
            raise ValueError(f"image of shape {image.shape} does not match labels of shape {labels.shape}")
        image = image[:, :, None] if image.ndim == 2 else image
        channels = image.shape[2]
    columns = measurement_columns(channels, pixel_size=pixel_size, channel_names=channel_names)
    if not labels.any():
        return NucleusTable(columns, [])

    table = regionprops_table(labels, properties=_SHAPE_PROPERTIES)
    scale = 1.0 if pixel_size is None else float(pixel_size)
    size_unit, area_unit = ("px", "px") if pixel_size is None else ("um", "um2")
    values = {
        "label": table["label"],
        "centroid_y_px": table["centroid-0"],
        "centroid_x_px": table["centroid-1"],
        "centroid_y_um": table["centroid-0"] * scale,
        "centroid_x_um": table["centroid-1"] * scale,
        f"area_{area_unit}": table["area"] * scale**2 if pixel_size is not None else table["area"].astype(np.int64),
        f"perimeter_{size_unit}": table["perimeter"] * scale,
        f"equivalent_diameter_{size_unit}": table["equivalent_diameter_area"] * scale,
        "eccentricity": table["eccentricity"],
        "solidity": table["solidity"],
        "min_row_px": table["bbox-0"],
        "min_col_px": table["bbox-1"],
        "max_row_px": table["bbox-2"],
        "max_col_px": table["bbox-3"],
    }
    if channels:
        intensities = regionprops_table(labels, image, properties=("intensity_mean", "intensity_max"))
        for c, name in enumerate(_intensity_names(channels, channel_names)):
            values[f"mean_intensity_{name}"] = intensities[f"intensity_mean-{c}"]
            values[f"max_intensity_{name}"] = intensities[f"intensity_max-{c}"]
    rows = [dict(zip(columns, row)) for row in zip(*(values[name].tolist() for name in columns))]
    return NucleusTable(columns, rows)


def median_nucleus_diameter(label_images: Sequence[np.ndarray]) -> float | None:
    """Median equivalent diameter over all nuclei of several label images.

    Parameters
    ----------
    label_images : sequence of ndarray of int, shape (H, W)
        0 background, >0 nucleus ids.

    Returns
    -------
    float or None
        The median of ``2 * sqrt(area / pi)`` in pixels over every nucleus of
        every image; None if there are no nuclei.
    """
    areas = [np.bincount(np.asarray(labels).ravel())[1:] for labels in label_images]
    return median_diameter_of_areas(np.concatenate(areas) if areas else np.zeros(0))


def median_diameter_of_areas(areas: np.ndarray) -> float | None:
    """Median of ``2 * sqrt(area / pi)`` over the nonzero ``areas`` (pixels); None if there are none."""
    areas = np.asarray(areas)
    areas = areas[areas > 0]
    return float(np.median(2 * np.sqrt(areas / np.pi))) if areas.size else None


#: :func:`size_factor` leaves an image at its native resolution when its nuclei are within this
#: factor of the wanted diameter (either way): a rescale that small changes little and, at
#: inference, costs a second network pass.
AUTO_SCALE_TOLERANCE = 1.1
#: Smallest and largest resize factor of :func:`size_factor`: nuclei from 0.4 to 2 times the training
#: diameter (about 9 to 46 px for the default model) are brought to it. Chosen on validation images resized by 0.4
#: (nuclei of about 9 px, as a 10x objective shows them): an upper limit of 2.5 against 1.5 raised their DSB score
#: from 0.378 to 0.425 and left the unresized images as they were (0.554 against 0.552); 3.0 scored as 2.5.
#: Below 0.5 the large ISBI 2009 nuclei lost (docs/results.md, "Sizing range").
AUTO_SCALE_LIMITS = (0.5, 2.5)


def size_factor(labels: np.ndarray, diameter: float | None) -> float:
    """Resize factor that brings the nuclei of a label image to a wanted diameter.

    Automatic sizing (``NetworkModel.segment(diameter="auto")``) resizes an
    image by this factor, computed from the nuclei of a first pass.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 background, >0 nucleus ids.
    diameter : float or None
        Wanted median equivalent diameter, pixels.

    Returns
    -------
    float
        ``diameter / d`` for the median equivalent diameter ``d`` of the
        nuclei (:func:`median_nucleus_diameter`), clipped to
        :data:`AUTO_SCALE_LIMITS`; 1.0 when that is within
        :data:`AUTO_SCALE_TOLERANCE` of 1, when ``labels`` holds no nucleus,
        or when ``diameter`` is None.
    """
    measured = median_nucleus_diameter([labels])
    if measured is None or diameter is None:
        return 1.0
    factor = float(np.clip(diameter / measured, *AUTO_SCALE_LIMITS))
    return 1.0 if abs(np.log(factor)) <= np.log(AUTO_SCALE_TOLERANCE) else factor


def write_measurements_csv(table: NucleusTable, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write a :class:`NucleusTable` as CSV (header line, one line per nucleus), atomically.

    Floats are written with 7 significant digits. A table without nuclei
    gives a file with the header only.

    Raises
    ------
    FileExistsError
        ``overwrite`` is False and ``path`` exists.
    """
    with atomic_write(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(table.columns)
            for row in table.rows:
                writer.writerow([_format(row[name]) for name in table.columns])
    return Path(path)


def _format(value: int | float) -> str:
    return f"{value:.7g}" if isinstance(value, float) else str(value)

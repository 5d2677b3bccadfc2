"""The outputs of a segmented image: their file names, and one writer per output.

Every output of an image ``X`` is named here (:data:`OUTPUTS`), and each has
one writer that the whole-image path (:mod:`nucseg.batch.whole`) and the
block-wise path (:mod:`nucseg.batch.blockwise`) both call. The writers take
the nuclei *piece by piece*: the whole image's (or each plane's, of a stack),
or each block's own nuclei, so that a slide's outputs are written without
its label image in memory. Each piece becomes a *fragment* (made where the
piece is, on a worker for a block), and the writer's ``write`` joins the
fragments into the file, atomically, reading one at a time.

``labels``
    ``X_labels.tif`` (:class:`LabelsWriter`): a compressed TIFF of a label
    image in memory, or a block-wise run's stitched Zarr array streamed into
    a tiled TIFF (or moved into place as ``X_labels.zarr``).
``overlay``
    ``X_overlay.png`` (:class:`OverlayWriter`): outlines on the image; of a
    block-wise image, an overview shrunk to at most :data:`OVERVIEW_SIDE`
    pixels on its longer side, from every block's strided core.
``nuclei``
    ``X_nuclei.csv`` (:class:`MeasurementsWriter`): one row per nucleus
    (:func:`nucseg.postprocess.measure.measure_nuclei`), led by a ``plane``
    column for a stack.

``geojson``
    ``X_nuclei.geojson``: a GeoJSON FeatureCollection as QuPath's *File >
    Import objects* reads it: one Feature per nucleus, ``objectType``
    ``detection``, its outline a Polygon (holes as interior rings) or a
    MultiPolygon (a label in several pieces) along pixel edges of the
    full-resolution image, its measurements (as ``X_nuclei.csv`` has them)
    under ``measurements``.
``rois``
    ``X_rois.zip``: ImageJ ROIs (``roifile``), one per nucleus, that Fiji's
    ROI Manager opens: a traced polygon, or a composite ROI for a nucleus
    with a hole or in several pieces; named by label (and positioned on
    their plane in a stack).

The OME-Zarr output (``X.ome.zarr``) is written by :mod:`nucseg.io.ngff`
from the image and its labels, region by region. The Kaggle DSB2018
submission of a batch (``--rle``) has its writer too (:class:`RleWriter`),
one fragment per image.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
import zipfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg.batch.scratch import move_into_place, write_tiled_tiff
from nucseg.io.atomic import atomic_directory, atomic_write
from nucseg.io.images import labels_dtype, write_labels, write_png
from nucseg.io.ngff import create_ngff, NgffImage, write_region
from nucseg.io.rle import join_submission, submission_lines
from nucseg.postprocess.measure import NucleusTable, write_measurements_csv
from nucseg.postprocess.outlines import nucleus_outlines, Outline
from nucseg.visualize import outline_overlay

#: Output of an image ``X`` -> what follows ``X`` in its file name. ``labels`` is always written.
OUTPUTS: dict[str, str] = {
    "labels": "_labels.tif",
    "overlay": "_overlay.png",
    "nuclei": "_nuclei.csv",
    "geojson": "_nuclei.geojson",
    "rois": "_rois.zip",
    "ome_zarr": ".ome.zarr",
}


def output_paths(
    out_dir: str | Path, name: str, *, overlay: bool = False, measure: bool = False, outputs: Collection[str] = ()
) -> dict[str, Path]:
    """Output files of one image: ``labels`` always, and those asked for (``overlay``, ``measure``: ``nuclei``,
    and any of :data:`OUTPUTS` in ``outputs``), in the order of :data:`OUTPUTS`."""
    asked = {"labels", *outputs} | ({"overlay"} if overlay else set()) | ({"nuclei"} if measure else set())
    unknown = asked - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown output(s) {', '.join(sorted(unknown))}; choose from {', '.join(OUTPUTS)}")
    return {key: Path(out_dir) / f"{name}{suffix}" for key, suffix in OUTPUTS.items() if key in asked}


@dataclass(frozen=True)
class NucleiPiece:
    """The nuclei of an image, or of one block or plane of it, that a writer writes.

    Attributes
    ----------
    labels : ndarray, shape (H, W)
        The piece's nuclei; every other pixel 0.
    offset
        ``(top, left)`` of ``labels`` in the full image, pixels.
    table
        Measurements of the piece's nuclei in image coordinates, one row per label (None: none taken).
    plane
        Index of the plane of a stack (0-based, planes in file order), None for a 2-D image.
    plane_name
        That plane's name (``z=3``), None for a 2-D image.
    pixels : ndarray, shape (H, W) or (H, W, C), optional
        The image under ``labels``, for the overlay.
    name
        The image's name, for the Kaggle submission.
    """

    labels: np.ndarray
    offset: tuple[int, int] = (0, 0)
    table: NucleusTable | None = None
    plane: int | None = None
    plane_name: str | None = None
    pixels: np.ndarray | None = None
    name: str | None = None

    def outlines(self) -> list[Outline]:
        return nucleus_outlines(self.labels, offset=self.offset)

    def rows_by_label(self) -> dict[int, dict]:
        return {} if self.table is None else {int(row["label"]): row for row in self.table.rows}


class OutlineWriter:
    """A format of nucleus outlines: fragments made piece by piece, joined into one file."""

    #: Its key in :data:`OUTPUTS`.
    key = ""

    def fragment(self, piece: NucleiPiece) -> bytes:
        """The bytes that stand for ``piece``'s nuclei in the file (empty for none)."""
        raise NotImplementedError

    def write(self, path: str | Path, fragments: Iterable[bytes], *, overwrite: bool = True) -> Path:
        """Join ``fragments`` (read one at a time) into the file at ``path``, atomically."""
        raise NotImplementedError


class GeoJsonWriter(OutlineWriter):
    """``X_nuclei.geojson`` for QuPath (see the module documentation)."""

    key = "geojson"

    def fragment(self, piece: NucleiPiece) -> bytes:
        import shapely

        rows = piece.rows_by_label()
        features = []
        for outline in piece.outlines():
            row = rows.get(outline.label, {})
            properties = {
                "objectType": "detection",
                "name": f"nucleus {outline.label}",
                "measurements": {
                    "label": outline.label,
                    **{
                        column: value
                        for column, value in row.items()  # JSON has no NaN
                        if isinstance(value, (int, float, np.number)) and np.isfinite(value) and column != "label"
                    },
                },
            }
            if piece.plane_name is not None:
                properties["plane"] = piece.plane_name
            identity = uuid.uuid5(uuid.NAMESPACE_OID, f"nucseg/{piece.plane}/{outline.label}")
            features.append(
                f'{{"type": "Feature", "id": "{identity}", '
                f'"geometry": {shapely.to_geojson(outline.geometry)}, '
                f'"properties": {json.dumps(properties, default=float)}}}'
            )
        return ",\n".join(features).encode()

    def write(self, path: str | Path, fragments: Iterable[bytes], *, overwrite: bool = True) -> Path:
        with atomic_write(path, overwrite=overwrite) as tmp, open(tmp, "wb") as file:
            file.write(b'{"type": "FeatureCollection", "features": [\n')
            first = True
            for fragment in fragments:
                if fragment:
                    file.write(fragment if first else b",\n" + fragment)
                    first = False
            file.write(b"\n]}\n")
        return Path(path)


class ImageJRoisWriter(OutlineWriter):
    """``X_rois.zip`` for Fiji's ROI Manager (see the module documentation)."""

    key = "rois"

    def fragment(self, piece: NucleiPiece) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for outline in piece.outlines():
                name = str(outline.label) if piece.plane is None else f"{piece.plane_name} {outline.label}"
                roi = _imagej_roi(outline.geometry, name)
                if piece.plane is not None:
                    roi.position = piece.plane + 1
                entry = f"{outline.label:07d}" if piece.plane is None else f"{piece.plane:04d}-{outline.label:07d}"
                archive.writestr(f"{entry}.roi", roi.tobytes())
        return buffer.getvalue()

    def write(self, path: str | Path, fragments: Iterable[bytes], *, overwrite: bool = True) -> Path:
        with atomic_write(path, overwrite=overwrite) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for fragment in fragments:
                if fragment:
                    with zipfile.ZipFile(io.BytesIO(fragment)) as part:
                        for entry in part.namelist():
                            archive.writestr(entry, part.read(entry))
        return Path(path)


def _imagej_roi(geometry, name: str):
    """A traced polygon ROI, or a composite ROI (even-odd rings) for holes and several pieces."""
    import roifile

    polygons = list(getattr(geometry, "geoms", [geometry]))
    rings = [ring for polygon in polygons for ring in (polygon.exterior, *polygon.interiors)]
    if len(rings) == 1:
        roi = roifile.ImagejRoi.frompoints(np.asarray(rings[0].coords, dtype=np.int64)[:-1], name=name)
        roi.roitype = roifile.ROI_TYPE.TRACED
        return roi
    path = []
    for ring in rings:
        points = np.asarray(ring.coords)[:-1]
        path += [0.0, *points[0]]
        for x, y in points[1:]:
            path += [1.0, x, y]
        path.append(4.0)
    left, top, right, bottom = geometry.bounds
    roi = roifile.ImagejRoi(
        roitype=roifile.ROI_TYPE.RECT, name=name, left=int(left), top=int(top), right=int(right), bottom=int(bottom)
    )
    roi.multi_coordinates = np.asarray(path, dtype=np.float32)
    roi.shape_roi_size = len(path)
    return roi


#: The writers of outlines by their key in :data:`OUTPUTS`.
OUTLINE_WRITERS: dict[str, OutlineWriter] = {writer.key: writer for writer in (GeoJsonWriter(), ImageJRoisWriter())}


# ------------------------------------------------------- labels, overlay, measurements, RLE


class LabelsWriter:
    """``X_labels.tif`` (or a block-wise run's ``X_labels.zarr``)."""

    key = "labels"

    def write(self, path: str | Path, labels: np.ndarray | Path, *, axes: str = "YX", overwrite: bool = True) -> Path:
        """Write ``labels``, atomically.

        Parameters
        ----------
        labels : ndarray of int, shape (..., H, W), or Path
            A label image in memory (:func:`nucseg.io.images.write_labels`,
            ``axes`` naming its axes), or the folder of a 2-D Zarr array (a
            block-wise run's stitched labels): streamed into a tiled TIFF a
            row of its chunks at a time, or moved into place for a ``.zarr`` ``path``.
        """
        path = Path(path)
        if isinstance(labels, np.ndarray):
            return write_labels(path, labels, overwrite=overwrite, axes=axes)
        if path.suffix.lower() == ".zarr":
            move_into_place(Path(labels), path, overwrite=overwrite)
        else:
            import zarr

            array = zarr.open_array(str(labels), mode="r")
            write_tiled_tiff(array, path, tile=array.chunks[0], overwrite=overwrite)
        return path


#: Longest side of the overview overlay of a block-wise image, pixels.
OVERVIEW_SIDE = 4096


def overview_step(shape: tuple[int, int]) -> int:
    """The stride of the overview of an image of ``shape`` (H, W): its longer side at most :data:`OVERVIEW_SIDE`."""
    return max(1, -(-max(shape) // OVERVIEW_SIDE))


@dataclass(frozen=True)
class OverlayPart:
    """A piece's share of the overlay: its pixels and labels every ``step``-th pixel, placed at ``(top, left)``."""

    top: int
    left: int
    pixels: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class OverlayWriter:
    """``X_overlay.png``: outlines on an image of ``shape`` (H, W), every ``step``-th pixel (1: full size).

    Each piece (with its ``pixels``) gives its pixels on the global grid of
    the stride; :meth:`write` pastes them into place and draws the outlines
    ``outline_width`` pixels wide (:func:`nucseg.visualize.outline_overlay`).
    """

    shape: tuple[int, int]
    step: int = 1
    outline_width: int = 1
    key = "overlay"

    def fragment(self, piece: NucleiPiece) -> OverlayPart:
        step, (top, left) = self.step, piece.offset
        first_row, first_col = (-top) % step, (-left) % step  # stay on the global grid of the overview
        return OverlayPart(
            -(-top // step),
            -(-left // step),
            piece.pixels[first_row::step, first_col::step],
            piece.labels[first_row::step, first_col::step],
        )

    def write(self, path: str | Path, fragments: Iterable[OverlayPart], *, overwrite: bool = True) -> Path:
        parts = list(fragments)
        height, width = (-(-n // self.step) for n in self.shape)
        if len(parts) == 1 and parts[0].labels.shape == (height, width):  # the whole image: drawn as it is
            image, labels = parts[0].pixels, parts[0].labels
        else:
            sample = parts[0].pixels
            image = np.zeros((height, width) + sample.shape[2:], dtype=sample.dtype)
            labels = np.zeros((height, width), dtype=np.uint32)
            for part in parts:
                rows, cols = part.labels.shape
                image[part.top : part.top + rows, part.left : part.left + cols] = part.pixels
                labels[part.top : part.top + rows, part.left : part.left + cols] = part.labels
        return write_png(path, outline_overlay(image, labels, width=self.outline_width), overwrite=overwrite)


class MeasurementsWriter:
    """``X_nuclei.csv``: the rows of every piece's table (:attr:`NucleiPiece.table`), by plane, then label."""

    key = "nuclei"

    def fragment(self, piece: NucleiPiece) -> NucleusTable:
        """The piece's table, led by a ``plane`` column for a plane of a stack."""
        table = piece.table
        if piece.plane_name is None:
            return table
        return NucleusTable(("plane", *table.columns), [{"plane": piece.plane_name, **row} for row in table.rows])

    def write(self, path: str | Path, fragments: Iterable[NucleusTable], *, overwrite: bool = True) -> Path:
        tables = list(fragments)
        planes: dict[str | None, int] = {}  # planes in the order they come; blocks' rows by label
        rows = sorted(
            (row for table in tables for row in table.rows),
            key=lambda row: (planes.setdefault(row.get("plane"), len(planes)), row["label"]),
        )
        return write_measurements_csv(NucleusTable(tables[0].columns, rows), path, overwrite=overwrite)


class RleWriter:
    """A Kaggle DSB2018 submission CSV of a batch (:mod:`nucseg.io.rle`): one fragment per image, by its name."""

    key = "rle"

    def fragment(self, piece: NucleiPiece) -> str:
        return submission_lines(piece.name, piece.labels)

    def write(self, path: str | Path, fragments: Iterable[str], *, overwrite: bool = True) -> Path:
        return join_submission(path, fragments, overwrite=overwrite)


LABELS_WRITER = LabelsWriter()
MEASUREMENTS_WRITER = MeasurementsWriter()
RLE_WRITER = RleWriter()


# ---------------------------------------------------------------------- OME-Zarr


def ngff_layout(
    pixels_shape: tuple[int, ...],
    dtype: np.dtype,
    plane_shape: tuple[int, ...],
    plane_axes: str,
    *,
    pixel_size: float | None,
    channel_names: Collection[str] | None,
) -> NgffImage:
    """The NGFF layout of an image read as ``(*plane_shape, H, W)`` or ``(*plane_shape, H, W, C)``."""
    planes = len(plane_shape)
    height, width = pixels_shape[planes : planes + 2]
    channels = pixels_shape[planes + 2] if len(pixels_shape) > planes + 2 else 0
    sizes = {**dict(zip(plane_axes.lower(), plane_shape)), "y": height, "x": width}
    if channels:
        sizes["c"] = channels
    axes = "".join(axis for axis in "tczyx" if axis in sizes)
    names = tuple(channel_names or ()) if channels and channel_names and len(channel_names) == channels else ()
    return NgffImage(axes, tuple(sizes[axis] for axis in axes), np.dtype(dtype), pixel_size, names)


def to_ngff_order(pixels: np.ndarray, layout: NgffImage, plane_axes: str) -> np.ndarray:
    """``pixels`` as read (``(*planes, H, W[, C])``, planes in ``plane_axes`` order) in ``layout``'s axis order."""
    read_axes = plane_axes.lower() + "yx" + ("c" if "c" in layout.axes else "")
    return np.transpose(pixels, [read_axes.index(axis) for axis in layout.axes])


def write_ome_zarr(
    path: str | Path,
    pixels: np.ndarray,
    labels: np.ndarray,
    *,
    plane_shape: tuple[int, ...] = (),
    plane_axes: str = "",
    pixel_size: float | None = None,
    channel_names: Collection[str] | None = None,
    name: str = "image",
    overwrite: bool = True,
) -> Path:
    """Write an image in memory and its labels as ``X.ome.zarr`` (see :mod:`nucseg.io.ngff`), atomically.

    Parameters
    ----------
    pixels : ndarray, shape (*plane_shape, H, W) or (*plane_shape, H, W, C)
        The image, with every channel.
    labels : ndarray of int, shape (*plane_shape, H, W)
        Its nuclei.
    plane_shape, plane_axes
        The stack's plane axes (``(5,)``, ``"Z"``; ``()``, ``""`` for a 2-D image).
    pixel_size
        Micrometres per pixel (None: unknown).
    channel_names
        Names of the channels (stored as ``omero`` channel labels).
    """
    layout = ngff_layout(
        pixels.shape, pixels.dtype, plane_shape, plane_axes, pixel_size=pixel_size, channel_names=channel_names
    )
    with atomic_directory(path, overwrite=overwrite) as tmp:
        shutil.rmtree(tmp)  # the group is created in its place
        factors = create_ngff(tmp, layout, labels_dtype=labels_dtype(labels), name=name)
        height, width = layout.shape[-2:]
        write_region(
            tmp,
            factors,
            slice(0, height),
            slice(0, width),
            image=to_ngff_order(pixels, layout, plane_axes),
            labels=labels.astype(labels_dtype(labels), copy=False),
        )
    return Path(path)

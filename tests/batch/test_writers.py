"""Tests of nucseg.batch.writers: each file read back by the library of the tool it is for.

GeoJSON as QuPath's "Import objects" reads it (a FeatureCollection of Features
whose properties say ``objectType: detection``; geometry read with shapely),
ImageJ ROIs with roifile (what Fiji's ROI Manager reads), OME-Zarr validated
by ome-zarr-models (the OME-NGFF 0.4 schema). Every nucleus of the label image
must be there with its area.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import roifile
import shapely
import tifffile
import zarr
from ome_zarr_models.v04 import Image, ImageLabel
from skimage.draw import disk

from nucseg.batch.driver import segment_files
from nucseg.batch.writers import GeoJsonWriter, ImageJRoisWriter, NucleiPiece, output_paths
from nucseg.io.images import read_image
from nucseg.postprocess.measure import measure_nuclei

SAMPLE = Path(__file__).parents[2] / "src" / "nucseg" / "data" / "samples" / "fluorescence_1b518cd2.png"


def geojson_outlines(path: Path) -> dict[int, dict]:
    """label -> {"geometry", "measurements", "plane"} of a QuPath-readable GeoJSON file (checked here)."""
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    found = {}
    for feature in collection["features"]:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
        properties = feature["properties"]
        assert properties["objectType"] == "detection"
        measurements = properties["measurements"]
        assert all(isinstance(value, (int, float)) for value in measurements.values())
        geometry = shapely.geometry.shape(feature["geometry"])
        assert geometry.is_valid
        found[(properties.get("plane"), measurements["label"])] = {"geometry": geometry, "measurements": measurements}
    return found


def roi_outlines(path: Path) -> dict[tuple[int, str], object]:
    """(position, name) -> the area the ROI encloses (rings of composite ROIs even-odd, as ImageJ's ShapeRoi)."""
    found = {}
    for roi in roifile.roiread(path):
        area = None
        for ring in roi.coordinates(multi=True):
            polygon = shapely.Polygon(ring)
            area = polygon if area is None else area.symmetric_difference(polygon)
        found[(roi.position, roi.name)] = area
    return found


def assert_every_nucleus(labels: np.ndarray, areas: dict[int, float]) -> None:
    """Every label of ``labels`` and no other, each with an area within 2 % of its pixel count."""
    counts = np.bincount(labels.ravel())
    present = {int(k) for k in np.flatnonzero(counts)} - {0}
    assert set(areas) == present and len(present) > 0
    assert all(abs(areas[label] - counts[label]) <= 0.02 * counts[label] for label in present)


def test_outline_writers_keep_holes_and_pieces_across_fragments(tmp_path):
    labels = np.zeros((80, 60), np.uint16)
    labels[disk((20, 20), 10)] = 1
    labels[disk((20, 20), 4)] = 0  # a nucleus with a hole
    labels[50:55, 40:45] = 2
    labels[55:60, 45:50] = 2  # a label in two pieces
    labels[65:70, 5:20] = 3
    pieces = [
        NucleiPiece(labels[:40], (0, 0)),
        NucleiPiece(np.zeros((0, 60), np.uint16), (40, 0)),
        NucleiPiece(labels[40:], (40, 0)),
    ]
    geojson = GeoJsonWriter().write(tmp_path / "x.geojson", [GeoJsonWriter().fragment(p) for p in pieces])
    outlines = geojson_outlines(geojson)
    assert_every_nucleus(labels, {label: item["geometry"].area for (_, label), item in outlines.items()})
    assert len(outlines[(None, 1)]["geometry"].interiors) == 1
    assert outlines[(None, 2)]["geometry"].geom_type == "MultiPolygon"
    rois = roi_outlines(
        ImageJRoisWriter().write(tmp_path / "x_rois.zip", [ImageJRoisWriter().fragment(p) for p in pieces])
    )
    assert_every_nucleus(labels, {int(name): area.area for (_, name), area in rois.items()})
    with pytest.raises(FileExistsError):
        GeoJsonWriter().write(geojson, [], overwrite=False)


@pytest.mark.parametrize("blockwise", [False, True], ids=["whole", "blockwise"])
def test_segmented_nuclei_reach_qupath_fiji_and_ome_zarr(tmp_path, blockwise):
    report = segment_files(
        [SAMPLE],
        tmp_path,
        model="classical",
        outputs=["geojson", "rois", "ome_zarr"],
        measure=True,
        blockwise=blockwise,
        block_size=256,
        margin=32,
        pixel_size=0.5,
    )
    assert report.n_failed == 0
    paths = output_paths(tmp_path, SAMPLE.stem, outputs=["geojson", "rois", "ome_zarr", "nuclei"])
    labels = tifffile.imread(paths["labels"])
    assert labels.max() > 20

    outlines = geojson_outlines(paths["geojson"])
    assert_every_nucleus(labels, {label: item["geometry"].area for (_, label), item in outlines.items()})
    table = measure_nuclei(labels, read_image(SAMPLE)[..., :3], pixel_size=0.5)
    assert all(
        outlines[(None, row["label"])]["measurements"]["area_um2"] == pytest.approx(row["area_um2"])
        for row in table.rows
    )

    rois = roi_outlines(paths["rois"])
    assert_every_nucleus(labels, {int(name): area.area for (_, name), area in rois.items()})

    group = zarr.open_group(str(paths["ome_zarr"]), mode="r")
    image = Image.from_zarr(group)  # raises unless the group is valid OME-NGFF 0.4
    ImageLabel.from_zarr(group["labels/nuclei"])
    assert image.labels is not None and list(group["labels"].attrs["labels"]) == ["nuclei"]
    assert np.array_equal(group["labels/nuclei/0"][:], labels)
    assert np.array_equal(np.moveaxis(group["0"][:], 0, -1), read_image(SAMPLE)[..., :3])
    scale = group.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[-2:] == [0.5, 0.5]


def test_a_z_stack_writes_its_nuclei_plane_by_plane(tmp_path):
    planes = np.zeros((3, 96, 96), np.uint8)
    for z, (row, col) in enumerate([(30, 30), (50, 60), (70, 40)]):
        planes[z][disk((row, col), 12)] = 200
        planes[z][disk((20, 75), 8)] = 150
    tifffile.imwrite(tmp_path / "stack.tif", planes, imagej=True, metadata={"axes": "ZYX"})
    segment_files(
        [tmp_path / "stack.tif"], tmp_path / "out", model="classical", outputs=["geojson", "rois", "ome_zarr"]
    )
    paths = output_paths(tmp_path / "out", "stack", outputs=["geojson", "rois", "ome_zarr"])
    labels = tifffile.imread(paths["labels"])
    outlines = geojson_outlines(paths["geojson"])
    rois = roi_outlines(paths["rois"])
    for z in range(3):
        assert_every_nucleus(
            labels[z], {label: item["geometry"].area for (plane, label), item in outlines.items() if plane == f"z={z}"}
        )
        assert_every_nucleus(
            labels[z],
            {int(name.split()[-1]): area.area for (position, name), area in rois.items() if position == z + 1},
        )
    group = zarr.open_group(str(paths["ome_zarr"]), mode="r")
    Image.from_zarr(group)
    assert [axis["name"] for axis in group["labels/nuclei"].attrs["multiscales"][0]["axes"]] == ["z", "y", "x"]
    assert np.array_equal(group["labels/nuclei/0"][:], labels) and np.array_equal(group["0"][:], planes)


def _sample_and_labels() -> tuple[np.ndarray, np.ndarray]:
    from nucseg.inference.model import load_model

    image = read_image(SAMPLE)
    return image, load_model("classical").segment(image).labels


def test_labels_writer_writes_arrays_and_streams_a_zarr_array(tmp_path):
    from nucseg.batch.writers import LABELS_WRITER
    from nucseg.io.images import read_labels

    _, labels = _sample_and_labels()
    assert np.array_equal(read_labels(LABELS_WRITER.write(tmp_path / "a_labels.tif", labels)), labels)
    stored = zarr.create_array(str(tmp_path / "stitched"), shape=labels.shape, chunks=(256, 256), dtype="uint16")
    stored[:] = labels
    tiled = LABELS_WRITER.write(tmp_path / "b_labels.tif", tmp_path / "stitched")
    assert np.array_equal(read_labels(tiled), labels) and tifffile.TiffFile(tiled).pages[0].is_tiled
    moved = LABELS_WRITER.write(tmp_path / "c_labels.zarr", tmp_path / "stitched")
    assert np.array_equal(zarr.open_array(str(moved), mode="r")[:], labels) and not (tmp_path / "stitched").exists()
    with pytest.raises(FileExistsError):
        LABELS_WRITER.write(tmp_path / "a_labels.tif", labels, overwrite=False)


def test_overlay_writer_joins_block_fragments_into_the_whole_image_overlay(tmp_path):
    from nucseg.batch.writers import OverlayWriter
    from nucseg.visualize import outline_overlay

    image, labels = _sample_and_labels()
    writer = OverlayWriter(labels.shape, outline_width=2)
    whole = writer.write(tmp_path / "whole.png", [writer.fragment(NucleiPiece(labels, pixels=image))])
    expected = outline_overlay(image, labels, width=2)
    assert np.array_equal(read_image(whole), expected)
    rows, cols = (slice(0, 200), slice(200, None)), (slice(0, 300), slice(300, None))
    parts = [
        writer.fragment(NucleiPiece(labels[r, c], (r.start, c.start), pixels=image[r, c])) for r in rows for c in cols
    ]
    assert np.array_equal(read_image(writer.write(tmp_path / "parts.png", parts[::-1])), expected)
    shrunk = OverlayWriter(labels.shape, step=3)
    parts = [
        shrunk.fragment(NucleiPiece(labels[r, c], (r.start, c.start), pixels=image[r, c])) for r in rows for c in cols
    ]
    overview = read_image(shrunk.write(tmp_path / "overview.png", parts))
    assert np.array_equal(overview, outline_overlay(image[::3, ::3], labels[::3, ::3]))


def test_measurements_writer_orders_rows_by_plane_then_label(tmp_path):
    import csv

    from nucseg.batch.writers import MEASUREMENTS_WRITER

    image, labels = _sample_and_labels()
    gray = image if image.ndim == 2 else image[..., 0]
    table = measure_nuclei(labels, gray)
    halves = [np.where(labels % 2 == parity, labels, 0) for parity in (0, 1)]  # two "blocks", labels interleaved
    blocks = [MEASUREMENTS_WRITER.fragment(NucleiPiece(half, table=measure_nuclei(half, gray))) for half in halves]
    planes = [
        MEASUREMENTS_WRITER.fragment(NucleiPiece(labels, table=table, plane=i, plane_name=f"z={i}")) for i in (0, 1)
    ]
    with open(MEASUREMENTS_WRITER.write(tmp_path / "blocks.csv", blocks), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["label"]) for row in rows] == [row["label"] for row in table.rows]
    assert len(rows) == labels.max() > 10
    with open(MEASUREMENTS_WRITER.write(tmp_path / "planes.csv", planes), newline="") as handle:
        stacked = list(csv.DictReader(handle))
    assert [(row["plane"], int(row["label"])) for row in stacked] == [
        (f"z={i}", row["label"]) for i in (0, 1) for row in table.rows
    ]


def test_rle_writer_writes_what_write_submission_csv_writes(tmp_path):
    from nucseg.batch.writers import RLE_WRITER
    from nucseg.io.rle import write_submission_csv

    _, labels = _sample_and_labels()
    rows = [("cells", labels), ("empty", np.zeros((8, 8), np.int32))]
    written = RLE_WRITER.write(
        tmp_path / "a.csv", (RLE_WRITER.fragment(NucleiPiece(lab, name=name)) for name, lab in rows)
    )
    assert written.read_bytes() == write_submission_csv(rows, tmp_path / "b.csv").read_bytes()
    assert len(written.read_text().splitlines()) == 1 + labels.max() + 1
    with pytest.raises(ValueError, match="appears twice"):
        RLE_WRITER.write(tmp_path / "c.csv", [RLE_WRITER.fragment(NucleiPiece(labels, name="cells"))] * 2)
    with pytest.raises(ValueError, match="without commas"):
        RLE_WRITER.fragment(NucleiPiece(labels, name="a,b"))

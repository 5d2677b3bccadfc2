import csv

import numpy as np
import pytest
from skimage.draw import disk

from nucseg.postprocess.measure import (
    AUTO_SCALE_LIMITS,
    measure_nuclei,
    measurement_columns,
    median_nucleus_diameter,
    NucleusTable,
    size_factor,
    write_measurements_csv,
)


def _rectangle_and_disc() -> np.ndarray:
    labels = np.zeros((100, 120), dtype=np.int32)
    labels[10:20, 5:25] = 3  # 10 x 20 rectangle
    labels[disk((60, 70), 25, shape=labels.shape)] = 8  # disc of radius 25
    return labels


def test_rectangle_area_bbox_and_centroid():
    table = measure_nuclei(_rectangle_and_disc())
    rectangle = table.rows[0]
    assert rectangle["label"] == 3
    assert rectangle["area_px"] == 200
    box = ("min_row_px", "min_col_px", "max_row_px", "max_col_px")
    assert tuple(rectangle[name] for name in box) == (10, 5, 20, 25)
    assert rectangle["centroid_y_px"] == pytest.approx(14.5)
    assert rectangle["centroid_x_px"] == pytest.approx(14.5)
    assert rectangle["solidity"] == pytest.approx(1.0)
    assert 50 <= rectangle["perimeter_px"] <= 60  # 60 on the pixel edges; estimators cut corners
    # second moments of a 10x20 box: variances (10^2 - 1)/12 and (20^2 - 1)/12
    minor, major = (10**2 - 1) / 12, (20**2 - 1) / 12
    assert rectangle["eccentricity"] == pytest.approx(np.sqrt(1 - minor / major), rel=1e-6)


def test_disc_area_and_diameter():
    table = measure_nuclei(_rectangle_and_disc())
    disc = table.rows[1]
    assert disc["label"] == 8
    assert disc["area_px"] == pytest.approx(np.pi * 25**2, rel=0.02)
    assert disc["equivalent_diameter_px"] == pytest.approx(50, rel=0.01)
    assert disc["perimeter_px"] == pytest.approx(2 * np.pi * 25, rel=0.05)
    assert disc["eccentricity"] < 0.1
    assert disc["solidity"] > 0.95
    assert (disc["centroid_y_px"], disc["centroid_x_px"]) == (pytest.approx(60), pytest.approx(70))


def test_pixel_size_scales_areas_quadratically_and_lengths_linearly():
    labels = _rectangle_and_disc()
    pixels = measure_nuclei(labels)
    microns = measure_nuclei(labels, pixel_size=0.25)
    assert "area_um2" in microns.columns and "area_px" not in microns.columns
    for px, um in zip(pixels.rows, microns.rows):
        assert um["area_um2"] == pytest.approx(px["area_px"] * 0.25**2, rel=1e-12)
        assert um["perimeter_um"] == pytest.approx(px["perimeter_px"] * 0.25, rel=1e-12)
        assert um["equivalent_diameter_um"] == pytest.approx(px["equivalent_diameter_px"] * 0.25, rel=1e-12)
        # positions stay in pixels; shape ratios have no unit
        for name in ("centroid_y_px", "centroid_x_px", "min_row_px", "max_col_px", "eccentricity", "solidity"):
            assert um[name] == px[name]


def test_intensity_per_channel():
    labels = np.zeros((6, 6), dtype=np.int32)
    labels[0:2, 0:2] = 1
    labels[4:6, 3:6] = 2
    image = np.zeros((6, 6, 2), dtype=np.uint16)
    image[0:2, 0:2, 0] = [[1, 2], [3, 10]]
    image[0:2, 0:2, 1] = 100
    image[4:6, 3:6, 0] = 7
    image[4, 3, 1] = 600
    table = measure_nuclei(labels, image)
    first, second = table.rows
    assert first["mean_intensity_0"] == pytest.approx(4.0)
    assert first["max_intensity_0"] == 10
    assert first["mean_intensity_1"] == pytest.approx(100.0)
    assert second["mean_intensity_0"] == pytest.approx(7.0)
    assert second["mean_intensity_1"] == pytest.approx(100.0)
    assert second["max_intensity_1"] == 600
    assert "mean_intensity_2" not in table.columns


def test_intensity_columns_take_the_channel_names_given():
    labels = _rectangle_and_disc()
    image = np.where(labels == 3, 5.0, 1.0).astype(np.float32)
    named = measure_nuclei(labels, image, channel_names=["DAPI"])
    assert named.column("mean_intensity_DAPI").tolist() == [5.0, 1.0]
    assert not any(name.endswith("intensity_0") for name in named.columns)
    assert named.columns == measurement_columns(1, channel_names=["DAPI"])
    for wrong in (["DAPI", "GFP"], []):
        with pytest.raises(ValueError, match="channel_names must name each"):
            measure_nuclei(labels, image, channel_names=wrong)
    with pytest.raises(ValueError, match="channel_names must name each"):
        measure_nuclei(labels, np.stack([image, image], axis=-1), channel_names=["a", "a"])


def test_gray_image_gives_channel_zero_and_no_image_gives_no_intensity():
    labels = _rectangle_and_disc()
    image = np.where(labels == 3, 5.0, 1.0).astype(np.float32)
    with_image = measure_nuclei(labels, image)
    assert with_image.column("mean_intensity_0").tolist() == [5.0, 1.0]
    without = measure_nuclei(labels)
    assert not any(name.endswith("intensity_0") for name in without.columns)


def test_columns_match_rows_and_documented_order():
    table = measure_nuclei(_rectangle_and_disc(), np.zeros((100, 120, 3)), pixel_size=0.5)
    assert table.columns == measurement_columns(3, pixel_size=0.5)
    assert all(tuple(row) == table.columns for row in table.rows)
    assert table.columns[:6] == (
        "label",
        "centroid_y_px",
        "centroid_x_px",
        "centroid_y_um",
        "centroid_x_um",
        "area_um2",
    )
    rectangle = table.rows[0]
    assert rectangle["centroid_y_um"] == pytest.approx(rectangle["centroid_y_px"] * 0.5)


def test_every_column_with_a_unit_names_it():
    unitless = {"label", "eccentricity", "solidity"}
    for pixel_size in (None, 0.325):
        columns = measurement_columns(2, pixel_size=pixel_size)
        named = [c for c in columns if c not in unitless and "intensity" not in c]
        assert all(c.endswith(("_px", "_um", "_um2")) for c in named), columns


def test_empty_labels_give_empty_table_with_columns():
    table = measure_nuclei(np.zeros((10, 10), dtype=np.int32), np.zeros((10, 10)))
    assert len(table) == 0
    assert table.columns == measurement_columns(1)


@pytest.mark.parametrize(
    "labels, image, pixel_size",
    [
        (np.zeros((4, 4, 2), dtype=np.int32), None, None),
        (np.zeros((4, 4), dtype=np.float32), None, None),
        (np.full((4, 4), -1), None, None),
        (np.zeros((4, 4), dtype=np.int32), np.zeros((4, 5)), None),
        (np.zeros((4, 4), dtype=np.int32), None, 0.0),
        (np.zeros((4, 4), dtype=np.int32), None, float("nan")),
    ],
)
def test_rejects_bad_input(labels, image, pixel_size):
    with pytest.raises(ValueError):
        measure_nuclei(labels, image, pixel_size=pixel_size)


def test_write_csv(tmp_path):
    labels = _rectangle_and_disc()
    table = measure_nuclei(labels, labels.astype(np.uint8))
    path = write_measurements_csv(table, tmp_path / "out" / "nuclei.csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == table.columns
    assert [int(row["label"]) for row in rows] == [3, 8]
    assert int(rows[0]["area_px"]) == 200
    assert float(rows[1]["equivalent_diameter_px"]) == pytest.approx(table.rows[1]["equivalent_diameter_px"], rel=1e-6)
    with pytest.raises(FileExistsError):
        write_measurements_csv(table, path, overwrite=False)


def test_write_csv_of_empty_table_has_header_only(tmp_path):
    path = write_measurements_csv(NucleusTable(measurement_columns()), tmp_path / "empty.csv")
    assert path.read_text().splitlines() == [",".join(measurement_columns())]


def test_median_nucleus_diameter_pools_the_nuclei_of_all_images():
    first = np.zeros((40, 40), np.int32)
    first[:10, :10] = 1  # area 100
    first[20:40, 20:40] = 7  # area 400; the ids need not be consecutive
    second = np.zeros((40, 40), np.int32)
    second[:30, :30] = 1  # area 900
    diameter = median_nucleus_diameter([first, second])
    assert diameter == pytest.approx(2 * np.sqrt(400 / np.pi))
    assert median_nucleus_diameter([first]) == pytest.approx(np.sqrt(100 / np.pi) + np.sqrt(400 / np.pi))
    assert median_nucleus_diameter([np.zeros((8, 8), np.int32)]) is None and median_nucleus_diameter([]) is None


def _discs(radius: int) -> np.ndarray:
    """Four discs of ``radius`` pixels, labelled 1, 2, 3 and 4, in a 200 x 200 image."""
    yy, xx = np.mgrid[:200, :200]
    inside = (yy % 100 - 50) ** 2 + (xx % 100 - 50) ** 2 <= radius**2
    return (inside * (1 + yy // 100 * 2 + xx // 100)).astype(np.int32)


def test_size_factor_brings_nuclei_to_the_diameter_within_limits_and_tolerance():
    assert size_factor(_discs(8), 20.0) == pytest.approx(20 / median_nucleus_diameter([_discs(8)]))
    assert size_factor(_discs(4), 20.0) == AUTO_SCALE_LIMITS[1]
    assert size_factor(_discs(45), 20.0) == AUTO_SCALE_LIMITS[0]
    assert size_factor(_discs(10), 20.0) == 1.0  # within the tolerance
    assert size_factor(np.zeros((64, 64), np.int32), 20.0) == 1.0  # no nuclei
    assert size_factor(_discs(4), None) == 1.0  # no diameter to size to

import csv

import numpy as np
import pytest

from nucseg.io.rle import format_rle, labels_to_rles, parse_rle, rle_decode, rle_encode, write_submission_csv


def test_encode_numbers_pixels_column_major_from_one():
    # Pixel numbers (1-indexed, column-major) of a 3x3 image:
    #   1 4 7
    #   2 5 8
    #   3 6 9
    mask = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 1]], dtype=bool)
    # pixels 1, 2 (column 0), 6 (column 1), 7 and 9 (column 2): 6 and 7 are
    # consecutive in column-major order, so they form one run.
    assert rle_encode(mask) == [1, 2, 6, 2, 9, 1]


def test_runs_continue_across_columns():
    mask = np.zeros((4, 3), dtype=bool)
    mask[2:, 0] = True  # pixels 3, 4
    mask[:, 1] = True  # pixels 5..8
    mask[0, 2] = True  # pixel 9
    assert rle_encode(mask) == [3, 7]


def test_empty_and_full_masks():
    assert rle_encode(np.zeros((5, 4), dtype=bool)) == []
    assert rle_encode(np.ones((5, 4), dtype=bool)) == [1, 20]
    assert not rle_decode("", (5, 4)).any()


def test_decode_hand_computed():
    expected = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 1]], dtype=bool)
    decoded = rle_decode("1 2 6 2 9 1", (3, 3))
    assert decoded.dtype == bool
    np.testing.assert_array_equal(decoded, expected)


def test_decode_non_square_shape_orientation():
    # 2 rows x 3 columns: pixel 2 is row 1, column 0; pixel 3 is row 0, column 1
    decoded = rle_decode([2, 2], (2, 3))
    expected = np.array([[0, 1, 0], [1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(decoded, expected)


def test_decode_accepts_adjacent_runs():
    np.testing.assert_array_equal(rle_decode("1 2 3 2", (5, 1)), rle_decode("1 4", (5, 1)))


@pytest.mark.parametrize("bad", ["1 2 3", "0 2", "3 0", "5 3 1 2", "1 3 2 2", "9 3", "1 x"])
def test_decode_rejects_malformed(bad):
    with pytest.raises(ValueError):
        rle_decode(bad, (3, 3))


def test_format_and_parse_are_inverse():
    assert format_rle([1, 3, 10, 2]) == "1 3 10 2"
    assert parse_rle(" 1 3  10 2\n") == [1, 3, 10, 2]


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_random_labels(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 40, size=2))
    labels = rng.integers(0, 6, size=shape).astype(np.int32)
    labels[labels == 3] = 0  # a missing id: labels need not be sequential
    rles = labels_to_rles(labels)
    ids = [v for v in np.unique(labels) if v != 0]
    assert len(rles) == len(ids)
    for label, rle in zip(ids, rles):
        np.testing.assert_array_equal(rle_decode(rle, shape), labels == label)
        assert parse_rle(rle) == rle_encode(labels == label)


def test_labels_to_rles_of_empty_image():
    assert labels_to_rles(np.zeros((8, 8), dtype=np.uint16)) == []


def test_labels_to_rles_rejects_bad_labels():
    with pytest.raises(ValueError):
        labels_to_rles(np.zeros((2, 2, 2), dtype=np.int32))
    with pytest.raises(ValueError):
        labels_to_rles(np.full((2, 2), -1))


def test_submission_csv(tmp_path):
    first = np.zeros((3, 3), dtype=np.int32)
    first[0, 0] = first[1, 0] = 1  # pixels 1, 2
    first[2, 2] = 2  # pixel 9
    empty = np.zeros((4, 4), dtype=np.int32)
    path = write_submission_csv([("img_a", first), ("img_b", empty)], tmp_path / "sub.csv")
    text = path.read_text()
    assert text == "ImageId,EncodedPixels\nimg_a,1 2\nimg_a,9 1\nimg_b,\n"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["ImageId"] for row in rows] == ["img_a", "img_a", "img_b"]
    assert [row["EncodedPixels"] for row in rows] == ["1 2", "9 1", ""]
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]  # no temporary file left


def test_submission_csv_refuses_to_overwrite_and_bad_ids(tmp_path):
    labels = np.ones((2, 2), dtype=np.int32)
    path = write_submission_csv([("a", labels)], tmp_path / "sub.csv")
    with pytest.raises(FileExistsError):
        write_submission_csv([("b", labels)], path, overwrite=False)
    assert path.read_text() == "ImageId,EncodedPixels\na,1 4\n"
    for rows in ([("a,b", labels)], [("", labels)], [("a", labels), ("a", labels)]):
        with pytest.raises(ValueError):
            write_submission_csv(rows, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()

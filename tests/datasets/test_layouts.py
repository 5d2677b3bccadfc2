"""Tests of nucseg.datasets.layouts, sample, cache and kinds: layouts, messages, the decode cache, image_kind."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from nucseg.datasets import layouts as datasets
from nucseg.datasets.cache import default_cache_dir
from nucseg.datasets.kinds import image_kind
from nucseg.datasets.layouts import detect_layout, list_dataset, load_dataset
from nucseg.datasets.sample import DatasetWarning, Sample
from nucseg.datasets.kinds import IMAGE_KINDS
from nucseg.datasets.locations import dataset_path
from nucseg.errors import InputError
from nucseg.io.images import read_image

FIXTURES = Path(__file__).parents[1] / "data" / "dsb2018"
FULL_DSB2018 = dataset_path("dsb2018/stage1_train")  # ../shared/data, or $NUCSEG_DATA_DIR
FIXTURE_KINDS = {
    "00071198d059ba7f5914a526d124d28e6d010c92466da21d4a04cd5413362552": "fluorescence",
    "0280fa8f60f6bcae0f97d93c28f60be194f9309ff610dc5845e60455b0f87c21": "fluorescence",
    "00ae65c1c6631ae6f2be1a449902976e6eb8483bf6b0740d00530220832c6d3e": "histology",
    "091944f1d2611c916b98c020bd066667e33f4639159b2a92407fe5a40788856d": "brightfield",
}


# --------------------------------------------------------------------- helpers


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _disk_mask(shape, center, radius) -> np.ndarray:
    y, x = np.ogrid[: shape[0], : shape[1]]
    return (((y - center[0]) ** 2 + (x - center[1]) ** 2) <= radius**2).astype(np.uint8) * 255


def make_dsb_sample(root: Path, name: str, masks: list[np.ndarray], shape=(32, 40)) -> Path:
    """A DSB2018 sample folder: ``root/name/images/name.png`` and one PNG per mask."""
    image = np.random.default_rng(len(name)).integers(0, 60, size=shape + (4,)).astype(np.uint8)
    image[..., 3] = 255
    _png(root / name / "images" / f"{name}.png", image)
    for i, mask in enumerate(masks):
        _png(root / name / "masks" / f"m{i:03d}.png", mask)
    return root / name


def make_dsb(root: Path, count: int = 2, shape=(32, 40)) -> Path:
    for k in range(count):
        masks = [_disk_mask(shape, (8, 8 + 3 * k), 4), _disk_mask(shape, (22, 28), 5)]
        make_dsb_sample(root, f"s{k:02d}", masks, shape)
    return root


def make_paired(root: Path, names=("a", "b"), shape=(20, 24), images="images", masks="masks", mask_suffix="") -> Path:
    for k, name in enumerate(names):
        _png(root / images / f"{name}.png", np.full(shape, 10 * k, np.uint8))
        labels = np.zeros(shape, np.uint16)
        labels[2:6, 2:6] = 1
        labels[10:15, 3:9] = 2
        labels[10:15, 9:14] = 7  # touches label 2: an instance image keeps them apart
        _png(root / masks / f"{name}{mask_suffix}.png", labels)
    return root


def _message(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# -------------------------------------------------------------------- fixtures


def test_fixtures_load_as_documented():
    samples = load_dataset(FIXTURES, cache_dir=False)
    assert [s.name for s in samples] == sorted(FIXTURE_KINDS)
    for sample in samples:
        assert isinstance(sample, Sample)
        assert sample.image.dtype == np.uint8 and sample.image.shape[2] == 4
        assert sample.labels.dtype == np.int32 and sample.labels.shape == sample.image.shape[:2]
        n_masks = len(list((FIXTURES / sample.name / "masks").glob("*.png")))
        assert sample.labels.max() == n_masks
        assert len(np.unique(sample.labels)) == n_masks + 1
        assert sample.image_path == FIXTURES / sample.name / "images" / f"{sample.name}.png"


def test_fixture_labels_are_the_mask_files_in_name_order():
    name = "0280fa8f60f6bcae0f97d93c28f60be194f9309ff610dc5845e60455b0f87c21"
    (sample,) = load_dataset(FIXTURES, names=[name], cache_dir=False)
    mask_files = sorted((FIXTURES / name / "masks").glob("*.png"))
    assert all(np.array_equal(sample.labels == k, read_image(path) > 0) for k, path in enumerate(mask_files, start=1))


@pytest.mark.parametrize("name, kind", sorted(FIXTURE_KINDS.items()))
def test_image_kind_of_fixtures(name, kind):
    image = read_image(FIXTURES / name / "images" / f"{name}.png")
    assert image_kind(image) == kind


# ------------------------------------------------------------------ image_kind


def test_image_kind_of_gray_16bit_images():
    rng = np.random.default_rng(0)
    dark = rng.integers(80, 120, size=(64, 64)).astype(np.uint16)  # 12-bit camera data
    dark[20:30, 20:30] = 4000
    bright = (4095 - dark).astype(np.uint16)
    assert image_kind(dark) == "fluorescence"
    assert image_kind(bright) == "brightfield"
    assert image_kind(np.stack([bright] * 3, axis=-1)) == "brightfield"


def test_image_kind_of_stained_colour_image():
    image = np.zeros((40, 40, 3), np.uint8)
    image[...] = (230, 200, 230)  # pink background
    image[10:20, 10:20] = (80, 40, 140)  # purple nucleus
    assert image_kind(image) == "histology"


def test_image_kind_of_float_image():
    image = np.zeros((40, 40), np.float32)
    image[5:10, 5:10] = 1.0
    assert image_kind(image) == "fluorescence"
    assert image_kind(1.0 - image) == "brightfield"


def test_raw_image_kind_is_the_kind_after_channel_conversion_on_a_sample_of_the_pixels():
    from nucseg.datasets.kinds import raw_image_kind
    from nucseg.preprocess.normalize import to_channels

    for name, kind in FIXTURE_KINDS.items():
        image = read_image(FIXTURES / name / "images" / f"{name}.png")
        large = np.tile(image, (4, 4, 1))  # 1-4 MP: sampled every second or third pixel
        assert raw_image_kind(image) == raw_image_kind(large) == image_kind(to_channels(large, 3)) == kind
    gray = read_image(
        FIXTURES
        / "00071198d059ba7f5914a526d124d28e6d010c92466da21d4a04cd5413362552"
        / "images"
        / "00071198d059ba7f5914a526d124d28e6d010c92466da21d4a04cd5413362552.png"
    )[:, :, 0]
    blue_only = np.zeros(gray.shape + (3,), np.uint8)
    blue_only[:, :, 2] = gray
    assert image_kind(blue_only) == "histology"  # the colour image as it is ...
    assert raw_image_kind(blue_only) == "fluorescence"  # ... and as nucseg segments it


@pytest.mark.parametrize("shape", [(10, 10, 2), (10, 10, 5), (10,), (0, 0)])
def test_image_kind_rejects_other_shapes(shape):
    with pytest.raises(ValueError):
        image_kind(np.zeros(shape, np.uint8))


@pytest.mark.dsb2018
def test_image_kind_counts_on_the_full_training_set():
    if not FULL_DSB2018.is_dir():
        pytest.skip(f"full DSB2018 training set not found at {FULL_DSB2018}")
    kinds = [image_kind(read_image(files.image_path)) for files in list_dataset(FULL_DSB2018)]
    counts = {kind: kinds.count(kind) for kind in IMAGE_KINDS}
    # Measured by the lead with a similar heuristic: about 541 / 16 / 107.
    assert 520 <= counts["fluorescence"] <= 560, counts
    assert 10 <= counts["brightfield"] <= 25, counts
    assert 95 <= counts["histology"] <= 120, counts
    assert sum(counts.values()) == 664


# ---------------------------------------------------------------- DSB overlaps


def test_overlapping_masks_are_reported_with_sample_and_pixel_count(tmp_path):
    shape = (20, 20)
    first, second = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    first[2:8, 2:8] = 255
    second[6:12, 6:12] = 255  # overlaps first on rows 6-7, columns 6-7: 4 pixels
    make_dsb_sample(tmp_path, "overlap", [first, second], shape)
    with pytest.warns(DatasetWarning, match=r"overlap: 4 pixels belong to more than one mask"):
        (sample,) = load_dataset(tmp_path, cache_dir=False)
    assert np.array_equal(sample.labels == 1, first > 0)  # the first mask keeps the shared pixels
    assert np.array_equal(sample.labels == 2, (second > 0) & (first == 0))


def test_overlap_warning_is_repeated_on_a_cached_load(tmp_path):
    shape = (20, 20)
    first, second = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    first[2:8, 2:8], second[7:12, 7:12] = 255, 255
    make_dsb_sample(tmp_path / "data", "overlap", [first, second], shape)
    for _ in range(2):
        with pytest.warns(DatasetWarning, match=r"overlap: 1 pixel belongs to more than one mask"):
            load_dataset(tmp_path / "data", cache_dir=tmp_path / "cache")


def test_empty_mask_is_reported(tmp_path):
    shape = (20, 20)
    make_dsb_sample(tmp_path, "s", [_disk_mask(shape, (10, 10), 3), np.zeros(shape, np.uint8)], shape)
    with pytest.warns(DatasetWarning, match=r"m001\.png: empty mask; skipped"):
        (sample,) = load_dataset(tmp_path, cache_dir=False)
    assert sample.labels.max() == 1


# ------------------------------------------------------------------- paired


@pytest.mark.parametrize("images, masks", [("images", "masks"), ("inputs", "masks"), ("images", "labels")])
def test_paired_folder_names_are_detected(tmp_path, images, masks):
    make_paired(tmp_path, images=images, masks=masks)
    assert detect_layout(tmp_path) == "paired"
    samples = load_dataset(tmp_path, cache_dir=False)
    assert [s.name for s in samples] == ["a", "b"]


def test_paired_instance_labels_are_kept(tmp_path):
    make_paired(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an instance label image is not reported as binary
        samples = load_dataset(images_dir=tmp_path / "images", masks_dir=tmp_path / "masks", cache_dir=False)
    expected = np.zeros((20, 24), np.int32)
    expected[2:6, 2:6], expected[10:15, 3:9], expected[10:15, 9:14] = 1, 2, 7
    assert all(np.array_equal(s.labels, expected) and s.labels.dtype == np.int32 for s in samples)


def test_paired_binary_mask_is_split_into_components_with_a_warning(tmp_path):
    _png(tmp_path / "images" / "a.png", np.zeros((20, 20), np.uint8))
    mask = np.zeros((20, 20), np.uint8)
    mask[2:6, 2:6] = 255
    mask[10:15, 10:15] = 255
    _png(tmp_path / "masks" / "a.png", mask)
    with pytest.warns(DatasetWarning, match=r"a\.png: binary mask; nuclei are taken as its connected components"):
        (sample,) = load_dataset(tmp_path, cache_dir=False)
    assert sorted(np.unique(sample.labels)) == [0, 1, 2]
    assert np.array_equal(sample.labels > 0, mask > 0)


def test_a_label_image_of_one_nucleus_is_read_without_a_binary_mask_warning(tmp_path):
    import warnings

    _png(tmp_path / "images" / "a.png", np.zeros((20, 20), np.uint8))
    mask = np.zeros((20, 20), np.uint8)
    mask[2:9, 3:8] = 1
    _png(tmp_path / "masks" / "a.png", mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one blob is one nucleus either way: nothing to warn about
        (sample,) = load_dataset(tmp_path, cache_dir=False)
    assert np.array_equal(sample.labels, mask.astype(np.int32))


@pytest.mark.parametrize("suffix", ["_mask", "_masks", "_label", "_labels"])
def test_mask_name_suffixes_match(tmp_path, suffix):
    make_paired(tmp_path, mask_suffix=suffix)
    files = list_dataset(tmp_path)
    assert [(f.name, f.mask_paths[0].name) for f in files] == [("a", f"a{suffix}.png"), ("b", f"b{suffix}.png")]


def test_image_whose_name_ends_like_a_mask_suffix_matches_exactly(tmp_path):
    make_paired(tmp_path, names=("cell_mask",))
    (files,) = list_dataset(tmp_path)
    assert files.name == "cell_mask" and files.mask_paths[0].name == "cell_mask.png"


def test_tiff_label_masks(tmp_path):
    _png(tmp_path / "images" / "a.png", np.zeros((10, 12), np.uint8))
    labels = np.zeros((10, 12), np.uint32)
    labels[1:4, 1:4], labels[5:9, 5:9] = 70000, 3
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "masks" / "a.tif", labels)
    (sample,) = load_dataset(tmp_path, cache_dir=False)
    assert np.array_equal(sample.labels, labels.astype(np.int32))


# ------------------------------------------------------ one test per error message


def test_error_dataset_folder_does_not_exist(tmp_path):
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path / "nope", cache_dir=False)
    assert _message(excinfo) == f"{tmp_path / 'nope'}: dataset folder does not exist"


def test_error_dataset_path_is_not_a_folder(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path / "file.txt", cache_dir=False)
    assert _message(excinfo) == f"{tmp_path / 'file.txt'}: dataset path is not a folder"


def test_error_dataset_folder_is_empty(tmp_path):
    (tmp_path / ".hidden").write_text("x")
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == f"{tmp_path}: dataset folder is empty"


def test_error_unrecognised_layout(tmp_path):
    _png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo).startswith(f"{tmp_path}: unrecognised dataset layout: expected DSB2018")


def test_error_single_dsb_sample_folder(tmp_path):
    sample_dir = make_dsb_sample(tmp_path, "abc", [_disk_mask((32, 40), (10, 10), 3)])
    with pytest.raises(InputError) as excinfo:
        load_dataset(sample_dir, cache_dir=False)
    assert _message(excinfo) == (
        f"{sample_dir}: this is one DSB2018 sample (images/abc.png + masks/); "
        f"give the folder that holds the sample folders ({tmp_path})"
    )


def test_error_dsb_sample_without_images_folder(tmp_path):
    make_dsb(tmp_path)
    (tmp_path / "stray").mkdir()
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == (
        f"{tmp_path / 'stray'}: wrong layout: missing images/ folder (expected <id>/images/<id>.png)"
    )


def test_error_dsb_images_folder_without_image(tmp_path):
    make_dsb(tmp_path)
    (tmp_path / "s01" / "images" / "s01.png").unlink()
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo).startswith(f"{tmp_path / 's01' / 'images'}: no image file")


def test_error_dsb_images_folder_with_two_images(tmp_path):
    make_dsb(tmp_path)
    _png(tmp_path / "s00" / "images" / "extra.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == f"{tmp_path / 's00' / 'images'}: expected one image, found 2"


def test_error_dsb_sample_without_masks_folder(tmp_path):
    make_dsb(tmp_path)
    for mask in (tmp_path / "s01" / "masks").iterdir():
        mask.unlink()
    (tmp_path / "s01" / "masks").rmdir()
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == (f"{tmp_path / 's01'}: wrong layout: missing masks/ folder (expected <id>/masks/*.png)")


def test_error_dsb_masks_folder_without_masks(tmp_path):
    make_dsb(tmp_path)
    for mask in (tmp_path / "s00" / "masks").iterdir():
        mask.unlink()
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == f"{tmp_path / 's00' / 'masks'}: no mask files"


def test_error_jpeg_mask(tmp_path):
    make_dsb(tmp_path)
    Image.fromarray(_disk_mask((32, 40), (10, 10), 4)).save(tmp_path / "s00" / "masks" / "lossy.jpg")
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == (
        f"{tmp_path / 's00' / 'masks' / 'lossy.jpg'}: masks must be PNG or TIFF: JPEG compression changes mask values"
    )


def test_error_dsb_mask_size_mismatch(tmp_path):
    make_dsb(tmp_path)
    _png(tmp_path / "s01" / "masks" / "m999.png", np.full((32, 41), 255, np.uint8))
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == (
        f"{tmp_path / 's01' / 'masks' / 'm999.png'}: mask size 41x32 does not match image size 40x32 (width x height)"
    )


def test_error_paired_mask_size_mismatch(tmp_path):
    make_paired(tmp_path)
    _png(tmp_path / "masks" / "b.png", np.zeros((21, 24), np.uint8))
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == (
        f"{tmp_path / 'masks' / 'b.png'}: mask size 24x21 does not match image size 24x20 (width x height)"
    )


def test_error_label_too_large(tmp_path):
    _png(tmp_path / "images" / "a.png", np.zeros((4, 5), np.uint8))
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "masks" / "a.tif", np.full((4, 5), 2**31, np.uint32))
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == (
        f"{tmp_path / 'masks' / 'a.tif'}: label 2147483648 is above the supported maximum 2147483647"
    )


def test_error_unreadable_image_file(tmp_path):
    make_dsb(tmp_path)
    (tmp_path / "s01" / "images" / "s01.png").write_bytes(b"")
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == f"{tmp_path / 's01' / 'images' / 's01.png'}: file is empty (0 bytes)"


def test_error_truncated_mask_file(tmp_path):
    make_dsb(tmp_path)
    mask = tmp_path / "s00" / "masks" / "m001.png"
    mask.write_bytes(mask.read_bytes()[:60])
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo).startswith(f"{mask}: cannot decode image")


def test_error_paired_folder_does_not_exist(tmp_path):
    make_paired(tmp_path)
    with pytest.raises(InputError) as excinfo:
        load_dataset(images_dir=tmp_path / "images", masks_dir=tmp_path / "nope", cache_dir=False)
    assert _message(excinfo) == f"{tmp_path / 'nope'}: folder does not exist"


def test_error_paired_path_is_not_a_folder(tmp_path):
    make_paired(tmp_path)
    with pytest.raises(InputError) as excinfo:
        load_dataset(images_dir=tmp_path / "images" / "a.png", masks_dir=tmp_path / "masks", cache_dir=False)
    assert _message(excinfo) == f"{tmp_path / 'images' / 'a.png'}: not a folder"


def test_error_paired_images_folder_holds_no_images(tmp_path):
    make_paired(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(InputError) as excinfo:
        load_dataset(images_dir=tmp_path / "empty", masks_dir=tmp_path / "masks", cache_dir=False)
    assert _message(excinfo).startswith(f"{tmp_path / 'empty'}: folder holds no images (")


def test_error_paired_masks_folder_holds_no_masks(tmp_path):
    make_paired(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as excinfo:
        load_dataset(images_dir=tmp_path / "images", masks_dir=tmp_path / "empty", cache_dir=False)
    assert _message(excinfo) == f"{tmp_path / 'empty'}: folder holds no masks"


def test_error_two_images_with_the_same_name(tmp_path):
    make_paired(tmp_path)
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((20, 24), np.uint8))
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == (
        f"{tmp_path / 'images' / 'a.tif'}: two images named 'a' (a.png and a.tif); names must be unique"
    )


def test_error_two_masks_for_one_image(tmp_path):
    make_paired(tmp_path)
    _png(tmp_path / "masks" / "a_mask.png", np.zeros((20, 24), np.uint8))
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == f"{tmp_path / 'masks' / 'a_mask.png'}: two masks for image 'a' (a.png and a_mask.png)"


def test_error_image_without_mask(tmp_path):
    make_paired(tmp_path, names=("a", "b", "c"))
    (tmp_path / "masks" / "b.png").unlink()
    (tmp_path / "masks" / "c.png").unlink()
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == (
        f"{tmp_path / 'images' / 'b.png'}: no mask with the same name in {tmp_path / 'masks'} (and 1 more)"
    )


def test_error_mask_without_image(tmp_path):
    make_paired(tmp_path)
    _png(tmp_path / "masks" / "zz.png", np.zeros((20, 24), np.uint8))
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, cache_dir=False)
    assert _message(excinfo) == f"{tmp_path / 'masks' / 'zz.png'}: no image with the same name in {tmp_path / 'images'}"


def test_error_unknown_sample_name(tmp_path):
    make_dsb(tmp_path)
    with pytest.raises(InputError) as excinfo:
        load_dataset(tmp_path, names=["s00", "x", "y"], cache_dir=False)
    assert _message(excinfo) == f"{tmp_path}: no sample named 'x' (and 1 more)"


def test_names_select_samples_in_the_given_order(tmp_path):
    make_dsb(tmp_path, count=3)
    assert [s.name for s in load_dataset(tmp_path, names=["s02", "s00"], cache_dir=False)] == ["s02", "s00"]


def test_root_and_folders_together_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        list_dataset(tmp_path, images_dir=tmp_path)
    with pytest.raises(ValueError):
        list_dataset(images_dir=tmp_path)


# ------------------------------------------------------------------- the cache


def _cache_files(cache: Path) -> list[Path]:
    return sorted((cache / "samples").glob("*")) if (cache / "samples").exists() else []


def test_cached_load_equals_decoded_load_without_decoding(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_dataset(FIXTURES, cache_dir=cache)
    assert len(_cache_files(cache)) == len(first)

    def no_decoding(files):
        raise AssertionError(f"decoded {files.name} although it is cached")

    monkeypatch.setattr(datasets, "decode_sample", no_decoding)
    second = load_dataset(FIXTURES, cache_dir=cache)
    assert [s.name for s in second] == [s.name for s in first]
    assert all(np.array_equal(a.image, b.image) and a.image.dtype == b.image.dtype for a, b in zip(first, second))
    assert all(np.array_equal(a.labels, b.labels) and b.labels.dtype == np.int32 for a, b in zip(first, second))
    assert all(a.image_path == b.image_path for a, b in zip(first, second))


def test_modified_mask_invalidates_the_cache(tmp_path):
    data, cache = make_dsb(tmp_path / "data"), tmp_path / "cache"
    load_dataset(data, cache_dir=cache)
    mask = data / "s01" / "masks" / "m000.png"
    new_mask = np.zeros((32, 40), np.uint8)
    new_mask[0:3, 0:3] = 255
    _png(mask, new_mask)
    stat = mask.stat()
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # even on coarse-mtime file systems
    (_, sample) = load_dataset(data, cache_dir=cache)
    assert np.array_equal(sample.labels == 1, new_mask > 0)
    assert len(_cache_files(cache)) == 2  # the entry was replaced, not added to


def test_touched_mask_is_decoded_again(tmp_path, monkeypatch):
    data, cache = make_dsb(tmp_path / "data"), tmp_path / "cache"
    load_dataset(data, cache_dir=cache)
    mask = data / "s00" / "masks" / "m001.png"
    stat = mask.stat()
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    decoded = []
    real_decode = datasets.decode_sample
    monkeypatch.setattr(datasets, "decode_sample", lambda files: decoded.append(files.name) or real_decode(files))
    load_dataset(data, cache_dir=cache)
    assert decoded == ["s00"]


def test_added_mask_invalidates_the_cache(tmp_path):
    data, cache = make_dsb(tmp_path / "data"), tmp_path / "cache"
    assert load_dataset(data, cache_dir=cache)[0].labels.max() == 2
    _png(data / "s00" / "masks" / "m002.png", _disk_mask((32, 40), (25, 5), 3))
    assert load_dataset(data, cache_dir=cache)[0].labels.max() == 3


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    data, cache = make_dsb(tmp_path / "data", count=1), tmp_path / "cache"
    (expected,) = load_dataset(data, cache_dir=cache)
    (entry,) = _cache_files(cache)
    entry.write_bytes(entry.read_bytes()[:-100])
    (sample,) = load_dataset(data, cache_dir=cache)
    assert np.array_equal(sample.labels, expected.labels) and np.array_equal(sample.image, expected.image)
    (sample,) = load_dataset(data, cache_dir=cache)  # and the rebuilt entry is whole again
    assert np.array_equal(sample.labels, expected.labels)


def test_cache_dir_false_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("NUCSEG_CACHE_DIR", str(tmp_path / "cache"))
    load_dataset(FIXTURES, cache_dir=False)
    assert not (tmp_path / "cache").exists()


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NUCSEG_CACHE_DIR", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    load_dataset(FIXTURES, names=[sorted(FIXTURE_KINDS)[0]])
    assert len(_cache_files(tmp_path / "cache")) == 1


def test_unwritable_cache_is_reported_and_loading_goes_on(tmp_path):
    data = make_dsb(tmp_path / "data", count=1)
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with pytest.warns(DatasetWarning, match="cannot write the decode cache"):
        (sample,) = load_dataset(data, cache_dir=tmp_path / "cache")
    assert sample.labels.max() == 2


# ---------------------------------------------------------- worker processes


def test_worker_processes_give_the_same_samples(tmp_path):
    data = make_dsb(tmp_path / "data", count=9)
    sequential = load_dataset(data, cache_dir=False, workers=1)
    parallel = load_dataset(data, cache_dir=tmp_path / "cache", workers=2)
    assert [s.name for s in parallel] == [s.name for s in sequential]
    assert all(
        np.array_equal(a.labels, b.labels) and np.array_equal(a.image, b.image) for a, b in zip(sequential, parallel)
    )
    assert len(_cache_files(tmp_path / "cache")) == 9


def test_worker_process_errors_are_one_line_input_errors(tmp_path):
    data = make_dsb(tmp_path / "data", count=9)
    bad = data / "s05" / "images" / "s05.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError) as excinfo:
        load_dataset(data, cache_dir=False, workers=2)
    assert _message(excinfo).startswith(f"{bad}: ")


def test_worker_process_warnings_reach_the_caller(tmp_path):
    data = make_dsb(tmp_path / "data", count=8)
    shape = (32, 40)
    first, second = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    first[2:8, 2:8], second[6:12, 6:12] = 255, 255
    make_dsb_sample(data, "s99", [first, second], shape)
    with pytest.warns(DatasetWarning, match=r"s99: 4 pixels belong to more than one mask"):
        load_dataset(data, cache_dir=False, workers=2)

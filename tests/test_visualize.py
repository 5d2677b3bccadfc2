"""Tests of nucseg.visualize and of the ``nucseg show`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from nucseg.cli import main
from nucseg.datasets.layouts import load_dataset
from nucseg.datasets.sample import Sample
from nucseg.io.atomic import OutputExistsError
from nucseg.io.images import read_image
from nucseg.visualize import (
    display_image,
    GAP,
    outline_colors,
    outline_overlay,
    prediction_snapshot,
    sample_grid,
    save_sample_grid,
)

FIXTURES = Path(__file__).parent / "data" / "dsb2018"
FLUORESCENCE = "0280fa8f60f6bcae0f97d93c28f60be194f9309ff610dc5845e60455b0f87c21"  # 256 x 256
HISTOLOGY = "00ae65c1c6631ae6f2be1a449902976e6eb8483bf6b0740d00530220832c6d3e"  # 256 x 320
CAPTION_ROWS = 20  # captions are drawn in the top rows of a panel


@pytest.fixture(scope="module")
def fixtures() -> list[Sample]:
    return load_dataset(FIXTURES, cache_dir=False)


def _by_name(samples, name) -> Sample:
    return next(s for s in samples if s.name == name)


def _touching_labels() -> tuple[np.ndarray, np.ndarray]:
    """A gray image with two touching squares and a separate disk."""
    labels = np.zeros((40, 50), np.int32)
    labels[5:15, 5:15] = 1
    labels[5:15, 15:25] = 2
    y, x = np.ogrid[:40, :50]
    labels[(y - 28) ** 2 + (x - 35) ** 2 <= 36] = 5
    image = np.random.default_rng(0).integers(0, 40, size=(40, 50)).astype(np.uint16)
    image[labels > 0] += 200
    return image, labels


# -------------------------------------------------------------------- overlay


def _rim(labels, width=1):
    """The background pixels within ``width`` of a nucleus: where the black edge of the outlines goes."""
    return ndi.binary_dilation(labels > 0, iterations=width) & (labels == 0)


def test_outlines_are_coloured_on_the_nucleus_edge_and_black_just_outside():
    image, labels = _touching_labels()
    overlay = outline_overlay(image, labels)
    assert overlay.shape == (40, 50, 3) and overlay.dtype == np.uint8
    edge, rim = find_boundaries(labels, mode="inner"), _rim(labels)
    assert np.all(overlay[rim] == 0) and np.all(overlay[edge].max(axis=1) == 255)
    untouched = ~(edge | rim)
    assert np.array_equal(overlay[untouched], display_image(image)[untouched])


def test_each_outline_has_its_label_colour():
    image, labels = _touching_labels()
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    overlay = outline_overlay(image, labels, colors=colors)
    boundary = find_boundaries(labels, mode="inner")
    for label, color in [(1, colors[0]), (2, colors[1]), (5, colors[1])]:  # label k gets colors[(k-1) % 3]
        pixels = overlay[boundary & (labels == label)]
        assert len(pixels) > 0 and np.all(pixels == color)
    untouched = ~(boundary | _rim(labels))
    assert np.array_equal(overlay[untouched], display_image(image)[untouched])


def test_a_wider_outline_grows_inwards_and_its_black_edge_outwards():
    image, labels = _touching_labels()
    overlay = outline_overlay(image, labels, width=3)
    edge = ndi.binary_dilation(find_boundaries(labels, mode="inner"), iterations=2) & (labels > 0)
    coloured = np.any(overlay != display_image(image), axis=2) & (labels > 0)
    assert np.array_equal(coloured, edge) and np.all(overlay[_rim(labels)] == 0)
    assert edge.sum() > 2 * find_boundaries(labels, mode="inner").sum()
    with pytest.raises(ValueError, match="at least 1"):
        outline_overlay(image, labels, width=0)


def test_outlines_stay_visible_on_dark_nuclei_on_a_bright_field():
    labels = _touching_labels()[1]
    image = np.where(labels > 0, 30, 230).astype(np.uint8)  # dark stained nuclei, bright brightfield background
    overlay = outline_overlay(np.dstack([image] * 3), labels).astype(int)
    edge, rim = find_boundaries(labels, mode="inner"), _rim(labels)
    assert np.all(overlay[edge].max(axis=1) - 30 >= 200)  # the vivid colour on the dark nucleus
    assert np.all(230 - overlay[rim].max(axis=1) >= 200)  # the black edge on the bright background


def test_default_colours_are_distinct_and_vivid():
    colors = outline_colors(64).astype(int)
    assert colors.shape == (64, 3)
    assert len({tuple(c) for c in colors[:16]}) == 16
    assert np.all(colors.max(axis=1) == 255)  # full value: visible on dark backgrounds
    assert np.all(colors.min(axis=1) == 0)  # full saturation: never gray
    assert np.all(np.abs(colors[1:] - colors[:-1]).sum(axis=1) > 150)  # consecutive labels look different


@pytest.mark.parametrize("name", [FLUORESCENCE, HISTOLOGY])
def test_overlay_on_fixtures(fixtures, name):
    sample = _by_name(fixtures, name)
    overlay = outline_overlay(sample.image, sample.labels)
    assert overlay.shape == sample.image.shape[:2] + (3,) and overlay.dtype == np.uint8
    changed = np.any(overlay != display_image(sample.image), axis=2)
    boundary = find_boundaries(sample.labels, mode="inner")
    assert not np.any(changed & ~(boundary | _rim(sample.labels)))
    assert (changed & boundary).sum() > 0.9 * boundary.sum()  # rarely, an image pixel already has the outline colour


def test_colour_images_are_shown_in_their_own_colours(fixtures):
    image = _by_name(fixtures, HISTOLOGY).image  # H&E, 8-bit RGBA
    assert np.array_equal(display_image(image), image[..., :3])


def test_an_empty_field_stays_dark_and_is_not_stretched_into_noise():
    blank = (np.random.default_rng(0).normal(100, 3, size=(64, 64))).astype(np.uint16)  # camera offset and noise
    assert display_image(blank).max() < 40
    fluorescence = blank.copy()
    fluorescence[20:40, 20:40] = 3000  # one nucleus: shown bright, the background dark
    shown = display_image(fluorescence)
    assert shown[30, 30, 0] == 255 and shown[:10, :10].max() < 10


def test_display_image_normalizes_to_full_range():
    image = np.linspace(1000, 3000, 40 * 50).reshape(40, 50).astype(np.uint16)
    shown = display_image(image)
    assert shown.shape == (40, 50, 3) and shown.dtype == np.uint8
    assert shown.min() == 0 and shown.max() == 255


def test_display_image_of_two_channels_shows_their_mean():
    image = np.zeros((8, 9, 2), np.uint16)
    image[..., 0] = np.arange(9) * 100
    image[..., 1] = np.arange(9)[::-1] * 10
    assert np.array_equal(display_image(image), display_image(image.mean(axis=2)))


def test_overlay_rejects_mismatched_labels():
    with pytest.raises(ValueError):
        outline_overlay(np.zeros((10, 10)), np.zeros((10, 11), np.int32))


# ------------------------------------------------------------------- snapshot


def test_prediction_snapshot_panels():
    image, labels = _touching_labels()
    predicted = np.where(labels == 2, 0, labels)
    snapshot = prediction_snapshot(image, labels, predicted)
    assert snapshot.shape == (40, 3 * 50 + 2 * GAP, 3) and snapshot.dtype == np.uint8
    panels = [snapshot[:, k * (50 + GAP) : k * (50 + GAP) + 50] for k in range(3)]
    below_caption = slice(CAPTION_ROWS, None)
    shown = display_image(image)
    assert np.array_equal(panels[0][below_caption], shown[below_caption])
    for panel, panel_labels in [(panels[1], labels), (panels[2], predicted)]:
        changed = np.any(panel != shown, axis=2)[below_caption]
        edge = find_boundaries(panel_labels, mode="inner")[below_caption]
        assert np.all(changed[edge]) and not np.any(changed & ~(edge | _rim(panel_labels)[below_caption]))


def test_prediction_snapshot_rejects_mismatched_labels():
    with pytest.raises(ValueError):
        prediction_snapshot(np.zeros((10, 10)), np.zeros((10, 10), np.int32), np.zeros((9, 10), np.int32))


# ----------------------------------------------------------------------- grid


def test_sample_grid_shape(fixtures):
    grid = sample_grid(fixtures, n=8, tile_size=64)
    # 4 samples: ceil(sqrt(4 / 2)) = 2 pairs per row, 2 rows; a pair is two tiles.
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * (64 + GAP) - GAP, 2 * 2 * (64 + GAP) - GAP, 3)


def test_sample_grid_of_one_sample(fixtures):
    grid = sample_grid(fixtures, n=1, tile_size=32)
    assert grid.shape == (32, 2 * 32 + GAP, 3)


def test_sample_grid_choice_depends_on_the_seed_only(fixtures):
    assert np.array_equal(
        sample_grid(fixtures, n=2, seed=3, tile_size=32), sample_grid(fixtures, n=2, seed=3, tile_size=32)
    )
    grids = {sample_grid(fixtures, n=1, seed=seed, tile_size=32).tobytes() for seed in range(12)}
    assert len(grids) > 1


def test_sample_grid_outline_tile_shows_the_labels(fixtures):
    sample = _by_name(fixtures, FLUORESCENCE)  # 256 x 256: drawn at full size in a 256 tile
    grid = sample_grid([sample], n=1, tile_size=256)
    image_tile, outline_tile = grid[:, :256], grid[:, 256 + GAP :]
    below_caption = slice(CAPTION_ROWS, None)
    assert np.array_equal(image_tile[below_caption], display_image(sample.image)[below_caption])
    changed = np.any(outline_tile != image_tile, axis=2)[below_caption]
    edge = find_boundaries(sample.labels, mode="inner")[below_caption]
    assert np.all(changed[edge]) and not np.any(changed & ~(edge | _rim(sample.labels)[below_caption]))


def test_sample_grid_scales_large_images_into_the_tile(fixtures):
    histology = _by_name(fixtures, HISTOLOGY)  # 256 x 320 -> 205 x 256 in a 256 tile
    grid = sample_grid([histology], n=1, tile_size=256)
    padding = grid[205:, :256]
    assert np.all(padding == padding[0, 0])
    assert not np.all(grid[CAPTION_ROWS:205, :256] == padding[0, 0])


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"tile_size": 8}])
def test_sample_grid_rejects_bad_options(fixtures, kwargs):
    with pytest.raises(ValueError):
        sample_grid(fixtures, **kwargs)


def test_sample_grid_rejects_no_samples():
    with pytest.raises(ValueError):
        sample_grid([])


def test_save_sample_grid_writes_the_grid(fixtures, tmp_path):
    path = save_sample_grid(fixtures, tmp_path / "grid.png", n=3, seed=1)
    assert path == tmp_path / "grid.png"
    assert np.array_equal(read_image(path), sample_grid(fixtures, n=3, seed=1))
    with pytest.raises(OutputExistsError):
        save_sample_grid(fixtures, path, n=1, overwrite=False)


# ---------------------------------------------------------------- nucseg show


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NUCSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_show_dsb_dataset(tmp_path, cache_dir, capsys):
    out = tmp_path / "samples.png"
    assert main(["show", str(FIXTURES), "--n", "2", "--out", str(out)]) == 0
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.size == (2 * 256 + GAP, 2 * 256 + GAP)
    assert f"wrote {out} (2 of 4 samples)" in capsys.readouterr().out
    assert cache_dir.exists()


def test_show_paired_folders(tmp_path, cache_dir, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for name in ("a", "b"):
        image = np.zeros((30, 40), np.uint8)
        labels = np.zeros((30, 40), np.uint16)
        labels[5:15, 5:15], image[5:15, 5:15] = 1, 200
        if name == "b":  # a second blob: a binary mask, not one labelled nucleus
            labels[20:25, 25:35], image[20:25, 25:35] = 1, 200
        Image.fromarray(image).save(tmp_path / "img" / f"{name}.png")
        Image.fromarray(labels).save(tmp_path / "lab" / f"{name}.png")
    out = tmp_path / "paired.png"
    code = main(["show", "--images", str(tmp_path / "img"), "--masks", str(tmp_path / "lab"), "--out", str(out)])
    assert code == 0
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("nucseg: warning: ") and "b.png: binary mask" in warnings[0]
    assert read_image(out).shape == (2 * 256 + GAP, 2 * 256 + GAP, 3)  # one pair per row for 2 samples


def test_show_bad_folder_is_a_one_line_error(tmp_path, cache_dir, capsys):
    missing = tmp_path / "no-such-dataset"
    assert main(["show", str(missing), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err == f"nucseg: error: {missing}: dataset folder does not exist\n"
    assert not (tmp_path / "x.png").exists()


def test_show_refuses_to_overwrite(tmp_path, cache_dir, capsys):
    out = tmp_path / "samples.png"
    out.write_bytes(b"precious")
    assert main(["show", str(FIXTURES), "--n", "1", "--out", str(out)]) == 2
    assert f"{out}: exists (use --overwrite to replace it)" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main(["show", str(FIXTURES), "--n", "1", "--out", str(out), "--overwrite"]) == 0
    assert read_image(out).shape == (256, 2 * 256 + GAP, 3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--images", "x", "--out", "o.png"], "--images and --masks go together"),
        (["DATASET", "--n", "0", "--out", "o.png"], "--n must be at least 1"),
    ],
)
def test_show_usage_errors(tmp_path, cache_dir, capsys, args, message):
    args = [str(FIXTURES) if a == "DATASET" else a for a in args]
    assert main(["show", *args]) == 2
    assert message in capsys.readouterr().err

"""Block-wise segmentation of large images: block grid, ownership, stitching, lazy reading, resume."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image
from scipy import ndimage as ndi

from nucseg.batch.blockwise import segment_large
from nucseg.io.lazy import image_shape, open_image
from nucseg.scale.blocks import BlockGrid, covered_objects, paste_objects, select_owned_objects
from nucseg.errors import InputError
from nucseg.io.atomic import OutputExistsError
from nucseg.io.images import read_labels
from nucseg.postprocess.watershed import remove_small_labels, split_by_distance

# ----------------------------------------------------------------------- helpers


def random_discs(shape, *, spacing, radius_range, seed):
    """Separate discs (labels 1..n) jittered around a grid, so that many cross any block border."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    label = 0
    for row in range(spacing // 2, shape[0], spacing):
        for col in range(spacing // 2, shape[1], spacing):
            radius = rng.uniform(*radius_range)
            slack = spacing / 2 - radius - 1
            r, c = row + rng.uniform(-slack, slack), col + rng.uniform(-slack, slack)
            top, left = max(int(r - radius), 0), max(int(c - radius), 0)
            window = labels[top : int(r + radius) + 2, left : int(c + radius) + 2]
            rows, cols = np.indices(window.shape)
            disc = (rows + top - r) ** 2 + (cols + left - c) ** 2 <= radius**2
            if disc.any():
                label += 1
                window[disc] = label
    return labels


def as_partition(labels):
    """The set of objects of a label image, each as the frozenset of its flat pixel indices."""
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(1, flat.max() + 2))
    return {
        frozenset(order[bounds[i] : bounds[i + 1]].tolist())
        for i in range(len(bounds) - 1)
        if bounds[i + 1] > bounds[i]
    }


def best_iou_per_object(reference, test):
    """For each object of ``reference``, the best IoU with any object of ``test``."""
    reference = reference.astype(np.int64).ravel()
    test = test.astype(np.int64).ravel()
    both = (reference > 0) & (test > 0)
    pairs, overlap = np.unique(np.stack([reference[both], test[both]]), axis=1, return_counts=True)
    area_ref = np.bincount(reference)
    area_test = np.bincount(test)
    iou = overlap / (area_ref[pairs[0]] + area_test[pairs[1]] - overlap)
    best = np.zeros(area_ref.size)
    np.maximum.at(best, pairs[0], iou)
    return best[1:][area_ref[1:] > 0]


def components_per_label(labels):
    """Number of 8-connected components of every label of ``labels``."""
    counts = []
    for label, box in enumerate(ndi.find_objects(labels), start=1):
        if box is not None:
            counts.append(ndi.label(labels[box] == label, structure=np.ones((3, 3)))[1])
    return np.array(counts)


def threshold_watershed(image):
    """A block-invariant nucleus segmentation: fixed threshold, distance-transform watershed.

    Unlike the classical baseline, whose Otsu threshold and percentile
    normalization adapt to the block they see, every pixel's result depends
    only on its neighbourhood, so block-wise and in-memory results can be
    compared exactly.
    """
    smooth = ndi.gaussian_filter(image[..., :3].mean(axis=2).astype(np.float32), 1.0)
    return remove_small_labels(split_by_distance(smooth > 30, min_distance=8), 15)


@pytest.fixture(scope="module")
def mosaic(dsb_samples):
    """2900 x 3100 pixels of the two real fluorescence fixtures (256 x 256) in a checkerboard."""
    a, b = dsb_samples["00071198"].image[..., :3], dsb_samples["0280fa8f"].image[..., :3]
    rows = [np.concatenate([a if (i + j) % 2 == 0 else b for j in range(13)], axis=1) for i in range(12)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:2900, :3100])


# -------------------------------------------------------------------------- grid


def test_grid_cores_tile_the_image_and_read_regions_add_the_margin():
    grid = BlockGrid((1000, 1300), block_size=256, margin=40)
    assert grid.grid_shape == (4, 6)
    cover = np.zeros(grid.shape, dtype=int)
    for block in grid:
        cover[block.core] += 1
        for axis, n in enumerate(grid.shape):
            core, read = block.core[axis], block.read[axis]
            assert read.start == max(core.start - 40, 0) and read.stop == min(core.stop + 40, n)
        top, bottom, left, right = block.open_edges
        assert (top, bottom, left, right) == (
            block.read[0].start > 0,
            block.read[0].stop < 1000,
            block.read[1].start > 0,
            block.read[1].stop < 1300,
        )
    assert np.all(cover == 1)
    assert grid.slot_shape == (256 + 80, 256 + 80)
    middle = grid.block(1, 1)
    assert [b.index for b in grid.neighbours(middle)] == [(r, c) for r in range(3) for c in range(3)]
    assert [b.index for b in grid.earlier_neighbours(middle)] == [(0, 0), (0, 1), (0, 2), (1, 0)]


@pytest.mark.parametrize(("block_size", "margin"), [(200, 10), (0, 10), (256, 0), (256, 257), (True, 1)])
def test_grid_rejects_bad_settings(block_size, margin):
    with pytest.raises(ValueError, match="block size|margin"):
        BlockGrid((1000, 1000), block_size, margin)


# --------------------------------------------------------------------- ownership


def test_owned_objects_are_those_whose_box_centre_lies_in_the_core_and_that_are_not_cut():
    grid = BlockGrid((768, 768), block_size=256, margin=32)
    block = grid.block(1, 1)  # core 256:512, read 224:544 on both axes
    labels = np.zeros(block.read_shape, dtype=np.int32)
    labels[10:20, 100:110] = 1  # centre row 14 + 224 = 238: above the core, in the margin
    labels[40:50, 100:110] = 2  # centre inside the core: kept
    labels[0:8, 100:110] = 3  # touches the top edge of the read region (inside the image): cut, not in core
    labels[28:40, 140:150] = 4  # centre row 33 + 224 = 257: in the core
    labels[150:160, 310:320] = 5  # touches the right edge: cut (centre 314 + 224 = 538 outside the core)
    owned = select_owned_objects(labels, block)
    assert owned.count == 2 and owned.cut == 0
    assert set(np.unique(owned.labels[labels == 2])) == {1} and set(np.unique(owned.labels[labels == 4])) == {2}
    assert not owned.labels[np.isin(labels, [1, 3, 5])].any()

    huge = np.zeros(block.read_shape, dtype=np.int32)
    huge[100:200, 0:320] = 7  # spans the whole read region: its centre is in the core, but it is cut
    assert select_owned_objects(huge, block).cut == 1


def test_objects_at_the_image_border_are_kept():
    grid = BlockGrid((300, 300), block_size=256, margin=32)
    block = grid.block(0, 0)  # read 0:288; top and left edges are the image border
    labels = np.zeros(block.read_shape, dtype=np.int32)
    labels[0:10, 0:10] = 1
    labels[100:110, 280:288] = 2  # touches the right edge of the read region, which lies inside the image
    owned = select_owned_objects(labels, block)
    assert owned.count == 1 and owned.labels[0, 0] == 1 and owned.labels[105, 285] == 0


@pytest.mark.parametrize(("block_size", "margin"), [(256, 24), (256, 256), (512, 40)])
def test_stitching_consistent_blocks_reproduces_the_objects_exactly(tmp_path, block_size, margin):
    truth = random_discs((900, 1100), spacing=48, radius_range=(3, 22), seed=block_size + margin)
    output = tmp_path / "stitched.zarr"
    segment_large(truth, output, model=lambda block: block, block_size=block_size, margin=margin)
    stitched = zarr.open_array(output, mode="r")[:]
    assert as_partition(stitched) == as_partition(truth)
    assert np.array_equal(np.unique(stitched), np.arange(stitched.max() + 1))


def test_covered_objects_and_paste_objects():
    labels = np.array([[1, 1, 0, 2, 2, 2]])
    claimed = np.array([[True, True, False, True, False, False]])
    assert covered_objects(labels, claimed).tolist() == [False, True, False]

    target = np.zeros((2, 4), dtype=np.uint32)
    conflicts = paste_objects(
        target,
        [
            ((slice(0, 2), slice(0, 2)), np.array([[5, 5], [0, 5]])),
            ((slice(0, 2), slice(1, 4)), np.array([[7, 7, 0], [7, 0, 8]])),
        ],
    )
    assert target.tolist() == [[5, 5, 7, 0], [0, 5, 0, 8]]
    assert conflicts == 2


def test_an_object_kept_by_two_disagreeing_blocks_is_kept_once(tmp_path):
    # The segmenter sees the image columns in channel 1 and shifts every
    # object one pixel right in the second block column (core 256:512), so
    # both blocks find the centre of disc A (columns 247..263, centre 255)
    # in their own core.
    rows, cols = np.indices((300, 600))
    truth = np.zeros((300, 600), dtype=np.int32)
    for label, (row, col) in enumerate([(100, 255), (200, 100), (150, 400), (40, 560)], start=1):
        truth[(rows - row) ** 2 + (cols - col) ** 2 <= 64] = label
    image = np.stack([truth, cols], axis=-1)

    def shifting_segmenter(block):
        labels = block[..., 0]
        if block[0, 0, 1] != 256 - 32:  # not the read region of block column 1
            return labels
        shifted = np.zeros_like(labels)
        shifted[:, 1:] = labels[:, :-1]
        return shifted

    report = segment_large(image, tmp_path / "labels.zarr", model=shifting_segmenter, block_size=256, margin=32)
    labels = zarr.open_array(tmp_path / "labels.zarr", mode="r")[:]
    assert report.duplicates == 1 and report.nuclei == 4 == labels.max()
    assert np.array_equal(labels == labels[100, 255], truth == 1)  # the first block's copy of disc A
    assert np.all(components_per_label(labels) == 1)
    assert np.all(best_iou_per_object(truth, labels) > 0.8)


# ---------------------------------------------------------------- large images


@pytest.mark.slow
@pytest.mark.slow
def test_blockwise_mosaic_matches_the_in_memory_segmentation(tmp_path, mosaic):
    path = tmp_path / "mosaic.tif"
    tifffile.imwrite(path, mosaic, tile=(256, 256), photometric="rgb", compression="zlib")
    expected = threshold_watershed(mosaic)
    report = segment_large(path, tmp_path / "labels.zarr", model=threshold_watershed, block_size=768, margin=64)
    labels = zarr.open_array(tmp_path / "labels.zarr", mode="r")[:]

    assert report.grid_shape == (4, 5) and report.cut == 0
    best = best_iou_per_object(expected, labels)
    assert np.mean(best > 0.95) >= 0.99
    assert labels.max() == report.nuclei == len(np.unique(labels)) - 1  # consecutive, each label present
    assert abs(report.nuclei - expected.max()) <= 0.01 * expected.max()
    assert np.all(components_per_label(labels) == 1)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no scratch left


@pytest.mark.slow
@pytest.mark.slow
def test_blockwise_classical_model_on_a_mosaic_gives_one_component_per_nucleus(tmp_path, mosaic):
    # The classical baseline thresholds each block on its own, so it does not
    # reproduce the in-memory result object for object; the stitching must
    # still give each nucleus one label and lose none at block borders.
    from nucseg.inference.model import load_model

    model = load_model("classical")
    image = mosaic[:1800, :2000]
    expected = model.segment(image).labels
    report = segment_large(image, tmp_path / "labels.tif", model=model, block_size=512, margin=64)
    labels = read_labels(tmp_path / "labels.tif")
    assert report.grid_shape == (4, 4)
    assert labels.max() == report.nuclei == len(np.unique(labels)) - 1
    assert np.all(components_per_label(labels) == 1)
    found = best_iou_per_object(expected, labels)  # 100% measured; 86% above IoU 0.95
    assert np.mean(found > 0.5) >= 0.99, f"only {np.mean(found > 0.5):.1%} of the nuclei found"


def test_tiff_and_zarr_outputs_hold_the_same_labels(tmp_path, dsb_samples):
    image = np.tile(dsb_samples["00071198"].image[..., :3], (3, 2, 1))  # 768 x 512
    tif = segment_large(image, tmp_path / "labels.tif", model=threshold_watershed, block_size=256, margin=48)
    zarr_report = segment_large(image, tmp_path / "labels.zarr", model=threshold_watershed, block_size=256, margin=48)
    from_tiff = read_labels(tmp_path / "labels.tif")
    from_zarr = zarr.open_array(tmp_path / "labels.zarr", mode="r")[:]
    assert tif.nuclei == zarr_report.nuclei > 0
    assert np.array_equal(from_tiff, from_zarr)
    with tifffile.TiffFile(tmp_path / "labels.tif") as handle:
        assert handle.pages[0].is_tiled and handle.pages[0].dtype == np.uint16


def test_network_model_in_one_block_equals_the_in_memory_segmentation(tmp_path, dsb_samples, active_model_dir):
    # One block covering the image: the whole-image intensity percentiles are
    # the image's own, so the result must be exactly Model.segment's.
    from nucseg.inference.model import load_model

    model = load_model(active_model_dir)
    image = dsb_samples["00ae65c1"].image
    expected = model.segment(image).labels
    report = segment_large(image, tmp_path / "labels.tif", model=model, block_size=512, margin=64)
    labels = read_labels(tmp_path / "labels.tif")
    assert report.grid_shape == (1, 1) and report.nuclei == expected.max() > 0
    assert np.array_equal(labels, expected)


def test_automatic_sizing_runs_every_block_at_the_scale_of_the_centre_block(
    tmp_path, dsb_samples, active_model_dir, monkeypatch
):
    from nucseg.inference.model import load_model
    from nucseg.postprocess.measure import median_nucleus_diameter

    model = load_model(active_model_dir)
    image = np.tile(dsb_samples["00ae65c1"].image[..., :3], (2, 3, 1))  # 512 x 960: 2 x 4 blocks of 256
    found = median_nucleus_diameter([model.segment(image, diameter=None).labels])
    monkeypatch.setattr(model.config, "median_diameter", 0.7 * found, raising=False)
    scales = []
    segment = model.segment
    monkeypatch.setattr(
        model, "segment", lambda block, **options: scales.append(options["options"].scale) or segment(block, **options)
    )
    estimates = []
    estimate = model.estimate_size
    monkeypatch.setattr(
        model,
        "estimate_size",
        lambda block, **options: estimates.append((block, estimate(block, **options))) or estimates[-1][1],
    )
    report = segment_large(image, tmp_path / "labels.zarr", model=model, block_size=256, margin=32)
    assert report.grid_shape == (2, 4) and len(scales) == 8 and len(estimates) == 1
    centre = BlockGrid(image.shape[:2], 256, 32).block(1, 2)
    assert np.array_equal(estimates[0][0], image[centre.read]) and estimates[0][1].factor == report.scale
    assert report.scale != 1.0 and all(scale == report.scale for scale in scales)

    scales.clear()
    assert (
        segment_large(image, tmp_path / "native.zarr", model=model, block_size=256, margin=32, scale=1.0).scale == 1.0
    )
    assert scales == [1.0] * 8


def test_block_wise_reports_the_median_diameter_and_warns_when_sizing_is_clipped(
    tmp_path, dsb_samples, active_model_dir, monkeypatch
):
    from nucseg.inference.model import load_model
    from nucseg.postprocess.measure import median_nucleus_diameter

    model = load_model(active_model_dir)
    image = np.tile(dsb_samples["00ae65c1"].image[..., :3], (2, 3, 1))
    found = median_nucleus_diameter([model.segment(image, diameter=None).labels])
    monkeypatch.setattr(model.config, "median_diameter", 4 * found, raising=False)  # beyond the 1.5x limit
    too_far = r"labels.tif: nuclei measured about \d+ px across, too far .* give --diameter"
    with pytest.warns(UserWarning, match=too_far):
        report = segment_large(image, tmp_path / "labels.tif", model=model, block_size=256, margin=32)
    assert report.median_diameter == pytest.approx(median_nucleus_diameter([read_labels(tmp_path / "labels.tif")]))


def test_an_interrupted_run_resumes_with_the_blocks_not_yet_done(tmp_path, dsb_samples):
    image = np.tile(dsb_samples["0280fa8f"].image[..., :3], (3, 3, 1))  # 768 x 768: 3 x 3 blocks of 256
    calls = {"n": 0, "crash_at": 5}

    def crashing_segmenter(block):
        calls["n"] += 1
        if calls["n"] == calls["crash_at"]:
            raise RuntimeError("simulated crash")
        return threshold_watershed(block)

    output = tmp_path / "labels.zarr"
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_large(image, output, model=crashing_segmenter, block_size=256, margin=32)
    assert not output.exists()

    calls.update(n=0, crash_at=None)
    report = segment_large(image, output, model=crashing_segmenter, block_size=256, margin=32)
    assert report.resumed_blocks == 4 and calls["n"] == 5  # 9 blocks, 4 done before the crash
    fresh = segment_large(image, tmp_path / "fresh.zarr", model=threshold_watershed, block_size=256, margin=32)
    assert fresh.resumed_blocks == 0
    assert np.array_equal(zarr.open_array(output, mode="r")[:], zarr.open_array(fresh.output, mode="r")[:])


def test_existing_output_and_bad_settings_are_refused(tmp_path):
    image = np.zeros((300, 300), dtype=np.uint8)
    (tmp_path / "labels.tif").write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="exists"):
        segment_large(image, tmp_path / "labels.tif", model=threshold_watershed)
    assert (tmp_path / "labels.tif").read_bytes() == b"mine"
    with pytest.raises(InputError, match=r"\.zarr, \.tif or \.tiff"):
        segment_large(image, tmp_path / "labels.png", model=threshold_watershed)
    with pytest.raises(InputError, match="multiple of 256"):
        segment_large(image, tmp_path / "new.tif", model=threshold_watershed, block_size=1000)


# ------------------------------------------------------------------ lazy reading


def test_open_image_reads_regions_of_tiled_tiffs(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (600, 700, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, tile=(128, 128), photometric="rgb")
    lazy = open_image(tmp_path / "rgb.tif")
    assert lazy.shape == (600, 700) and lazy.channels == 3 and lazy.dtype == np.uint8
    assert np.array_equal(lazy.read(slice(100, 350), slice(500, 700)), rgb[100:350, 500:700])

    stack = rng.integers(0, 4000, (2, 300, 400), dtype=np.uint16)  # (C, H, W), channel axis not declared
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    with pytest.raises(InputError, match="does not declare its channel axis"):
        open_image(tmp_path / "stack.tif")
    with pytest.raises(InputError, match="2 channels"):
        open_image(tmp_path / "stack.tif", channel_axis=0)
    lazy = open_image(tmp_path / "stack.tif", channel_axis=0, channel=2)
    assert lazy.shape == (300, 400) and lazy.channels == 0
    assert np.array_equal(lazy.read(slice(0, 300), slice(10, 20)), stack[1, :, 10:20])
    assert image_shape(tmp_path / "stack.tif", channel_axis=0) == (300, 400)


def test_open_image_reads_zarr_arrays_and_ome_zarr_groups(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 255, (1, 500, 450), dtype=np.uint8)
    array = zarr.create_array(tmp_path / "gray.zarr", shape=gray.shape, chunks=(1, 128, 128), dtype=gray.dtype)
    array[:] = gray
    lazy = open_image(tmp_path / "gray.zarr")
    assert lazy.shape == (500, 450) and lazy.channels == 0
    assert np.array_equal(lazy.read(slice(50, 60), slice(0, 450)), gray[0, 50:60])

    cyx = rng.integers(0, 255, (3, 200, 300), dtype=np.uint8)
    group = zarr.open_group(tmp_path / "ome.zarr", mode="w")
    group.attrs["multiscales"] = [
        {"axes": [{"name": "c", "type": "channel"}, {"name": "y"}, {"name": "x"}], "datasets": [{"path": "0"}]}
    ]
    group.create_array("0", shape=cyx.shape, chunks=(3, 100, 100), dtype=cyx.dtype)[:] = cyx
    lazy = open_image(tmp_path / "ome.zarr")
    assert lazy.shape == (200, 300) and lazy.channels == 3
    assert np.array_equal(lazy.read(slice(0, 200), slice(0, 300)), np.moveaxis(cyx, 0, -1))

    zarr.open_group(tmp_path / "plain.zarr", mode="w").create_array("a", shape=(5, 5), dtype="uint8")
    with pytest.raises(InputError, match="OME-Zarr multiscales"):
        open_image(tmp_path / "plain.zarr")
    (tmp_path / "image.png").write_bytes(b"")
    with pytest.raises(InputError, match="TIFF file or a Zarr store"):
        open_image(tmp_path / "image.png")


def test_block_wise_is_chosen_by_estimated_memory_not_by_side_length():
    from nucseg.scale.blocks import WHOLE_IMAGE_BYTES_PER_PIXEL, default_max_memory, needs_blocks

    assert not needs_blocks(4096, 4096, 2 * 2**30)  # 1.8 GB estimated: fits in 2 GB
    assert needs_blocks(8000, 8000, 2 * 2**30) and needs_blocks(8000, 8000, 6 * 2**30)  # 7 GB, as measured
    assert not needs_blocks(8000, 8000, 8000 * 8000 * WHOLE_IMAGE_BYTES_PER_PIXEL)
    assert 2**30 < default_max_memory() < 2**40


def test_a_stack_is_planned_in_memory_with_all_its_planes_counted(tmp_path):
    from nucseg.batch.driver import plan_images
    from nucseg.scale.blocks import whole_image_bytes

    tifffile.imwrite(
        tmp_path / "stack.tif", np.zeros((2, 3, 300, 400), np.uint16), imagej=True, metadata={"axes": "TZYX"}
    )
    tifffile.imwrite(tmp_path / "plane.tif", np.zeros((300, 400), np.uint16))
    planned = {item.image.name: item for item in plan_images([tmp_path], tmp_path / "out")}
    assert not planned["stack"].blockwise and not planned["plane"].blockwise
    assert planned["plane"].memory == whole_image_bytes(300, 400)
    assert planned["stack"].memory == whole_image_bytes(300, 400, planes=6) > planned["plane"].memory
    with pytest.warns(UserWarning, match="a stack of 6 planes of 300 x 400 needs about"):
        tight = {item.image.name: item for item in plan_images([tmp_path], tmp_path / "out", max_memory=2**20)}
    assert not tight["stack"].blockwise and tight["plane"].blockwise  # the 2-D image goes block-wise


def test_block_wise_measurements_and_overview_match_the_stitched_labels(tmp_path, dsb_samples, monkeypatch):
    import nucseg.batch.writers as writers
    from nucseg.postprocess.measure import measure_nuclei
    from nucseg.visualize import outline_overlay

    image = np.tile(dsb_samples["0280fa8f"].image[..., :3], (3, 3, 1))  # 768 x 768: 3 x 3 blocks of 256
    monkeypatch.setattr(writers, "OVERVIEW_SIDE", 256)
    report = segment_large(
        image,
        tmp_path / "labels.zarr",
        model=threshold_watershed,
        block_size=256,
        margin=32,
        measurements_path=tmp_path / "nuclei.csv",
        overlay_path=tmp_path / "overview.png",
        pixel_size=0.5,
    )
    labels = zarr.open_array(report.output, mode="r")[:]
    whole = measure_nuclei(labels, image, pixel_size=0.5)
    import csv

    with open(tmp_path / "nuclei.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(whole) == report.nuclei > 20
    assert all(
        int(row["label"]) == expected["label"]
        and all(float(row[c]) == pytest.approx(expected[c], rel=1e-5) for c in whole.columns)
        for row, expected in zip(rows, whole.rows)
    )
    overview = np.asarray(Image.open(tmp_path / "overview.png"))
    assert np.array_equal(overview, outline_overlay(image[::3, ::3], labels[::3, ::3]))


def test_block_wise_measurements_take_every_channel_by_name(tmp_path, dsb_samples):
    import csv

    from nucseg.inference.model import load_model
    from nucseg.postprocess.measure import measure_nuclei

    dapi = np.tile(dsb_samples["0280fa8f"].image[..., 0], (2, 2)).astype(np.uint16) * 200  # 512 x 512
    noise = np.random.default_rng(0).integers(0, 4000, dapi.shape, dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "cells.tif",
        np.stack([noise, dapi]),
        imagej=True,
        metadata={"axes": "CYX", "Labels": ["actin", "DAPI"]},
    )
    report = segment_large(
        tmp_path / "cells.tif",
        tmp_path / "labels.zarr",
        model=load_model("classical"),
        block_size=256,
        margin=32,
        channel="DAPI",
        measurements_path=tmp_path / "nuclei.csv",
    )
    labels = zarr.open_array(report.output, mode="r")[:]
    expected = measure_nuclei(labels, np.stack([noise, dapi], axis=-1), channel_names=["actin", "DAPI"])
    with open(tmp_path / "nuclei.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(expected) == report.nuclei > 10
    assert all(
        float(row[column]) == pytest.approx(want[column], rel=1e-5)
        for row, want in zip(rows, expected.rows)
        for column in ("mean_intensity_actin", "mean_intensity_DAPI", "max_intensity_actin")
    )


def test_settings_by_image_kind_are_chosen_once_by_the_centre_block(tmp_path, dsb_samples, active_model_dir):
    import json
    import shutil

    from nucseg.inference.model import load_model
    from nucseg.postprocess.watershed import PostprocessConfig

    folder = tmp_path / "model"
    shutil.copytree(active_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["postprocess_by_kind"] = {"fluorescence": PostprocessConfig(min_size=10**6).to_dict()}
    (folder / "config.json").write_text(json.dumps(config))
    model = load_model(folder)
    dark = dsb_samples["00071198"].image[..., :3]  # fluorescence
    stained = dsb_samples["00ae65c1"].image[:256, :256, :3]  # histology
    # 2 x 3 blocks of 256; the centre block (1, 1) is histology, so no block uses the fluorescence settings
    image = np.concatenate([np.concatenate([dark, stained, dark], axis=1)] * 2, axis=0)
    report = segment_large(image, tmp_path / "labels.tif", model=model, block_size=256, margin=32, scale=1.0)
    assert report.grid_shape == (2, 3)
    assert read_labels(tmp_path / "labels.tif")[:256, :256].max() > 0  # a fluorescence block, general settings
    image[:, 256:512] = np.concatenate([dark] * 2, axis=0)  # now the centre block is fluorescence: nothing kept
    assert segment_large(image, tmp_path / "dark.zarr", model=model, block_size=256, margin=32, scale=1.0).nuclei == 0


def test_a_block_wise_image_gets_a_quality_estimate_from_its_blocks(tmp_path, dsb_samples):
    from nucseg.inference.model import load_model

    model = load_model("dsb2018")
    fluorescence = dsb_samples["0280fa8f"].image[..., :3]
    image = np.ascontiguousarray(np.tile(fluorescence, (2, 2, 1)))  # 512 x 512: four blocks of 256
    report = segment_large(image, tmp_path / "labels.tif", model=model, block_size=256, margin=64, scale=1.0)
    whole = model.segment(image, scale=1.0)
    expected = model.assess_quality(image, whole)
    assert report.quality is not None and report.quality.flag == expected.flag == "ok"
    assert abs(report.quality.score - expected.score) < 0.1
    assert (
        segment_large(
            image, tmp_path / "classical.tif", model=load_model("classical"), block_size=256, margin=64
        ).quality
        is None
    )  # the classical baseline gives no quality
    blank = segment_large(
        np.zeros((512, 512), np.uint8), tmp_path / "blank.tif", model=model, block_size=256, margin=64, scale=1.0
    )
    assert blank.nuclei == 0 and blank.quality.flag == "check" and blank.quality.score is None

import json

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk
from skimage.segmentation import find_boundaries

from nucseg.postprocess.watershed import (
    add_unseeded_components,
    fill_small_holes,
    instances_from_probabilities,
    PostprocessConfig,
    remove_small_labels,
    split_by_distance,
)


def _nuclei(shape=(96, 128)) -> np.ndarray:
    """Five discs: two pairs touching along a line, one alone."""
    labels = np.zeros(shape, dtype=np.int32)
    for label, (center, radius) in enumerate(
        [((25, 25), 12), ((25, 49), 12), ((70, 30), 10), ((70, 50), 10), ((50, 100), 15)], start=1
    ):
        labels[disk(center, radius, shape=shape)] = label
    return labels


def _three_class(labels: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Blurred one-hot background / interior / boundary probabilities, shape (3, H, W)."""
    boundary = find_boundaries(labels, mode="inner")
    classes = np.where(boundary, 2, np.where(labels > 0, 1, 0))
    probabilities = np.stack([ndi.gaussian_filter((classes == k).astype(np.float32), sigma) for k in range(3)])
    return probabilities / probabilities.sum(axis=0, keepdims=True)


def _binary(labels: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    three = _three_class(labels, sigma)
    return np.stack([three[0], three[1] + three[2]])


def _best_ious(true: np.ndarray, pred: np.ndarray) -> list[float]:
    """For every true object, its best IoU with any predicted object."""
    ious = []
    for label in range(1, true.max() + 1):
        obj = true == label
        overlapping = np.unique(pred[obj])
        ious.append(max(((obj & (pred == p)).sum() / (obj | (pred == p)).sum() for p in overlapping if p), default=0.0))
    return ious


def test_three_class_splits_touching_nuclei():
    true = _nuclei()
    pred = instances_from_probabilities(_three_class(true))
    assert pred.dtype == np.int32 and pred.shape == true.shape
    assert pred.max() == 5
    assert np.array_equal(np.unique(pred), np.arange(6))
    assert all(iou > 0.85 for iou in _best_ious(true, pred))


def test_distance_map_seeds_touching_nuclei_that_the_boundary_class_does_not_part():
    from nucseg.training.targets import distance_target

    true = np.zeros((60, 80), dtype=np.int32)
    true[disk((30, 30), 12, shape=true.shape)] = 1
    true[disk((30, 48), 12, shape=true.shape)] = 2  # overlaps the first: they share a 16-pixel contact line
    # Classes predicted as if the pair were one nucleus: no boundary line between them.
    probabilities = _three_class((true > 0).astype(np.int32))
    assert instances_from_probabilities(probabilities).max() == 1
    with_distance = np.concatenate([probabilities, ndi.gaussian_filter(distance_target(true), 1.0)[None]])
    pred = instances_from_probabilities(with_distance)
    assert pred.max() == 2
    assert all(iou > 0.85 for iou in _best_ious(true, pred))


def test_three_class_float64_and_noisy_maps():
    true = _nuclei()
    rng = np.random.default_rng(0)
    noisy = _three_class(true) + rng.uniform(0, 0.15, size=(3, *true.shape))
    noisy /= noisy.sum(axis=0, keepdims=True)
    pred = instances_from_probabilities(noisy.astype(np.float64))
    assert pred.max() == 5
    assert all(iou > 0.8 for iou in _best_ious(true, pred))


def test_foreground_without_marker_is_kept():
    probabilities = np.zeros((3, 40, 40), dtype=np.float32)
    probabilities[0] = 1.0
    blob = np.zeros((40, 40), dtype=bool)
    blob[10:20, 10:20] = True
    # confident foreground, but interior never above the marker threshold
    probabilities[:, blob] = np.array([0.1, 0.4, 0.5], dtype=np.float32)[:, None]
    pred = instances_from_probabilities(probabilities)
    assert pred.max() == 1
    assert np.array_equal(pred == 1, blob)


def test_small_markers_do_not_seed_their_own_nucleus():
    probabilities = np.zeros((3, 40, 40), dtype=np.float32)
    probabilities[0] = 1.0
    probabilities[:, 5:35, 5:35] = np.array([0.0, 0.0, 1.0])[:, None, None]  # boundary everywhere...
    probabilities[:, 10:25, 10:25] = np.array([0.0, 1.0, 0.0])[:, None, None]  # ...a large interior...
    probabilities[:, 29:31, 29:31] = np.array([0.0, 1.0, 0.0])[:, None, None]  # ...and a 4-pixel speck
    merged = instances_from_probabilities(probabilities, PostprocessConfig(min_marker_size=5))
    assert merged.max() == 1
    assert (merged > 0).sum() == 30 * 30
    split = instances_from_probabilities(probabilities, PostprocessConfig(min_marker_size=4))
    assert split.max() == 2


def test_min_size_removes_small_objects_and_relabels_sequentially():
    labels = _nuclei()
    labels[disk((85, 110), 2, shape=labels.shape)] = 9  # 13 pixels
    probabilities = _three_class(labels, sigma=0.5)
    kept = instances_from_probabilities(probabilities, PostprocessConfig(min_size=5))
    removed = instances_from_probabilities(probabilities, PostprocessConfig(min_size=30))
    assert kept.max() == 6
    assert removed.max() == 5
    assert np.array_equal(np.unique(removed), np.arange(6))
    assert removed[85, 110] == 0


def test_binary_components_and_optional_split():
    true = _nuclei()
    probabilities = _binary(true)
    merged = instances_from_probabilities(probabilities)
    assert merged.max() == 3  # each touching pair is one component
    split = instances_from_probabilities(probabilities, PostprocessConfig(split_binary=True, split_min_distance=5))
    assert split.max() == 5
    assert all(iou > 0.8 for iou in _best_ious(true, split))


def test_empty_and_all_background_maps():
    probabilities = np.zeros((3, 16, 16), dtype=np.float32)
    probabilities[0] = 1
    assert not instances_from_probabilities(probabilities).any()
    assert not instances_from_probabilities(probabilities[:2]).any()


def test_thresholds_are_applied():
    probabilities = np.zeros((2, 10, 10), dtype=np.float32)
    probabilities[1, 2:8, 2:8] = 0.6
    probabilities[0] = 1 - probabilities[1]
    assert instances_from_probabilities(probabilities).max() == 1
    assert instances_from_probabilities(probabilities, PostprocessConfig(foreground_threshold=0.7)).max() == 0


@pytest.mark.parametrize(
    "probabilities",
    [
        np.zeros((3, 8), dtype=np.float32),
        np.zeros((5, 8, 8), dtype=np.float32),
        np.zeros((1, 8, 8), dtype=np.float32),
        np.zeros((3, 8, 8), dtype=np.uint8),
        np.full((3, 8, 8), np.nan, dtype=np.float32),
    ],
)
def test_rejects_bad_probabilities(probabilities):
    with pytest.raises(ValueError):
        instances_from_probabilities(probabilities)


def test_config_round_trips_through_json():
    config = PostprocessConfig(foreground_threshold=0.4, marker_threshold=0.7, min_size=20, split_binary=True)
    assert PostprocessConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert PostprocessConfig.from_dict({"min_size": 3}) == PostprocessConfig(min_size=3)
    from_numpy = PostprocessConfig(min_size=np.int64(3), foreground_threshold=np.float32(0.25))
    expected = PostprocessConfig(min_size=3, foreground_threshold=0.25).to_dict()
    assert json.loads(json.dumps(from_numpy.to_dict())) == expected


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown postprocess setting.*'min_sise'"):
        PostprocessConfig.from_dict({"min_sise": 3})
    for bad in (
        {"foreground_threshold": 1.5},
        {"marker_threshold": -0.1},
        {"min_size": -1},
        {"min_size": 2.5},
        {"split_binary": "yes"},
        {"split_min_distance": 0},
        {"max_hole_size": True},
        {"foreground_threshold": float("nan")},
    ):
        with pytest.raises(ValueError):
            PostprocessConfig.from_dict(bad)
    with pytest.raises(ValueError):
        PostprocessConfig.from_dict([("min_size", 3)])


def test_fill_small_holes_fills_only_enclosed_small_holes():
    mask = np.zeros((30, 30), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5:7, 5:7] = False  # 4-pixel hole
    mask[15:29, 15:29] = True
    mask[18:26, 18:26] = False  # 64-pixel hole
    mask[0:3, 20:25] = False  # background touching the border is no hole
    filled = fill_small_holes(mask, 10)
    assert filled[5:7, 5:7].all()
    assert not filled[18:26, 18:26].any()
    assert np.array_equal(fill_small_holes(mask, 64)[18:26, 18:26], np.ones((8, 8), bool))
    assert np.array_equal(fill_small_holes(mask, 0), mask)


def test_remove_small_labels_keeps_order():
    labels = np.array([[5, 5, 0, 2], [5, 5, 0, 9], [0, 0, 0, 9]])
    assert remove_small_labels(labels, 2).tolist() == [[1, 1, 0, 0], [1, 1, 0, 2], [0, 0, 0, 2]]


def test_add_unseeded_components():
    mask = np.zeros((5, 9), dtype=bool)
    mask[1:4, 0:3] = True
    mask[1:4, 5:8] = True
    seeds = np.zeros(mask.shape, dtype=np.int32)
    seeds[2, 1] = 7
    markers = add_unseeded_components(seeds, mask)
    assert markers[2, 1] == 7
    assert np.count_nonzero(markers[1:4, 0:3]) == 1  # a seeded component keeps just its seed
    assert np.all(markers[1:4, 5:8] == 8)  # an unseeded one becomes a seed, numbered after the others
    assert np.count_nonzero(markers) == 1 + 9


def test_split_by_distance_keeps_every_component():
    mask = np.zeros((40, 60), dtype=bool)
    mask[disk((20, 15), 10, shape=mask.shape)] = True
    mask[disk((20, 32), 10, shape=mask.shape)] = True
    mask[5, 50] = True  # one-pixel object
    labels = split_by_distance(mask, min_distance=5)
    assert len(np.unique(labels[mask])) == 3
    assert np.array_equal(labels > 0, mask)


def test_same_result_as_a_plain_marker_watershed():
    # The watershed is flooded from the marker edges only (for speed); that
    # must not change the result, also for nuclei cut by the image border.
    from skimage.segmentation import watershed

    labels = _nuclei()
    for label, center in enumerate([(0, 10), (95, 70), (40, 127)], start=labels.max() + 1):
        labels[disk(center, 9, shape=labels.shape)] = label
    rng = np.random.default_rng(1)
    probabilities = _three_class(labels) + rng.uniform(0, 0.2, size=(3, *labels.shape))
    probabilities /= probabilities.sum(axis=0, keepdims=True)
    config = PostprocessConfig()
    interior, foreground = probabilities[1], probabilities[1] + probabilities[2] > config.foreground_threshold
    seeds = remove_small_labels(ndi.label(interior > config.marker_threshold)[0], config.min_marker_size)
    markers = add_unseeded_components(seeds, foreground)
    expected = remove_small_labels(watershed(-interior, markers, mask=foreground), config.min_size)
    assert expected.max() == 8
    np.testing.assert_array_equal(instances_from_probabilities(probabilities, config), expected)


def test_sizes_at_network_scale_become_image_pixels_at_each_scale():
    labels = _nuclei()
    labels[disk((85, 110), 2, shape=labels.shape)] = 9  # 13 pixels
    probabilities = _three_class(labels, sigma=0.5)
    network = PostprocessConfig(min_size=50, min_marker_size=8, size_frame="network")
    # The network ran on the image shrunk by 0.5: 50 network pixels are 200 image pixels.
    at_half = network.at_scale(0.5)
    assert (at_half.min_size, at_half.min_marker_size, at_half.size_frame) == (200, 32, "image")
    assert network.at_scale(2.0).min_marker_size == 2
    assert PostprocessConfig(min_marker_size=0, size_frame="network").at_scale(4.0).min_marker_size == 0
    image_frame = PostprocessConfig(min_size=50)
    assert image_frame.at_scale(0.5) is image_frame
    kept = instances_from_probabilities(probabilities, network, scale=4.0)  # min_size 3 image pixels
    dropped = instances_from_probabilities(probabilities, network, scale=0.25)  # min_size 800: every disc
    assert kept.max() == 6
    assert dropped.max() == 0
    assert np.array_equal(
        instances_from_probabilities(probabilities, network, scale=0.5),
        instances_from_probabilities(probabilities, at_half),
    )


def test_size_frame_is_checked_and_round_trips():
    with pytest.raises(ValueError, match="size_frame"):
        PostprocessConfig(size_frame="microns")
    config = PostprocessConfig(size_frame="network")
    assert PostprocessConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="scale"):
        config.at_scale(0.0)

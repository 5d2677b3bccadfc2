"""Post-processing threshold search (nucseg.evaluation.tuning) and ``nucseg tune``.

The probability maps are made by hand so that the best settings are known:
nuclei and look-alike distractors at probabilities a known threshold
separates, touching nuclei whose seeds only one marker threshold splits.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk
from skimage.segmentation import find_boundaries

from nucseg.inference.model import load_model, NetworkModel
from nucseg.cli import main
from nucseg.errors import ModelError
from nucseg.evaluation.metrics import dsb_score
from nucseg.models.folder import load_model_folder, ModelConfig, read_model_config, save_model
from nucseg.postprocess.watershed import instances_from_probabilities, PostprocessConfig
from nucseg.evaluation.tuning import (
    MIN_TUNING_IMAGES,
    MIN_TUNING_NUCLEI,
    save_tuning,
    search_thresholds,
    small_tuning_set,
    SmallTuningSetWarning,
    tune_postprocess,
    TuningGrid,
    TuningResult,
)

DSB_DIR = Path(__file__).parents[1] / "data" / "dsb2018"
TINY_UNET = {"base_channels": 4, "depth": 2}
SMALL_GRID = TuningGrid(
    foreground_threshold=(0.3, 0.6),
    marker_threshold=(0.4, 0.8),
    min_marker_size=(1, 16),
    min_size=(0, 30, 80),
    refine_rounds=1,
)


def _three_class(interior: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """(3, H, W) float32 probabilities from the interior and boundary maps."""
    return np.stack([1.0 - interior - boundary, interior, boundary]).astype(np.float32)


def _disks_with_distractors(shape=(96, 128)) -> tuple[np.ndarray, np.ndarray]:
    """Separate disk nuclei at p(nucleus) 0.62, disk distractors at 0.58 and 5x5 specks at 0.95.

    Only a foreground threshold in [0.58, 0.62) with a min_size in [26, 113]
    (113 px: the smallest nucleus) finds exactly the nuclei.
    """
    labels = np.zeros(shape, dtype=np.int32)
    foreground = np.full(shape, 0.02, dtype=np.float32)
    for i, (row, col) in enumerate([(20, 20), (20, 60), (60, 30), (70, 100)], start=1):
        rr, cc = disk((row, col), 6 + i)
        labels[rr, cc] = i
    foreground[labels > 0] = 0.62
    for row, col in [(20, 100), (75, 65)]:
        foreground[disk((row, col), 9)] = 0.58
    foreground[45:50, 55:60] = 0.95
    foreground[85:90, 5:10] = 0.95
    return labels, foreground


def _touching_pairs(shape=(64, 96)) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of touching rectangles: p(interior) 0.72 inside, 0.68 on the 1-pixel band at each side of the contact.

    Only a marker threshold in [0.68, 0.72) seeds each rectangle on its own
    (below, the band joins the seeds; above, nothing seeds).
    """
    labels = np.zeros(shape, dtype=np.int32)
    interior = np.zeros(shape)
    for i, (top, left) in enumerate([(5, 5), (35, 40)]):
        labels[top : top + 20, left : left + 15] = 2 * i + 1
        labels[top : top + 20, left + 15 : left + 30] = 2 * i + 2
        interior[top : top + 20, left : left + 30] = 0.72
        interior[top : top + 20, left + 14 : left + 16] = 0.68
    boundary = np.where(labels > 0, 0.93 - interior, 0.0)
    return labels, _three_class(interior, boundary)


def test_finds_the_foreground_threshold_and_min_size_that_drop_distractors():
    labels, foreground = _disks_with_distractors()
    probabilities = _three_class(foreground * 0.9, foreground * 0.1)
    result = search_thresholds([probabilities], [labels])
    assert result.config.foreground_threshold == pytest.approx(0.6)
    assert 25 < result.config.min_size <= np.bincount(labels.ravel())[1:].min()
    assert result.score == 1.0
    # of the equally good settings, the nearest to the model's own: marker_threshold kept, min_size 30 of 30/40/60
    assert result.changed == {"foreground_threshold": (0.5, 0.6), "min_size": (10, 30)}
    assert result.initial_config == PostprocessConfig()
    assert result.initial_score == dsb_score(labels, instances_from_probabilities(probabilities)) < 1.0


def test_finds_the_marker_threshold_that_splits_touching_nuclei():
    labels, probabilities = _touching_pairs()
    result = search_thresholds([probabilities], [labels])
    assert result.config.marker_threshold == pytest.approx(0.7)
    assert result.score == 1.0
    assert result.initial_score == 0.0  # at 0.5 the bands join each pair into one seed


def test_image_weights_decide_which_image_the_thresholds_fit():
    disks, foreground = _disks_with_distractors()
    pairs, touching = _touching_pairs()
    maps = [_three_class(foreground * 0.9, foreground * 0.1), touching]
    only_pairs = search_thresholds(maps, [disks, pairs], weights=[0.0, 1.0], grid=SMALL_GRID)
    assert only_pairs.score == pytest.approx(search_thresholds([touching], [pairs], grid=SMALL_GRID).score)
    equal = search_thresholds(maps, [disks, pairs], grid=SMALL_GRID)
    assert equal.score == pytest.approx(
        search_thresholds(maps, [disks, pairs], weights=[2.0, 2.0], grid=SMALL_GRID).score
    )


def test_sizes_at_network_scale_are_tuned_in_the_network_frame():
    labels, foreground = _disks_with_distractors()
    probabilities = _three_class(foreground * 0.9, foreground * 0.1)
    # The network ran at 0.5: a nucleus of 113 image pixels had 28 network pixels, a speck of 25 had 6.
    result = search_thresholds([probabilities], [labels], scales=[0.5], initial=PostprocessConfig(size_frame="network"))
    assert result.score == 1.0
    assert result.config.size_frame == "network"
    assert 25 < result.config.at_scale(0.5).min_size <= np.bincount(labels.ravel())[1:].min()
    assert 6 < result.config.min_size <= 28
    with pytest.raises(ValueError, match="scales"):
        search_thresholds([probabilities], [labels], scales=[0.5, 1.0])


def test_binary_maps_tune_the_foreground_threshold_only():
    labels, foreground = _disks_with_distractors()
    probabilities = np.stack([1.0 - foreground, foreground]).astype(np.float32)
    initial = PostprocessConfig(marker_threshold=0.45, min_marker_size=7)
    result = search_thresholds([probabilities], [labels], initial=initial)
    assert result.config.foreground_threshold == pytest.approx(0.6)
    assert (result.config.marker_threshold, result.config.min_marker_size) == (0.45, 7)
    assert all((t.config.marker_threshold, t.config.min_marker_size) == (0.45, 7) for t in result.trials)
    assert result.score == 1.0


@pytest.fixture(scope="module")
def blurred_fixture_maps(dsb_samples):
    """Noisy blurred three-class maps of the three small fixture images, and their labels."""
    rng = np.random.default_rng(0)
    maps, truths = [], []
    for key in ("00071198", "0280fa8f", "00ae65c1"):
        labels = dsb_samples[key].labels
        boundary = find_boundaries(labels, mode="inner")
        classes = np.where(boundary, 2, np.where(labels > 0, 1, 0))
        onehot = np.stack([ndi.gaussian_filter((classes == k).astype(np.float32), 1.5) for k in range(3)])
        noisy = onehot + rng.uniform(0, 0.4, onehot.shape).astype(np.float32)
        maps.append((noisy / noisy.sum(axis=0, keepdims=True)).astype(np.float32))
        truths.append(labels)
    return maps, truths


def test_scores_are_the_dsb_score_of_the_full_pipeline_and_never_below_the_start(blurred_fixture_maps):
    maps, truths = blurred_fixture_maps
    initial = PostprocessConfig(foreground_threshold=0.3, marker_threshold=0.8, min_size=30)
    result = search_thresholds(maps, truths, initial=initial, grid=SMALL_GRID)
    # every trial, including the min_size shortcut, scores what the real pipeline gives
    for trial in result.trials:
        expected = np.mean([dsb_score(t, instances_from_probabilities(p, trial.config)) for p, t in zip(maps, truths)])
        assert trial.score == pytest.approx(expected, abs=1e-12)
    assert result.score == max(t.score for t in result.trials)
    assert result.score > result.initial_score
    assert result.initial_score == next(t.score for t in result.trials if t.config == initial)
    assert result.n_images == 3
    assert {t.config.min_size for t in result.trials} == {0, 30, 80}
    assert {t.config.marker_threshold for t in result.trials} >= {0.4, 0.8}


def test_keeps_the_initial_settings_when_nothing_is_better(blurred_fixture_maps):
    maps, truths = blurred_fixture_maps
    found = search_thresholds(maps, truths, grid=SMALL_GRID)
    again = search_thresholds(maps, truths, initial=found.config, grid=SMALL_GRID)
    assert again.config == found.config and again.score == again.initial_score == found.score


def test_bad_grid_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="foreground_threshold"):
        TuningGrid(foreground_threshold=(0.5, 1.2))
    with pytest.raises(ValueError, match="min_size holds no values"):
        TuningGrid(min_size=())
    with pytest.raises(ValueError, match="no images"):
        search_thresholds([], [])
    labels, probabilities = _touching_pairs()
    with pytest.raises(ValueError, match="do not fit"):
        search_thresholds([probabilities], [labels[:10]])


# ------------------------------------------------------------------ model folders


def _fixture_maps(image_labels: np.ndarray) -> np.ndarray:
    """Probabilities from a fixture's GT: nuclei at p(foreground) 0.62, 12x12 distractor squares at 0.58."""
    boundary = find_boundaries(image_labels, mode="inner")
    nuclei = image_labels > 0
    interior = np.where(nuclei & ~boundary, 0.62, 0.0)
    boundary_p = np.where(boundary, 0.62, 0.0)
    rows, cols = np.indices(image_labels.shape)
    squares = ((rows % 32) < 12) & ((cols % 32) < 12)
    far = ndi.distance_transform_edt(~nuclei) > 3
    square_ids, n = ndi.label(squares)
    whole = np.asarray(ndi.minimum(far, square_ids, index=np.arange(1, n + 1)), dtype=bool)
    distractors = np.concatenate([[False], whole])[square_ids]
    assert distractors.sum() >= 144
    interior[distractors] = 0.58
    return _three_class(interior, boundary_p)


@pytest.fixture
def fake_probabilities(monkeypatch, dsb_samples):
    """Make every NetworkModel return :func:`_fixture_maps` of the fixture image it is given.

    Returns the list of fixture names the network was asked about, in call order.
    """
    by_image = {zlib.crc32(s.image.tobytes()): s for s in dsb_samples.values()}
    calls = []

    def probabilities(self, image, scale, run):
        sample = by_image[zlib.crc32(np.ascontiguousarray(image).tobytes())]
        calls.append(sample.name)
        return _fixture_maps(sample.labels)

    # the network pass of every segment call and of the public probabilities()
    monkeypatch.setattr(NetworkModel, "_checked_probabilities", probabilities)
    return calls


def _tiny_model(path: Path, *, split: dict | None = None) -> Path:
    import torch

    from nucseg.models.networks import build_model

    torch.manual_seed(0)
    config = ModelConfig(
        "unet",
        dict(TINY_UNET),
        split=split or {},
        validation={"dsb_score": 0.25, "epoch": 3},
        training={"epochs": 3},
        name="tiny",
    )
    return save_model(build_model("unet", **TINY_UNET), config, path)


def _names(dsb_samples, *keys) -> list[str]:
    return [dsb_samples[k].name for k in keys]


def test_tune_postprocess_goes_through_segment(tmp_path, dsb_samples, fake_probabilities):
    model = load_model(_tiny_model(tmp_path / "model"))
    samples = [dsb_samples["00071198"], dsb_samples["0280fa8f"]]
    result = tune_postprocess(model, samples, grid=SMALL_GRID)
    segmented = [model.segment(s.image).labels for s in samples]
    assert result.initial_score == pytest.approx(np.mean([dsb_score(s.labels, p) for s, p in zip(samples, segmented)]))
    assert result.config.foreground_threshold == pytest.approx(0.6)
    assert result.score > result.initial_score
    assert fake_probabilities[:2] == [s.name for s in samples]
    assert model.postprocess_config == PostprocessConfig()  # the loaded model is not changed


def test_tune_postprocess_by_kind_gives_each_kind_with_enough_images_its_own_settings(
    tmp_path, dsb_samples, fake_probabilities, monkeypatch
):
    monkeypatch.setattr("nucseg.evaluation.tuning.MIN_KIND_IMAGES", 2)
    path = _tiny_model(tmp_path / "model")
    model = load_model(path)
    fluorescence = [dsb_samples["00071198"], dsb_samples["0280fa8f"]]
    histology = dsb_samples["00ae65c1"]
    result = tune_postprocess(model, [*fluorescence, histology], grid=SMALL_GRID, by_kind=True)
    assert set(result.by_kind) == {"fluorescence"}  # one histology image is too few for settings of its own
    own = result.by_kind["fluorescence"]
    assert own.n_images == 2
    assert own.score == pytest.approx(tune_postprocess(model, fluorescence, grid=SMALL_GRID).score)
    expected = np.mean(
        [dsb_score(s.labels, instances_from_probabilities(_fixture_maps(s.labels), own.config)) for s in fluorescence]
        + [dsb_score(histology.labels, instances_from_probabilities(_fixture_maps(histology.labels), result.config))]
    )
    assert result.final_score == pytest.approx(expected)

    save_tuning(path, result, data="fixtures")
    tuned = load_model(path)
    assert tuned.postprocess_for(fluorescence[0].image) == own.config
    assert tuned.postprocess_for(histology.image) == tuned.postprocess_config == result.config
    assert read_model_config(path)[0].validation["tuning"]["by_kind"] == {
        "fluorescence": {"n_images": 2, "dsb_score": own.score}
    }
    kind_config = dataclasses.replace(own.config, min_size=0)  # an explicit override applies on top of the kind's
    labels = tuned.segment(fluorescence[0].image, postprocess={"min_size": 0}).labels
    assert np.array_equal(labels, instances_from_probabilities(_fixture_maps(fluorescence[0].labels), kind_config))

    one_setting = tune_postprocess(tuned, fluorescence, grid=SMALL_GRID)  # a tuning without kinds clears them
    save_tuning(path, one_setting, data="fixtures")
    assert load_model(path).postprocess_by_kind == {}


def test_tune_postprocess_rejects_the_classical_model(dsb_samples):
    with pytest.raises(ModelError, match="no network"):
        tune_postprocess("classical", [dsb_samples["00071198"]])


def test_save_tuning_is_atomic_and_keeps_the_weights_checksum(tmp_path, monkeypatch):
    path = _tiny_model(tmp_path / "model", split={"train": ["a"], "validation": ["b"]})
    before_config, sha = read_model_config(path)
    old_text = (path / "config.json").read_text()
    result = TuningResult(
        PostprocessConfig(foreground_threshold=0.4, min_size=20), 0.7, PostprocessConfig(), 0.5, 3, ()
    )

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("nucseg.models.folder.json.dumps", fail)  # fails mid-write of config.json
    with pytest.raises(OSError):
        save_tuning(path, result, data="somewhere")
    assert (path / "config.json").read_text() == old_text
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "network.onnx", "weights.safetensors"]
    monkeypatch.undo()

    save_tuning(path, result, data="somewhere", expected_weights_sha256=sha)
    after_config, after_sha = read_model_config(path)
    assert after_sha == sha
    assert after_config.postprocess == result.config.to_dict()
    assert after_config.validation["tuning"] == {
        "dsb_score_before": 0.5,
        "dsb_score_after": 0.7,
        "n_images": 3,
        "data": "somewhere",
        "postprocess_before": PostprocessConfig().to_dict(),
    }
    assert after_config.validation["dsb_score"] == 0.25
    untouched = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("postprocess", "validation")]
    assert all(getattr(after_config, name) == getattr(before_config, name) for name in untouched)
    assert load_model_folder(path).config.postprocess["foreground_threshold"] == 0.4
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "network.onnx", "weights.safetensors"]


def test_save_tuning_refuses_a_folder_replaced_while_tuning(tmp_path):
    path = _tiny_model(tmp_path / "model")
    old_text = (path / "config.json").read_text()
    result = TuningResult(PostprocessConfig(foreground_threshold=0.4), 0.7, PostprocessConfig(), 0.5, 3, ())
    with pytest.raises(ModelError, match="replaced while tuning"):
        save_tuning(path, result, data="x", expected_weights_sha256="0" * 64)
    (path / "weights.safetensors").write_bytes(b"changed")
    with pytest.raises(ModelError, match="not matching the checksum"):
        save_tuning(path, result, data="x")
    assert (path / "config.json").read_text() == old_text


# ----------------------------------------------------------------------------- CLI


def test_tune_cli_on_the_stored_validation_split(tmp_path, dsb_samples, fake_probabilities, capsys, monkeypatch):
    monkeypatch.setenv("NUCSEG_CACHE_DIR", str(tmp_path / "cache"))
    validation = _names(dsb_samples, "0280fa8f", "00071198")
    path = _tiny_model(
        tmp_path / "model", split={"train": _names(dsb_samples, "00ae65c1", "091944f1"), "validation": validation}
    )
    _, sha = read_model_config(path)
    code = main(["tune", "--model", str(path), "--data", str(DSB_DIR), "--split-from-model"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert fake_probabilities == validation  # the held-out images only, once each
    config, new_sha = read_model_config(path)
    assert new_sha == sha
    assert config.postprocess["foreground_threshold"] == pytest.approx(0.6)
    record = config.validation["tuning"]
    assert record["n_images"] == 2 and record["dsb_score_after"] > record["dsb_score_before"]
    assert record["data"].startswith(f"{DSB_DIR.name} (") and "validation split" in record["data"]  # a name, not a path
    assert f"{record['dsb_score_before']:.4f} -> {record['dsb_score_after']:.4f}" in captured.out
    assert "foreground_threshold: 0.5 -> 0.6" in captured.out
    assert config.postprocess["marker_threshold"] == 0.5  # any value below 0.62 splits as well: kept
    assert load_model(path).postprocess_config.foreground_threshold == pytest.approx(0.6)


def test_tune_cli_dry_run_writes_nothing_and_warns_about_training_images(
    tmp_path, dsb_samples, fake_probabilities, capsys, monkeypatch
):
    monkeypatch.setenv("NUCSEG_CACHE_DIR", str(tmp_path / "cache"))
    images = tmp_path / "val"
    for name in _names(dsb_samples, "00071198", "0280fa8f"):
        shutil.copytree(DSB_DIR / name, images / name)
    path = _tiny_model(
        tmp_path / "model",
        split={"train": _names(dsb_samples, "00071198"), "validation": _names(dsb_samples, "0280fa8f")},
    )
    old_text = (path / "config.json").read_text()
    code = main(["tune", "--model", str(path), "--data", str(images), "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "1 of the 2 tuning images are training images of this model" in captured.err
    assert (path / "config.json").read_text() == old_text
    assert "not written (--dry-run)" in captured.out


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda tmp, names: ["--model", str(tmp / "absent"), "--data", str(DSB_DIR)], "no such model folder"),
        (lambda tmp, names: ["--model", "classical", "--data", str(DSB_DIR)], "no network"),
        (
            lambda tmp, names: [
                "--model",
                str(_tiny_model(tmp / "m", split={"train": names, "validation": ["nope", "x"]})),
                "--data",
                str(DSB_DIR),
                "--split-from-model",
            ],
            "2 of the 2 validation images stored in",
        ),
        (
            lambda tmp, names: ["--model", str(_tiny_model(tmp / "m")), "--data", str(DSB_DIR), "--split-from-model"],
            "stores no validation split",
        ),
        (
            lambda tmp, names: ["--model", str(_tiny_model(tmp / "m")), "--images", str(DSB_DIR)],
            "--images and --masks go together",
        ),
    ],
)
def test_tune_cli_errors_are_one_line_with_exit_code_2(tmp_path, dsb_samples, capsys, make_args, message):
    code = main(["tune", *make_args(tmp_path, _names(dsb_samples, "00071198"))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("nucseg: error: ") and message in err and err.count("\n") == 1


def test_tune_cli_leaves_a_config_it_cannot_improve_loadable(
    tmp_path, dsb_samples, fake_probabilities, capsys, monkeypatch
):
    monkeypatch.setenv("NUCSEG_CACHE_DIR", str(tmp_path / "cache"))
    path = _tiny_model(tmp_path / "model", split={"train": [], "validation": _names(dsb_samples, "00071198")})
    assert main(["tune", "--model", str(path), "--data", str(DSB_DIR), "--split-from-model"]) == 0
    first = json.loads((path / "config.json").read_text())
    assert main(["tune", "--model", str(path), "--data", str(DSB_DIR), "--split-from-model"]) == 0
    second = json.loads((path / "config.json").read_text())
    assert second["postprocess"] == first["postprocess"]
    assert second["validation"]["tuning"]["dsb_score_before"] == first["validation"]["tuning"]["dsb_score_after"]
    assert second["weights_sha256"] == first["weights_sha256"]
    load_model_folder(path)


def test_min_size_is_tuned_even_when_the_thresholds_are_off_the_grid():
    labels, foreground = _disks_with_distractors()
    foreground[foreground == 0.58] = 0.02  # no distractors: only the specks need removing
    probabilities = _three_class(foreground * 0.9, foreground * 0.1)
    initial = PostprocessConfig(foreground_threshold=0.45, marker_threshold=0.45)
    grid = TuningGrid(foreground_threshold=(0.9,), marker_threshold=(0.9,), min_marker_size=(4,), refine_rounds=0)
    result = search_thresholds([probabilities], [labels], initial=initial, grid=grid)
    assert result.changed == {"min_size": (10, 30)} and result.score == 1.0


def test_tuning_on_a_few_images_warns_with_their_numbers(tmp_path, dsb_samples, fake_probabilities):
    model = load_model(_tiny_model(tmp_path / "model"))
    samples = [dsb_samples["00071198"], dsb_samples["0280fa8f"]]
    nuclei = sum(int(np.count_nonzero(np.unique(s.labels))) for s in samples)
    with pytest.warns(
        SmallTuningSetWarning,
        match=f"tuned on 2 image\\(s\\) holding {nuclei} annotated nuclei \\(fewer than {MIN_TUNING_IMAGES} images",
    ):
        tune_postprocess(model, samples, grid=SMALL_GRID)


def test_enough_images_and_nuclei_need_no_warning():
    assert small_tuning_set(MIN_TUNING_IMAGES, MIN_TUNING_NUCLEI) is None
    assert "may not generalize" in small_tuning_set(MIN_TUNING_IMAGES - 1, 10 * MIN_TUNING_NUCLEI)
    assert "may not generalize" in small_tuning_set(10 * MIN_TUNING_IMAGES, MIN_TUNING_NUCLEI - 1)

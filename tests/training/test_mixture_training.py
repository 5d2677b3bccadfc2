"""Training on several datasets at once, and the distance-map target: tiny runs on the DSB2018 fixtures."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nucseg.evaluation.report import load_validation_samples
from nucseg.models.folder import load_model_folder
from nucseg.training.config import TrainConfig
from nucseg.training.data import CropDataset, prepare_samples, sampling_weights
from nucseg.training.loop import train
from nucseg.training.loss import segmentation_loss

FIXTURES = Path(__file__).parents[1] / "data" / "dsb2018"
TINY = TrainConfig(
    crop_size=64,
    batch_size=4,
    samples_per_epoch=8,
    num_workers=0,
    epochs=1,
    lr=0.01,
    model_options={"base_channels": 4, "depth": 2},
    val_fraction=0.25,
    snapshot_images=1,
    device="cpu",
    seed=0,
)

pytestmark = pytest.mark.usefixtures("training_environment")


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """The four fixtures as two datasets: the DSB2018 layout, and the same images in the paired layout."""
    from nucseg.datasets.layouts import load_dataset
    from nucseg.io.images import write_labels, write_png

    root = tmp_path_factory.mktemp("mixture")
    shutil.copytree(FIXTURES, root / "dsb")
    for sample in load_dataset(FIXTURES, cache_dir=False):
        (root / "paired" / "images").mkdir(parents=True, exist_ok=True)
        (root / "paired" / "masks").mkdir(exist_ok=True)
        write_png(root / "paired" / "images" / f"{sample.name[:8]}.png", sample.image)
        write_labels(root / "paired" / "masks" / f"{sample.name[:8]}.tif", sample.labels)
    return [{"path": str(root / "dsb"), "name": "dsb", "weight": 3.0}, {"path": str(root / "paired")}]


@pytest.fixture(scope="module")
def mixture_run(two_datasets, tmp_path_factory):
    config = TINY.updated(datasets=two_datasets, test_fraction=0.25, target="three_class_distance")
    return train(config, tmp_path_factory.mktemp("runs") / "mix", progress=False, log=lambda message: None)


def test_each_dataset_is_split_into_train_validation_and_test(mixture_run):
    split = json.loads((mixture_run.run_dir / "split.json").read_text())
    assert set(split["datasets"]) == {"dsb", "paired"}
    for dataset in ("dsb", "paired"):
        sides = [[n for n in split[part] if n.startswith(f"{dataset}/")] for part in ("train", "validation", "test")]
        assert all(len(side) >= 1 for side in sides)  # 4 images: 3 test images would leave none to train on
        assert sum(map(len, sides)) == 4
    assert not set(split["test"]) & set(split["train"] + split["validation"])
    stored = load_model_folder(mixture_run.model_dir).config.split
    assert stored["test"] == split["test"] and stored["validation"] == split["validation"]


def test_a_wider_network_trains_on_the_mixture_models_split(mixture_run, two_datasets, tmp_path):
    # Another seed would split otherwise; split_from keeps the mixture's validation and test images.
    config = TINY.updated(
        datasets=two_datasets,
        test_fraction=0.25,
        seed=7,
        split_from=str(mixture_run.model_dir),
        model_options={"base_channels": 8, "depth": 2},
    )
    wider = train(config, tmp_path / "wider", progress=False, log=lambda message: None)
    first = json.loads((mixture_run.run_dir / "split.json").read_text())
    second = json.loads((wider.run_dir / "split.json").read_text())
    assert all(sorted(second[side]) == sorted(first[side]) for side in ("train", "validation", "test"))
    assert set(second["datasets"]) == {"dsb", "paired"}
    redrawn = train(
        TINY.updated(datasets=two_datasets, test_fraction=0.25, seed=7),
        tmp_path / "redrawn",
        progress=False,
        log=lambda message: None,
    )
    assert json.loads((redrawn.run_dir / "split.json").read_text())["validation"] != first["validation"]


def test_split_from_draws_a_split_for_a_dataset_it_does_not_hold(mixture_run, two_datasets, tmp_path):
    # A third dataset (the paired images again, under another name) joins a run that keeps the mixture's split.
    third = {"path": two_datasets[1]["path"], "name": "added"}
    config = TINY.updated(datasets=[*two_datasets, third], test_fraction=0.25, split_from=str(mixture_run.model_dir))
    messages: list[str] = []
    run = train(config, tmp_path / "three", progress=False, log=messages.append)
    first = json.loads((mixture_run.run_dir / "split.json").read_text())
    second = json.loads((run.run_dir / "split.json").read_text())
    for side in ("train", "validation", "test"):
        kept = [n for n in second[side] if not n.startswith("added/")]
        assert sorted(kept) == sorted(first[side])
    added = [[n for n in second[side] if n.startswith("added/")] for side in ("train", "validation", "test")]
    assert all(len(names) >= 1 for names in added) and sum(map(len, added)) == 4
    assert any("added" in m and "split by the seed" in m for m in messages)


def test_validation_scores_each_dataset_and_monitors_their_mean(mixture_run):
    with open(mixture_run.run_dir / "metrics.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    per_dataset = [float(row[f"val_dsb_score_{d}"]) for d in ("dsb", "paired")]
    assert float(row["val_dsb_score"]) == pytest.approx(np.mean(per_dataset))


def test_stored_test_split_loads_from_the_models_own_datasets(mixture_run):
    samples = load_validation_samples(mixture_run.model_dir, part="test")
    assert [s.name for s in samples] == load_model_folder(mixture_run.model_dir).config.split["test"]
    assert all(s.labels.max() > 0 for s in samples)


def test_distance_model_outputs_four_maps(mixture_run, dsb_samples):
    from nucseg.inference.model import load_model

    model = load_model(mixture_run.model_dir)
    result = model.segment(dsb_samples["091944f1"].image, scale=1.0)
    assert result.probabilities.shape[0] == 4
    assert np.allclose(result.probabilities[:3].sum(axis=0), 1.0, atol=1e-4)
    assert result.probabilities[3].min() >= 0 and result.probabilities[3].max() <= 1


def test_crops_of_a_distance_target_carry_the_distance_map(dsb_samples):
    config = TINY.updated(target="three_class_distance")
    dataset = CropDataset(prepare_samples(list(dsb_samples.values()), config), config)
    image, target, _, distance = dataset[(0, 1)]
    assert distance.shape == target.shape and distance.dtype == torch.float32
    assert torch.all((distance > 0) == (target > 0))
    assert CropDataset(prepare_samples(list(dsb_samples.values()), TINY), TINY)[(0, 1)][3].numel() == 0


def test_distance_loss_needs_the_map_and_falls_when_it_is_predicted():
    config = TINY.updated(target="three_class_distance")
    target = torch.zeros(1, 8, 8, dtype=torch.int64)
    distance = torch.rand(1, 8, 8)
    outputs = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="needs a distance map"):
        segmentation_loss(outputs, target, config)
    wrong = segmentation_loss(outputs, target, config, distance=distance)
    outputs[:, 3] = torch.logit(distance.clamp(1e-4, 1 - 1e-4))
    assert segmentation_loss(outputs, target, config, distance=distance) < wrong


def test_dataset_weights_share_the_draws_whatever_the_dataset_sizes(dsb_samples):
    prepared = prepare_samples(list(dsb_samples.values()), TINY)
    for index, sample in enumerate(prepared):
        sample.name = f"{'small' if index == 0 else 'large'}/{sample.name}"
    weights = sampling_weights(prepared, {}, {"small": 1.0, "large": 1.0})
    assert weights[0] == pytest.approx(weights[1:].sum())  # one image drawn as often as the other three together


def test_fine_tuning_a_three_class_model_for_the_distance_target_keeps_its_classes(tmp_path):
    first = train(TINY, tmp_path / "three", data=FIXTURES, progress=False, log=lambda message: None)
    tuned = train(
        TINY.updated(
            init_from=str(first.model_dir),
            target="three_class_distance",
            epochs=1,
            lr=1e-9,
            warmup_epochs=0,
            lr_schedule="cosine",
        ),
        tmp_path / "distance",
        data=FIXTURES,
        progress=False,
        log=lambda message: None,
    )
    before = load_model_folder(first.model_dir).network.state_dict()["head.weight"]
    after = load_model_folder(tuned.model_dir).network.state_dict()["head.weight"]
    assert after.shape[0] == 4 and before.shape[0] == 3
    assert torch.allclose(after[:3], before, atol=1e-4)  # a vanishing learning rate: the trained rows were copied


def test_tune_reads_a_mixture_models_validation_split_from_its_datasets(mixture_run, capsys):
    from nucseg.cli import main

    assert main(["tune", "--model", str(mixture_run.model_dir), "--split-from-model", "--dry-run"]) == 0
    assert "images of 2 datasets" in capsys.readouterr().out
    assert main(["tune", "--model", str(mixture_run.model_dir)]) != 0  # neither data nor the stored split


def test_split_from_keeps_the_part_of_the_split_for_the_datasets_it_trains_on(mixture_run, two_datasets, tmp_path):
    # A run on one of the mixture's two datasets keeps that dataset's part of the split, and says what it left out.
    config = TINY.updated(datasets=[two_datasets[0]], split_from=str(mixture_run.model_dir))
    messages: list[str] = []
    run = train(config, tmp_path / "one", progress=False, log=messages.append)
    first = json.loads((mixture_run.run_dir / "split.json").read_text())
    second = json.loads((run.run_dir / "split.json").read_text())
    for side in ("train", "validation", "test"):
        assert second[side] == [n for n in first[side] if n.startswith("dsb/")]
    left_out = [m for m in messages if "left out" in m]
    assert len(left_out) == 1 and "paired" in left_out[0]

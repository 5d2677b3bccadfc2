"""Tests of nucseg.training.loop, data, loss and validation: tiny runs on the DSB2018 fixtures, artefacts, resuming."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from nucseg.training.augment import NO_AUGMENTATION
from nucseg.training.config import TrainConfig
from nucseg.datasets.kinds import image_kind
from nucseg.errors import InputError
from nucseg.models.folder import load_model_folder
from nucseg.models.networks import build_model
from nucseg.training.data import CropDataset, EpochSampler, prepare_samples, sampling_weights, split_dataset
from nucseg.training.loop import make_scheduler, train
from nucseg.training.loss import segmentation_loss

FIXTURES = Path(__file__).parents[1] / "data" / "dsb2018"
METRICS_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "val_pixel_iou",
    "val_pixel_accuracy",
    "val_dsb_score",
    "val_ap50",
    "lr",
    "seconds",
]
SCALAR_TAGS = {
    "train/loss",
    "val/loss",
    "val/pixel_iou",
    "val/pixel_accuracy",
    "val/dsb_score",
    "val/ap50",
    "misc/lr",
    "misc/seconds",
}
#: A few seconds per epoch on one CPU core: a 2-level U-Net with 4 base channels, 64-pixel crops.
TINY = TrainConfig(
    crop_size=64,
    batch_size=4,
    samples_per_epoch=16,
    num_workers=0,
    epochs=2,
    lr=0.01,
    model_options={"base_channels": 4, "depth": 2},
    val_fraction=0.5,
    snapshot_images=2,
    device="cpu",
    seed=0,
)


pytestmark = pytest.mark.usefixtures("training_environment")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted two-epoch run; shared by the tests that inspect its artefacts."""
    run_dir = tmp_path_factory.mktemp("runs") / "full"
    messages: list[str] = []
    result = train(TINY, run_dir, data=FIXTURES, progress=False, log=messages.append)
    return result, messages


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def averaged_weights(checkpoint: dict) -> dict:
    """The network weights inside a checkpoint's AveragedModel state (keys ``module.<name>``)."""
    return {
        name.removeprefix("module."): tensor for name, tensor in checkpoint["ema"].items() if name.startswith("module.")
    }


def tiny_network(state: dict | None = None) -> torch.nn.Module:
    """The run's network, freshly initialised exactly as ``train`` does, or with ``state`` loaded."""
    torch.manual_seed(TINY.seed)
    network = build_model(TINY.model, out_channels=3, **TINY.model_options)
    if state is not None:
        network.load_state_dict(state)
    return network


def test_run_writes_every_artefact(full_run):
    result, messages = full_run
    run_dir = result.run_dir
    assert result.epochs_run == 2 and result.model_dir == run_dir / "model"
    assert [message.split(":")[0] for message in messages] == ["epoch 1", "epoch 2"]

    assert TrainConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())) == TINY

    split = json.loads((run_dir / "split.json").read_text())
    names = sorted(path.name for path in FIXTURES.iterdir())
    assert sorted(split["train"] + split["validation"]) == names
    assert len(split["train"]) == len(split["validation"]) == 2
    assert split["source"]["data"] == str(FIXTURES.resolve())

    rows = read_metrics(run_dir)
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert list(rows[0]) == METRICS_COLUMNS
    assert all(np.isfinite(float(row[column])) for row in rows for column in METRICS_COLUMNS)
    assert all(0.0 <= float(row["val_dsb_score"]) <= 1.0 for row in rows)
    assert [float(row["train_loss"]) for row in rows] == pytest.approx([r["train_loss"] for r in result.history])

    for name in ("curves.png", "snapshots/epoch_001.png", "snapshots/epoch_002.png"):
        with Image.open(run_dir / name) as image:
            assert image.mode in ("RGB", "RGBA") and image.width > 100 and image.height > 100, name
    # The snapshot shows input | truth | prediction for each of the two validation images.
    with Image.open(run_dir / "snapshots" / "epoch_001.png") as image:
        assert image.width >= 3 * 256 and image.height >= 2 * 256

    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert sorted(p.name for p in (run_dir / "model").iterdir()) == [
        "config.json",
        "network.onnx",
        "weights.safetensors",
    ]
    assert not list(run_dir.rglob(".*.tmp*")), "temporary files left behind"


def test_training_reduces_the_loss(full_run, dsb_samples):
    """The loss on a fixed batch of crops is lower after training than at initialisation."""
    result, _ = full_run
    config = TINY.updated(augment=dataclasses.asdict(NO_AUGMENTATION))
    split = json.loads((result.run_dir / "split.json").read_text())
    samples = [sample for sample in dsb_samples.values() if sample.name in split["train"]]
    dataset = CropDataset(prepare_samples(samples, config), config)
    images, targets, _, _ = map(torch.stack, zip(*(dataset[(0, index)] for index in range(8))))

    def batch_loss(network):
        network = copy.deepcopy(network).train()  # batch statistics, as during training
        with torch.no_grad():
            return float(segmentation_loss(network(images), targets, config))

    before = batch_loss(tiny_network())
    after = batch_loss(tiny_network(load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["model"]))
    assert after < 0.95 * before, (before, after)
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]


def test_tensorboard_events(full_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, _ = full_run
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert set(tags["scalars"]) == SCALAR_TAGS
    for tag in SCALAR_TAGS:
        assert [event.step for event in events.Scalars(tag)] == [1, 2], tag
    losses = [event.value for event in events.Scalars("train/loss")]
    assert losses == pytest.approx([row["train_loss"] for row in result.history], rel=1e-6)
    assert tags["images"] == ["val/snapshots"]
    snapshots = events.Images("val/snapshots")
    assert [event.step for event in snapshots] == [1, 2]
    with Image.open(result.run_dir / "snapshots" / "epoch_002.png") as image:
        assert (snapshots[1].width, snapshots[1].height) == image.size


def test_checkpoints_load_with_weights_only(full_run):
    result, _ = full_run
    last = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    best = load_checkpoint(result.run_dir / "checkpoints" / "best.pt")
    for key in (
        "version",
        "epoch",
        "model",
        "optimizer",
        "scheduler",
        "torch_rng",
        "history",
        "best_metric",
        "best_epoch",
        "stale_epochs",
    ):
        assert key in last, key
    assert last["epoch"] == 2 and len(last["history"]) == 2
    assert best["epoch"] == last["best_epoch"] == result.best_epoch
    assert last["best_metric"] == pytest.approx(result.best_metric)
    tiny_network(last["model"])  # the weights fit the configured network


def test_model_folder_holds_the_best_network(full_run):
    result, _ = full_run
    loaded = load_model_folder(result.model_dir)
    best = tiny_network(load_checkpoint(result.run_dir / "checkpoints" / "best.pt")["model"]).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), best(x))
    config = loaded.config
    assert (config.architecture, config.architecture_options, config.target) == (
        "unet",
        TINY.model_options,
        "three_class",
    )
    assert config.out_channels == 3 and config.resize_to is None
    assert TrainConfig.from_dict(config.training) == TINY
    assert config.validation["epoch"] == result.best_epoch
    assert config.validation["dsb_score"] == pytest.approx(result.best_metric)
    split = json.loads((result.run_dir / "split.json").read_text())
    assert config.split == {"train": split["train"], "validation": split["validation"], "test": []}
    assert config.postprocess  # the thresholds the validation scores were computed with


@pytest.mark.slow
def test_killed_and_resumed_run_matches_an_uninterrupted_one(full_run, tmp_path):
    result, _ = full_run
    run_dir = tmp_path / "killed"
    stopped = train(TINY, run_dir, data=FIXTURES, progress=False, log=lambda message: None, stop_after_epochs=1)
    assert stopped.epochs_run == 1
    assert [int(row["epoch"]) for row in read_metrics(run_dir)] == [1]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1

    messages: list[str] = []
    resumed = train(None, run_dir, resume=True, progress=False, log=messages.append)  # data from split.json
    assert messages[0] == f"resuming {run_dir} after epoch 1"
    assert resumed.epochs_run == 2

    expected = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    actual = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert actual["epoch"] == 2
    assert expected["model"].keys() == actual["model"].keys()
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(actual["model"][name], tensor, rtol=0, atol=1e-6, msg=name)
    for step, state in expected["optimizer"]["state"].items():
        torch.testing.assert_close(actual["optimizer"]["state"][step]["exp_avg"], state["exp_avg"], rtol=0, atol=1e-6)

    rows, reference = read_metrics(run_dir), read_metrics(result.run_dir)
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    for column in ("train_loss", "val_loss", "val_dsb_score", "lr"):
        assert [float(r[column]) for r in rows] == pytest.approx([float(r[column]) for r in reference], abs=1e-6)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2]


def test_resuming_a_finished_run_trains_no_more(full_run, tmp_path):
    result, _ = full_run
    run_dir = tmp_path / "copy"
    shutil.copytree(result.run_dir, run_dir)
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    again = train(None, run_dir, resume=True, progress=False, log=lambda message: None)
    assert again.epochs_run == 2 and (run_dir / "checkpoints" / "last.pt").read_bytes() == before
    assert len(read_metrics(run_dir)) == 2


def test_cosine_schedule_decays_to_min_lr_and_stays():
    config = TINY.updated(lr_schedule="cosine", lr=0.01, min_lr=0.001, epochs=4)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = make_scheduler(optimizer, config)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.01) and rates[2] == pytest.approx(0.0055)  # halfway: the mean
    assert all(a > b for a, b in zip(rates[:4], rates[1:5]))
    assert rates[4] == pytest.approx(0.001) and rates[5] == pytest.approx(0.001)
    plateau = make_scheduler(optimizer, TINY)
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)


@pytest.mark.slow
def test_ema_run_saves_the_averaged_weights_and_resumes_exactly(tmp_path):
    config = dataclasses.replace(TINY, ema_decay=0.9, lr_schedule="cosine", touching_weight=2.0)
    whole = train(config, tmp_path / "whole", data=FIXTURES, progress=False, log=lambda message: None)
    last = load_checkpoint(whole.run_dir / "checkpoints" / "last.pt")
    averaged = averaged_weights(last)
    assert averaged.keys() == last["model"].keys()
    assert any(not torch.equal(averaged[name], last["model"][name]) for name in averaged)
    best = load_checkpoint(whole.run_dir / "checkpoints" / "best.pt")
    saved = load_model_folder(whole.model_dir).network.state_dict()
    best_averaged = averaged_weights(best)
    assert all(torch.equal(saved[name], best_averaged[name]) for name in saved)  # the model is the average

    killed = tmp_path / "killed"
    train(config, killed, data=FIXTURES, progress=False, log=lambda message: None, stop_after_epochs=1)
    train(None, killed, resume=True, progress=False, log=lambda message: None)
    resumed = load_checkpoint(killed / "checkpoints" / "last.pt")
    for name, tensor in last["ema"].items():
        torch.testing.assert_close(resumed["ema"][name], tensor, rtol=0, atol=1e-6, msg=name)
    assert [row["lr"] for row in read_metrics(killed)] == [row["lr"] for row in read_metrics(whole.run_dir)]


def test_resume_needs_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    for run_dir in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(InputError, match="no checkpoint to resume from") as caught:
            train(None, run_dir, resume=True, progress=False)
        assert caught.value.path == run_dir


def test_a_new_run_does_not_overwrite_an_old_one(full_run, tmp_path):
    result, _ = full_run
    run_dir = tmp_path / "old"
    shutil.copytree(result.run_dir, run_dir)
    config_before = (run_dir / "config.yaml").read_text()
    with pytest.raises(InputError, match="holds a run already; use --resume") as caught:
        train(TINY.updated(lr=0.5), run_dir, data=FIXTURES, progress=False)
    assert caught.value.path == run_dir
    assert (run_dir / "config.yaml").read_text() == config_before


def test_corrupt_checkpoint(full_run, tmp_path):
    result, _ = full_run
    run_dir = tmp_path / "corrupt"
    shutil.copytree(result.run_dir, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(InputError, match="corrupt checkpoint") as caught:
        train(None, run_dir, resume=True, progress=False)
    assert caught.value.path == last and "\n" not in str(caught.value)


def test_resized_binary_run_and_time_limit(tmp_path):
    """The seed notebook's mode: whole images resized, two classes; and a time limit that ends the run."""
    config = TINY.updated(
        resize_to=64,
        target="binary",
        class_weights=None,
        loss="ce",
        epochs=3,
        time_limit_minutes=1e-6,
        snapshot_images=1,
    )
    messages: list[str] = []
    result = train(config, tmp_path / "resized", data=FIXTURES, progress=False, log=messages.append)
    assert result.epochs_run == 1 and "time limit" in messages[-1]
    with Image.open(tmp_path / "resized" / "snapshots" / "epoch_001.png") as image:
        assert image.height >= 64 and image.width >= 3 * 64  # drawn on the 64x64 network grid
    loaded = load_model_folder(result.model_dir)
    assert loaded.config.resize_to == 64 and loaded.config.out_channels == 2 and loaded.config.target == "binary"


def test_a_single_image_cannot_be_split(tmp_path):
    single = tmp_path / "one"
    name = sorted(p.name for p in FIXTURES.iterdir())[0]
    shutil.copytree(FIXTURES / name, single / name)
    with pytest.raises(InputError, match="at least two images"):
        train(TINY, tmp_path / "run", data=single, progress=False)
    assert not (tmp_path / "run").exists()


def sides(split):
    return split.train, split.validation


def test_split_dataset():
    names = [f"img{i:02d}" for i in range(20)]
    train_names, val_names = sides(split_dataset(names[::-1], val_fraction=0.25, seed=3))
    assert len(val_names) == 5 and sorted(train_names + val_names) == names
    assert train_names == sorted(train_names) and val_names == sorted(val_names)
    assert sides(split_dataset(names, val_fraction=0.25, seed=3)) == (train_names, val_names)
    assert sides(split_dataset(names, val_fraction=0.25, seed=4)) != (train_names, val_names)
    assert [len(side) for side in sides(split_dataset(["a", "b"], val_fraction=0.01, seed=0))] == [1, 1]
    assert [len(side) for side in sides(split_dataset(["a", "b"], val_fraction=0.99, seed=0))] == [1, 1]
    with pytest.raises(ValueError, match="at least two images"):
        split_dataset(["a"], val_fraction=0.5, seed=0)


def test_split_dataset_holds_out_a_test_side_of_at_least_three_images():
    names = [f"img{i:02d}" for i in range(13)]
    split = split_dataset(names, val_fraction=0.1, test_fraction=0.1, seed=0)
    assert len(split.test) == 3 and len(split.validation) == 1 and len(split.train) == 9
    assert sorted(split.train + split.validation + split.test) == names
    assert not set(split.test) & set(split.validation)
    # Adding a test side leaves the validation side of the same seed where it was without one... in order:
    # the test side takes the first names of the seeded order, so validation starts after it.
    larger = split_dataset([f"img{i:03d}" for i in range(100)], val_fraction=0.1, test_fraction=0.2, seed=1)
    assert [len(larger.train), len(larger.validation), len(larger.test)] == [70, 10, 20]


def test_split_dataset_keeps_the_initial_models_training_images_on_the_training_side():
    names = [f"img{i:02d}" for i in range(40)]
    seen = names[:34]
    split = split_dataset(names, val_fraction=0.1, test_fraction=0.1, seed=0, train_only=seen)
    assert set(split.validation + split.test) <= set(names[34:])
    assert len(split.test) == 3 and len(split.validation) == 3  # too few unseen images: shared, test half
    assert set(seen) <= set(split.train)
    with pytest.raises(ValueError, match="none is left"):
        split_dataset(names[:5], val_fraction=0.2, seed=0, train_only=names[:5])


def test_crop_dataset_items_are_reproducible(dsb_samples):
    dataset = CropDataset(prepare_samples(list(dsb_samples.values()), TINY), TINY)
    image, target, pixel_weights, _ = dataset[(3, 5)]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert target.shape == (64, 64) and target.dtype == torch.int64
    assert set(target.unique().tolist()) <= {0, 1, 2}
    assert pixel_weights.shape == (64, 64) and bool((pixel_weights == 1).all())  # touching_weight 0: all equal
    again_image, again_target, _, _ = dataset[(3, 5)]
    assert torch.equal(image, again_image) and torch.equal(target, again_target)
    assert not torch.equal(image, dataset[(4, 5)][0])  # the next epoch sees other crops
    sampler = EpochSampler(3)
    sampler.set_epoch(7)
    assert list(sampler) == [(7, 0), (7, 1), (7, 2)] and len(sampler) == 3


def test_crop_dataset_weights_touching_pixels(dsb_samples):
    config = TINY.updated(touching_weight=4.0, touching_gap=2, augment=dataclasses.asdict(NO_AUGMENTATION))
    dataset = CropDataset(prepare_samples(list(dsb_samples.values()), config), config)
    found_touching = False
    for index in range(16):
        image, target, pixel_weights, _ = dataset[(0, index)]
        assert set(pixel_weights.unique().tolist()) <= {1.0, 5.0}
        heavy = pixel_weights == 5.0
        found_touching |= bool(heavy.any())
        # Touching pixels lie on or next to nuclei, never deep inside the background.
        near_nuclei = torch.nn.functional.max_pool2d((target > 0).float()[None, None], 5, 1, 2)[0, 0] > 0
        assert bool(near_nuclei[heavy].all())
    assert found_touching  # the real fixtures hold touching nuclei


def test_sampling_weights_follow_the_image_kind(dsb_samples):
    prepared = prepare_samples(list(dsb_samples.values()), TINY)
    kinds = [image_kind(sample.raw) for sample in prepared]
    assert len(set(kinds)) >= 2  # the fixtures mix kinds
    weights = sampling_weights(prepared, {"histology": 3.0})
    assert all(weight == (3.0 if kind == "histology" else 1.0) for weight, kind in zip(weights, kinds))
    assert all(weight == 1.0 for weight in sampling_weights(prepared, {}))
    # A heavy kind is drawn (almost) every time; without weights every kind comes up.
    heavy_kind = kinds[0]
    rng = np.random.default_rng(0)
    weighted = CropDataset(prepared, TINY.updated(kind_weights={heavy_kind: 1000.0}))
    drawn = [kinds[weighted.pick(rng)] for _ in range(200)]
    assert sum(kind == heavy_kind for kind in drawn) >= 190
    uniform = CropDataset(prepared, TINY)
    assert {kinds[uniform.pick(rng)] for _ in range(200)} == set(kinds)


def test_segmentation_loss_pixel_weights():
    target = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    logits = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    config = TINY.updated(loss="ce")
    unweighted = float(segmentation_loss(logits, target, config))
    ones = float(segmentation_loss(logits, target, config, torch.ones(2, 16, 16)))
    assert ones == pytest.approx(unweighted, rel=1e-5)  # weights of 1 give torch's class-weighted mean
    # Weighting only the worst pixel pulls the loss towards that pixel's loss.
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    worst = per_pixel == per_pixel.max()
    weighted = float(segmentation_loss(logits, target, config, 1 + 1000 * worst.float()))
    assert unweighted < weighted <= float(per_pixel.max()) + 1e-4


def test_segmentation_loss():
    target = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20
    wrong = torch.roll(perfect, 1, dims=1)
    for loss in ("ce", "ce_dice"):
        config = TINY.updated(loss=loss)
        assert float(segmentation_loss(perfect, target, config)) < 1e-3
        assert float(segmentation_loss(wrong, target, config)) > 10
    # The Dice term adds at most 1 and only for nucleus classes.
    uniform = torch.zeros(2, 3, 16, 16)
    ce = float(segmentation_loss(uniform, target, TINY.updated(loss="ce", class_weights=None)))
    ce_dice = float(segmentation_loss(uniform, target, TINY.updated(loss="ce_dice", class_weights=None)))
    assert ce == pytest.approx(np.log(3), rel=1e-5) and 0 < ce_dice - ce < 1


@pytest.mark.slow
def test_fine_tuning_starts_from_the_given_model(tmp_path):
    source_config = dataclasses.replace(TINY, epochs=1)
    train(source_config, tmp_path / "source", data=FIXTURES, progress=False, log=lambda message: None)
    source = load_model_folder(tmp_path / "source" / "model")

    # A vanishing learning rate: the fine-tuned weights stay those of the source model.
    fine_config = dataclasses.replace(
        TINY, epochs=1, lr=1e-12, weight_decay=0.0, init_from=str(tmp_path / "source" / "model")
    )
    train(fine_config, tmp_path / "fine", data=FIXTURES, progress=False, log=lambda message: None)
    tuned = torch.load(tmp_path / "fine" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key, value in source.network.state_dict().items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # batch-norm statistics follow the new data even at lr 0
        assert torch.allclose(tuned[key], value, rtol=0, atol=1e-9), key
    fresh = build_model("unet", out_channels=3, base_channels=4, depth=2).state_dict()
    assert not all(torch.allclose(fresh[k], v) for k, v in source.network.state_dict().items() if v.is_floating_point())


def test_fine_tuning_from_a_different_network_is_a_clear_error(tmp_path):
    train(
        dataclasses.replace(TINY, epochs=1),
        tmp_path / "source",
        data=FIXTURES,
        progress=False,
        log=lambda message: None,
    )
    other = dataclasses.replace(
        TINY, model_options={"base_channels": 8, "depth": 2}, init_from=str(tmp_path / "source" / "model")
    )
    with pytest.raises(InputError, match="differs from the one configured for training"):
        train(other, tmp_path / "fine", data=FIXTURES, progress=False, log=lambda message: None)
    assert not (tmp_path / "fine").exists()


def test_split_names_grows_a_small_validation_side_until_it_holds_enough_nuclei():
    names = [f"img{i:02d}" for i in range(10)]
    plain = sides(split_dataset(names, val_fraction=0.1, seed=0))
    assert len(plain[1]) == 1
    few = sides(split_dataset(names, val_fraction=0.1, seed=0, nuclei={name: 60 for name in names}))
    assert len(few[1]) == 4 and set(plain[1]) <= set(few[1])  # 4 x 60 >= 200, in the same seeded order
    many = sides(split_dataset(names, val_fraction=0.1, seed=0, nuclei={name: 500 for name in names}))
    assert many == plain
    capped = sides(split_dataset(names, val_fraction=0.1, seed=0, nuclei={name: 1 for name in names}))
    assert len(capped[1]) == 5  # never more than half the images


def test_warm_up_raises_the_learning_rate_before_the_cosine_decay():
    network = torch.nn.Linear(2, 2)
    config = TINY.updated(lr_schedule="cosine", warmup_epochs=2, epochs=10, lr=1e-3, min_lr=1e-5)
    optimizer = torch.optim.SGD(network.parameters(), lr=config.lr)
    scheduler = make_scheduler(optimizer, config)
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-3 / 3) and rates[0] < rates[1] < rates[2]  # a third, two thirds, all
    assert rates[2] < 1e-3 and rates[2] > rates[3] > rates[4]  # of the cosine decay, which goes on

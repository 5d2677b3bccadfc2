"""Tests of ``nucseg train`` through ``nucseg.cli.main`` on the real DSB2018 fixtures."""

from __future__ import annotations

import csv
import json
import urllib.error
from pathlib import Path

import pytest
import torch
import yaml

from nucseg.cli import main
from nucseg.training.config import TrainConfig
from nucseg.models.folder import load_model_folder
from nucseg.training.loop import train

FIXTURES = Path(__file__).parent / "data" / "dsb2018"
#: Small-run flags: 64-pixel crops, two steps per epoch, no worker processes.
SMALL = ["--crop-size", "64", "--batch-size", "4", "--samples-per-epoch", "8", "--num-workers", "0", "--device", "cpu"]
#: The same small run with a tiny network, for runs started from Python.
TINY = TrainConfig(
    crop_size=64,
    batch_size=4,
    samples_per_epoch=8,
    num_workers=0,
    device="cpu",
    model_options={"base_channels": 4, "depth": 2},
)


pytestmark = pytest.mark.usefixtures("training_environment")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No network, as on the test machines: an empty torch hub cache and a download that fails."""

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def tiny_model_file(tmp_path) -> str:
    """A config file with a tiny network (the CLI has no flag for architecture options)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model_options": {"base_channels": 4, "depth": 2}}))
    return str(path)


def metrics_epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nucseg: error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def test_train_end_to_end(tmp_path, tiny_model_file, capsys):
    run_dir = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(FIXTURES),
            "--out",
            str(run_dir),
            "--epochs",
            "1",
            "--lr",
            "0.01",
            "--config",
            tiny_model_file,
            *SMALL,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "epoch 1: train loss" in out
    assert "best epoch 1 of 1: validation dsb_score" in out and f"model in {run_dir / 'model'}" in out
    config = TrainConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    # Flags and file both reached the run's config; everything else kept its default.
    assert (config.epochs, config.lr, config.crop_size, config.batch_size) == (1, 0.01, 64, 4)
    assert config.model_options == {"base_channels": 4, "depth": 2}
    assert config == TrainConfig(
        epochs=1,
        lr=0.01,
        crop_size=64,
        batch_size=4,
        samples_per_epoch=8,
        num_workers=0,
        device="cpu",
        model_options={"base_channels": 4, "depth": 2},
    )
    assert metrics_epochs(run_dir) == [1]
    loaded = load_model_folder(run_dir / "model")
    assert loaded.config.architecture_options == {"base_channels": 4, "depth": 2}


def test_seed_preset_offline_needs_encoder_weights_none(tmp_path, capsys):
    run_dir = tmp_path / "seed"
    code = main(["train", "--data", str(FIXTURES), "--out", str(run_dir), "--preset", "seed", "--epochs", "1", *SMALL])
    assert code == 2
    line = error_line(capsys)
    assert "cannot download the ImageNet MobileNetV2 weights" in line and "--encoder-weights none" in line
    assert not run_dir.exists()  # nothing written for a run that could not start


@pytest.mark.slow
def test_seed_preset_with_encoder_weights_none(tmp_path, capsys):
    run_dir = tmp_path / "seed"
    code = main(
        [
            "train",
            "--data",
            str(FIXTURES),
            "--out",
            str(run_dir),
            "--preset",
            "seed",
            "--encoder-weights",
            "none",
            "--epochs",
            "1",
            *SMALL,
        ]
    )
    assert code == 0, capsys.readouterr().err
    config = TrainConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert config.model == "mobilenetv2_unet" and config.encoder_weights is None and config.resize_to == 128
    loaded = load_model_folder(run_dir / "model")
    assert (loaded.config.architecture, loaded.config.target, loaded.config.out_channels) == (
        "mobilenetv2_unet",
        "binary",
        2,
    )
    assert loaded.config.resize_to == 128
    assert (run_dir / "snapshots" / "epoch_001.png").is_file()


def test_resume_through_the_cli(tmp_path, tiny_model_file, capsys):
    run_dir = tmp_path / "run"
    config = TINY.updated(epochs=2)
    train(config, run_dir, data=FIXTURES, progress=False, stop_after_epochs=1, log=lambda message: None)
    assert metrics_epochs(run_dir) == [1]

    code = main(["train", "--resume", str(run_dir)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"resuming {run_dir} after epoch 1" in out and "epoch 2: train loss" in out
    assert metrics_epochs(run_dir) == [1, 2]
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2


def test_resume_can_extend_a_finished_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = TINY.updated(epochs=1)
    train(config, run_dir, data=FIXTURES, progress=False, log=lambda message: None)
    assert metrics_epochs(run_dir) == [1]

    assert main(["train", "--resume", str(run_dir), "--epochs", "2"]) == 0
    assert metrics_epochs(run_dir) == [1, 2]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["epochs"] == 2 and saved["crop_size"] == 64


def test_resume_without_a_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert error_line(capsys) == (
        f"nucseg: error: {tmp_path / 'empty'}: no checkpoint to resume from (checkpoints/last.pt is missing)"
    )


def test_new_run_in_a_folder_that_holds_one(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"an earlier run")
    assert main(["train", "--data", str(FIXTURES), "--out", str(run_dir), *SMALL]) == 2
    assert error_line(capsys) == (
        f"nucseg: error: {run_dir}: holds a run already; use --resume to continue it or choose another --out"
    )
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == b"an earlier run"


@pytest.mark.parametrize(
    "arguments, problem",
    [
        (
            ["--resume", "RUN", "--lr", "0.1"],
            "--resume continues a run with its saved settings (only --epochs and "
            "--time-limit may extend it); drop --lr",
        ),
        (["--resume", "RUN", "--preset", "seed", "--epochs", "5"], "drop --preset"),
        (["--out", "RUN"], "give the training data with --data"),
        (["--images", "x", "--out", "RUN"], "--images and --masks go together"),
        (
            ["--data", str(FIXTURES), "--out", "RUN", "--crop-size", "100"],
            "command-line options: crop_size/resize_to must be a multiple of 32",
        ),
        (["--data", str(FIXTURES), "--out", "RUN", "--model", "resnet"], "model must be one of"),
        (["--data", str(FIXTURES), "--out", "RUN", "--preset", "fast"], "unknown preset 'fast'"),
        (
            ["--data", str(FIXTURES), "--out", "RUN", "--config", "missing.yaml"],
            "missing.yaml: config file does not exist",
        ),
    ],
)
def test_usage_errors(tmp_path, monkeypatch, capsys, arguments, problem):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *arguments]) == 2
    assert problem in error_line(capsys)
    assert not (tmp_path / "RUN").exists()


def test_train_needs_out_or_resume(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["train", "--data", str(FIXTURES)])
    assert caught.value.code == 2
    assert "one of the arguments --out --resume is required" in capsys.readouterr().err


def test_the_readme_fine_tuning_command_takes_network_and_thresholds_from_the_model(tmp_path, model_dir, capsys):
    from nucseg.models.folder import read_model_config, rewrite_model_config

    initial = tmp_path / "initial"
    import shutil

    shutil.copytree(model_dir, initial)
    config, _ = read_model_config(initial)
    config.postprocess = {**config.postprocess, "min_size": 33, "foreground_threshold": 0.45}
    config.postprocess_by_kind = {"brightfield": {**config.postprocess, "min_size": 60}}
    rewrite_model_config(initial, config)
    run = tmp_path / "mine"
    assert (
        main(
            [
                "train",
                "--data",
                str(FIXTURES),
                "--out",
                str(run),
                "--init-from",
                str(initial),
                "--epochs",
                "1",
                "--crop-size",
                "64",
                "--batch-size",
                "4",
                "--samples-per-epoch",
                "4",
                "--num-workers",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "thresholds per image kind (brightfield) are not carried over" in capsys.readouterr().out
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"] == config.architecture and resolved["model_options"] == config.architecture_options
    assert resolved["lr"] == 3e-4 and resolved["lr_schedule"] == "cosine" and resolved["warmup_epochs"] == 2
    assert resolved["ema_decay"] == 0.99  # the weight average is what is validated and saved
    saved = load_model_folder(run / "model").config
    tuning = saved.validation["tuning"]  # re-tuned on the run's validation images at the end ...
    assert tuning["n_images"] >= 1 and tuning["dsb_score_after"] >= tuning["dsb_score_before"]
    before = tuning["postprocess_before"]  # ... starting from the initial model's thresholds, never the defaults
    assert before["min_size"] == 33 and before["foreground_threshold"] == 0.45
    assert saved.postprocess_by_kind == {}


def test_split_from_trains_a_new_network_on_another_models_split(tmp_path):
    run = ["train", "--data", str(FIXTURES), "--epochs", "1", *SMALL]
    first = tmp_path / "first"
    assert main([*run, "--out", str(first), "--seed", "0"]) == 0
    settings = tmp_path / "wider.yaml"  # another network, which could not start from the first one's weights
    settings.write_text(f"split_from: {first / 'model'}\nmodel_options: {{base_channels: 12, depth: 3}}\n")
    second = tmp_path / "second"
    assert main([*run, "--out", str(second), "--seed", "3", "--config", str(settings)]) == 0
    redrawn = tmp_path / "redrawn"  # the same seed without split_from draws another split: not equal by chance
    assert main([*run, "--out", str(redrawn), "--seed", "3"]) == 0

    first_split, second_split, redrawn_split = (
        json.loads((folder / "split.json").read_text()) for folder in (first, second, redrawn)
    )
    assert all(second_split[side] == first_split[side] for side in ("train", "validation", "test"))
    assert redrawn_split["validation"] != first_split["validation"]
    assert load_model_folder(second / "model").config.architecture_options["base_channels"] == 12


def test_split_from_a_model_without_a_split_is_refused(tmp_path, capsys):
    from nucseg.models.folder import read_model_config, rewrite_model_config

    first = tmp_path / "first"
    assert main(["train", "--data", str(FIXTURES), "--out", str(first), "--epochs", "1", *SMALL]) == 0
    config, _ = read_model_config(first / "model")
    config.split = {}
    rewrite_model_config(first / "model", config)
    settings = tmp_path / "s.yaml"
    settings.write_text(f"split_from: {first / 'model'}\n")
    assert (
        main(["train", "--data", str(FIXTURES), "--out", str(tmp_path / "second"), "--config", str(settings), *SMALL])
        != 0
    )
    assert "stores no training/validation split" in capsys.readouterr().err

"""Tests of nucseg.training.config: defaults, presets, config files and their precedence."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from nucseg.training.augment import AugmentConfig
from nucseg.training.config import load_config_file, PRESETS, resolve_config, TrainConfig
from nucseg.errors import InputError


def write_yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_defaults_validate_and_round_trip():
    config = TrainConfig()
    config.validate()
    assert isinstance(config.augment, AugmentConfig)
    data = config.to_dict()
    assert isinstance(data["augment"], dict)
    assert TrainConfig.from_dict(data) == config
    # Through YAML and JSON, as a run folder and a model folder store it.
    assert TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(data))) == config
    assert TrainConfig.from_dict(json.loads(json.dumps(data))) == config


def test_the_shipped_recipe_resolves():
    config = resolve_config(config_file="configs/dsb2018.yaml")
    assert config.model == "unet" and config.target == "three_class"
    stage3 = resolve_config(config_file="configs/dsb2018_stage3.yaml")
    assert stage3.model_options == config.model_options and stage3.touching_weight > 0
    assert stage3.kind_weights == {"histology": 2.0, "brightfield": 4.0}
    stage1 = resolve_config(config_file="configs/nuclei.yaml")
    stage2 = resolve_config(config_file="configs/nuclei_stage2.yaml")  # the model comes from --init-from
    assert stage2.datasets == stage1.datasets and stage2.split_from == stage1.split_from
    assert stage2.lr < stage1.lr and stage2.init_from is None


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_config_files_load(tmp_path, suffix):
    settings = {"epochs": 7, "lr": 0.01, "model_options": {"base_channels": 4, "depth": 2}, "augment": {"flips": False}}
    path = tmp_path / f"run{suffix}"
    path.write_text(json.dumps(settings) if suffix == ".json" else yaml.safe_dump(settings))
    assert load_config_file(path) == settings
    config = resolve_config(config_file=path)
    assert (config.epochs, config.lr, config.model_options) == (7, 0.01, {"base_channels": 4, "depth": 2})
    # A partial augment mapping changes only the settings it names.
    assert config.augment == dataclasses.replace(AugmentConfig(), flips=False)


@pytest.mark.parametrize(
    "content, problem",
    [
        ({"epochz": 3}, "unknown config setting.*epochz"),
        ({"augment": {"flip": True}}, "unknown augment setting.*flip"),
        ({"crop_size": 100}, "multiple of 32"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"model": "resnet"}, "model must be one of.*resnet"),
        ({"model_options": {"base_channel": 4}}, "unknown model_options.*base_channel.*base_channels"),
        ({"target": "binary", "class_weights": [1, 1, 2]}, "class_weights needs 2"),
        ({"encoder_weights": "imagenet"}, "does not apply to model 'unet'"),
        ({"augment": {"scale_min": 0}}, "scale_min"),
        ({"augment": 3}, "augment"),
        ({"amp": "yes"}, "amp must be true or false"),
        ({"device": "gpu"}, "device must be"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"touching_weight": -1}, "touching_weight must be at least 0"),
        ({"lr_schedule": "step"}, "lr_schedule must be 'plateau' or 'cosine'"),
        ({"ema_decay": 1.0}, "ema_decay must be a number in"),
        ({"touching_gap": 0}, "touching_gap must be at least 1"),
        ({"kind_weights": {"phase": 2.0}}, "kind_weights must map image kinds"),
        ({"kind_weights": {"histology": 0}}, "kind_weights must map image kinds"),
    ],
)
def test_bad_settings_in_a_file_name_the_file(tmp_path, content, problem):
    path = write_yaml(tmp_path / "bad.yaml", content)
    with pytest.raises(InputError, match=problem) as caught:
        resolve_config(config_file=path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("epochs: [1, 2\n", "cannot parse config file"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("", "must hold a mapping"),
    ],
)
def test_unreadable_config_files(tmp_path, text, problem):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as caught:
        resolve_config(config_file=path)
    assert caught.value.path == path and "\n" not in str(caught.value)


def test_invalid_json_and_missing_files(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"epochs": 3,}')
    with pytest.raises(InputError, match="cannot parse config file") as caught:
        resolve_config(config_file=path)
    assert caught.value.path == path
    with pytest.raises(InputError, match="does not exist") as caught:
        resolve_config(config_file=tmp_path / "missing.yaml")
    assert caught.value.path == tmp_path / "missing.yaml"


def test_seed_preset():
    config = resolve_config(preset="seed")
    assert config.model == "mobilenetv2_unet" and config.encoder_weights == "imagenet"
    assert (config.target, config.resize_to, config.loss, config.class_weights) == ("binary", 128, "ce", None)
    assert (config.optimizer, config.lr, config.batch_size, config.monitor) == ("adam", 1e-3, 16, "pixel_accuracy")
    assert not config.augment.rotations and config.augment.scale_min == config.augment.scale_max == 1.0
    assert config.augment.flips  # the seed notebook flipped its images
    assert resolve_config(preset="default") == TrainConfig()
    assert set(PRESETS) == {"default", "seed"}


def test_unknown_preset():
    with pytest.raises(InputError, match="unknown preset 'fast'; choose one of: default, seed"):
        resolve_config(preset="fast")


def test_precedence_defaults_preset_file_flags(tmp_path):
    # lr is set by every layer, batch_size by the preset only, epochs by the file, seed by the flags.
    path = write_yaml(tmp_path / "run.yaml", {"lr": 0.002, "epochs": 12, "augment": {"noise_max": 0.01}})
    config = resolve_config(preset="seed", config_file=path, overrides={"lr": 0.005, "seed": 3})
    assert (config.lr, config.batch_size, config.epochs, config.seed) == (0.005, 16, 12, 3)
    # The file's partial augment mapping goes on top of the preset's augmentation.
    assert config.augment.noise_max == 0.01 and not config.augment.rotations
    assert resolve_config(preset="seed", config_file=path).lr == 0.002
    assert resolve_config(preset="seed").lr == 1e-3
    assert resolve_config().lr == TrainConfig().lr == 3e-3
    # None means "flag not given": the lower layers stay.
    assert resolve_config(preset="seed", config_file=path, overrides={"lr": None}).lr == 0.002


def test_later_layers_can_repair_earlier_ones(tmp_path):
    # The seed preset asks for ImageNet weights, which a unet does not take; the flags say none.
    path = write_yaml(tmp_path / "unet.yaml", {"model": "unet"})
    config = resolve_config(preset="seed", config_file=path, overrides={"encoder_weights": "none"})
    assert config.model == "unet" and config.encoder_weights is None
    with pytest.raises(InputError, match="does not apply to model 'unet'") as caught:
        resolve_config(preset="seed", config_file=path)
    assert caught.value.path is not None and str(caught.value.path) == path


def test_errors_name_the_layer_that_caused_them(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", {"epochs": 3})
    with pytest.raises(InputError, match="^command-line options: crop_size/resize_to must be a multiple of 32"):
        resolve_config(config_file=path, overrides={"crop_size": 65})
    with pytest.raises(InputError, match="^command-line options: unknown config setting"):
        resolve_config(overrides={"bogus": 1})


def test_encoder_weights_none_from_the_command_line_overrides_the_preset():
    assert resolve_config(preset="seed", overrides={"encoder_weights": "none"}).encoder_weights is None
    assert resolve_config(preset="seed", overrides={"encoder_weights": None}).encoder_weights == "imagenet"
    assert TrainConfig(model="mobilenetv2_unet", encoder_weights="None").encoder_weights is None


def test_class_weights_follow_the_target_unless_given(tmp_path):
    assert resolve_config(overrides={"target": "binary"}).class_weights is None
    assert resolve_config(overrides={"target": "three_class"}).class_weights == [1.0, 1.0, 2.0]
    # The seed preset names its weights (None: equal), which fit any target and are kept.
    assert resolve_config(preset="seed", overrides={"target": "three_class"}).class_weights is None
    path = write_yaml(tmp_path / "weights.yaml", {"class_weights": [1.0, 3.0]})
    assert resolve_config(config_file=path, overrides={"target": "binary"}).class_weights == [1.0, 3.0]
    path = write_yaml(tmp_path / "weights3.yaml", {"class_weights": [1.0, 1.0, 5.0]})
    with pytest.raises(InputError, match="class_weights needs 2"):  # given weights are never dropped silently
        resolve_config(config_file=path, overrides={"target": "binary"})


def test_updated_and_from_dict():
    config = TrainConfig().updated(epochs=5, augment={"flips": False})
    assert config.epochs == 5 and not config.augment.flips and config.augment.rotations
    with pytest.raises(ValueError, match="unknown config setting"):
        TrainConfig.from_dict({"nonsense": 1})
    with pytest.raises(ValueError, match="must be a mapping"):
        TrainConfig.from_dict(["epochs", 3])


@pytest.mark.parametrize(
    "datasets, message",
    [
        ([{"weight": 1.0}], "needs a path"),
        ([{"path": "a", "weight": 0}], "positive number"),
        ([{"path": "a", "colour": "red"}], "unknown dataset setting"),
        ([{"path": "x/a"}, {"path": "y/a"}], "both named 'a'"),
        ([{"path": "a", "name": "p/q"}], "without '/'"),
    ],
)
def test_datasets_are_checked(datasets, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(datasets=datasets)


def test_test_fraction_leaves_images_to_train_on():
    assert TrainConfig(test_fraction=0.1, val_fraction=0.1).test_fraction == 0.1
    with pytest.raises(ValueError, match="test_fraction"):
        TrainConfig(test_fraction=0.5, val_fraction=0.5)


def test_shipped_recipes_resolve():
    from pathlib import Path

    configs = Path(__file__).parents[2] / "configs"
    targets = {}
    for name in ("nuclei_unet.yaml", "nuclei_distance.yaml"):
        config = TrainConfig.from_dict(yaml.safe_load((configs / name).read_text()))
        assert len(config.datasets) == 4 and config.test_fraction > 0
        targets[name] = config.target
    assert targets == {"nuclei_unet.yaml": "three_class", "nuclei_distance.yaml": "three_class_distance"}
    default = TrainConfig.from_dict(yaml.safe_load((configs / "nuclei.yaml").read_text()))
    assert default.model == "efficientnet_lite0_unet" and default.encoder_weights == "imagenet"
    assert len(default.datasets) == 5 and default.split_from == "nuclei_unet"

"""Training configuration: every setting of ``nucseg train`` in one dataclass.

A :class:`TrainConfig` is built from defaults, then (when fine-tuning) the
settings of the initial model and :data:`FINE_TUNING`, then a preset
(``--preset``), then a YAML/JSON file (``--config``), then command-line flags,
each layer overriding the last (:func:`resolve_config`). The resolved config is saved as ``config.yaml`` in the
run folder and inside every model folder, so any run can be repeated.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nucseg.datasets.mixture import dataset_key
from nucseg.training.augment import AugmentConfig, NO_AUGMENTATION
from nucseg.errors import InputError


@dataclass
class TrainConfig:
    """Every training setting, with defaults that train the shipped model.

    Attributes
    ----------
    model
        Network name from :data:`nucseg.models.architectures.ARCHITECTURES` (``unet``, ``mobilenetv2_unet``).
    model_options
        Architecture options (keyword arguments of the network class), e.g.
        ``{"base_channels": 16}`` for ``unet``; empty for the class defaults.
    encoder_weights
        ``"imagenet"`` or ``None``; only for ``mobilenetv2_unet``.
    target
        ``"three_class"`` (interior + boundary, separates touching nuclei),
        ``"three_class_distance"`` (the same, plus a regressed distance map
        that seeds the watershed) or ``"binary"`` (the seed's
        foreground/background); see :mod:`nucseg.models.outputs`.
    distance_weight
        ``three_class_distance`` only: weight of the distance map's loss
        (binary cross-entropy against :func:`nucseg.training.targets.distance_target`)
        beside the class loss.
    epochs
        Maximum number of epochs.
    samples_per_epoch
        Random crops per epoch; None means one per training image, and at
        least :data:`MIN_STEPS_PER_EPOCH` batches (so that a handful of
        annotated images still makes epochs of real training).
    batch_size
        Crops per optimisation step.
    crop_size
        Side of the square training crops, in pixels (a multiple of 32).
    resize_to
        If set, every image is resized to this square size (pixels) instead of
        cropped, as in the seed notebook; the model then resizes at inference too.
    optimizer
        ``"adamw"`` or ``"adam"``.
    lr, weight_decay
        Learning rate and decoupled weight decay.
    loss
        ``"ce_dice"`` (cross-entropy plus soft Dice over nucleus classes) or ``"ce"``.
    touching_weight
        Extra cross-entropy weight, added to 1, for the pixels where two
        nuclei touch or nearly touch (:func:`nucseg.training.targets.touching_mask`):
        the few pixels that decide whether neighbours come out as one nucleus
        or two, as in the weight map of Ronneberger et al. 2015. 0 disables it.
    touching_gap
        Pixels within this many pixels (chessboard distance) of two different
        nuclei count as touching.
    kind_weights
        Relative sampling weight of the training images per image kind
        (:func:`nucseg.datasets.layouts.image_kind`: ``fluorescence``, ``brightfield``,
        ``histology``); kinds not listed weigh 1. Up-weights the rare kinds of
        a mixed dataset. Empty: every image is drawn equally often.
    class_weights
        Cross-entropy weight per class (None: equal). For ``three_class`` the
        boundary class is up-weighted so touching nuclei stay apart. When no
        layer of :func:`resolve_config` sets them, they follow the target
        (:data:`DEFAULT_CLASS_WEIGHTS`), so ``--target binary`` alone works.
    lr_schedule
        ``"plateau"``: ReduceLROnPlateau on the monitored validation metric
        (``lr_patience``, ``lr_factor``, down to ``min_lr``). ``"cosine"``:
        cosine decay from ``lr`` to ``min_lr`` over ``epochs``, then ``min_lr``.
    warmup_epochs
        With the cosine schedule: the learning rate rises linearly over this
        many first epochs (``lr / (warmup_epochs + 1)``, ...), so that a trained
        network is not wrecked by the first steps of fine-tuning.
    lr_patience, lr_factor, min_lr
        Settings of the learning-rate schedule (see ``lr_schedule``).
    ema_decay
        If set, an exponential moving average of the weights (decay per
        optimisation step, e.g. 0.998) is kept, validated and saved as the
        model instead of the raw weights: it smooths out the noise of small
        batches. None: no averaging.
    early_stopping_patience
        Stop after this many epochs without improvement of the monitored metric.
    time_limit_minutes
        Stop after the first epoch that ends past this wall-clock budget (None: no limit).
    monitor
        Validation metric that picks the best checkpoint: ``"dsb_score"``,
        ``"pixel_iou"``, ``"pixel_accuracy"`` or ``"loss"`` (lower is better).
    grad_clip
        Maximum global gradient norm (0 disables clipping).
    datasets
        Train on several datasets at once: a list of ``{"path": ..., "weight": ..., "name": ...}``
        mappings (``weight`` defaults to 1, ``name`` to the folder's name, and
        names the dataset in splits and reports; a relative ``path`` that does not
        exist from the working directory is looked up in the data root,
        :func:`nucseg.datasets.locations.data_root`). Each dataset is split on
        its own (``val_fraction``, ``test_fraction``), and a training crop comes
        from dataset *d* with probability ``weight_d / sum(weights)``, whatever
        its number of images. Empty: the dataset given to :func:`nucseg.training.loop.train`.
    val_fraction
        Fraction of the images held out for validation (seeded split).
    test_fraction
        Fraction of every dataset's images held out as a test split, which
        no epoch or threshold is chosen on (at least :data:`MIN_TEST_IMAGES`
        when above 0). The test names are stored in the model folder; score
        them with ``nucseg evaluate --split test``.
    seed
        Seed of the split, initialization and augmentation.
    num_workers
        DataLoader worker processes.
    snapshot_images
        Number of fixed validation images drawn every epoch.
    low_percentile, high_percentile
        Per-channel normalization percentiles (saved with the model).
    amp
        Mixed precision when training on a GPU.
    device
        ``"auto"`` (GPU if available), ``"cpu"`` or ``"cuda"``.
    init_from
        Start from the weights of this model (a model folder, or a shipped
        model's name such as ``"dsb2018"``) instead of a fresh network: fine-tuning.
        The network settings (``model``, ``model_options``, ``target``), the
        normalization and ``resize_to`` are then taken from that model, and
        :data:`FINE_TUNING` sets a lower learning rate with warm-up; every
        setting a preset, config file or flag names still wins.
    split_from
        Take the train / validation / test split stored in this model (a model
        folder, or a shipped model's name) instead of drawing one, so that a
        new network, for example a wider one that cannot start from that model,
        is chosen and tested on the same images and its scores compare with
        that model's. With ``init_from`` too, this split is used as it is.
    tune_thresholds
        At the end of the run, tune the saved model's post-processing
        thresholds on the validation images (``nucseg tune`` on the run's
        split); on by default when fine-tuning.
    augment
        Augmentation settings; see :class:`nucseg.training.augment.AugmentConfig`.
    """

    model: str = "unet"
    model_options: dict[str, Any] = field(default_factory=dict)
    encoder_weights: str | None = None
    target: str = "three_class"
    distance_weight: float = 1.0
    epochs: int = 100
    samples_per_epoch: int | None = None
    batch_size: int = 8
    crop_size: int = 256
    resize_to: int | None = None
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    loss: str = "ce_dice"
    class_weights: list[float] | None = field(default_factory=lambda: [1.0, 1.0, 2.0])
    touching_weight: float = 0.0
    touching_gap: int = 2
    kind_weights: dict[str, float] = field(default_factory=dict)
    lr_schedule: str = "plateau"
    warmup_epochs: int = 0
    lr_patience: int = 6
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    ema_decay: float | None = None
    early_stopping_patience: int = 15
    time_limit_minutes: float | None = None
    monitor: str = "dsb_score"
    grad_clip: float = 1.0
    datasets: list[dict[str, Any]] = field(default_factory=list)
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    num_workers: int = 2
    snapshot_images: int = 4
    low_percentile: float = 1.0
    high_percentile: float = 99.8
    amp: bool = True
    device: str = "auto"
    init_from: str | None = None
    split_from: str | None = None
    tune_thresholds: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = _from_dict(AugmentConfig, self.augment, "augment")
        if isinstance(self.encoder_weights, str) and self.encoder_weights.lower() == "none":
            self.encoder_weights = None  # "none" on the command line or in YAML means no weights
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for missing, mistyped or out-of-range settings and ones that cannot work together."""
        from nucseg.datasets.kinds import IMAGE_KINDS
        from nucseg.models.architectures import ARCHITECTURES
        from nucseg.models.outputs import TARGETS

        for name, (kind, minimum) in _NUMBER_SETTINGS.items():
            _check_number(name, getattr(self, name), kind, minimum)
        if not isinstance(self.amp, bool):
            raise ValueError(f"amp must be true or false, got {self.amp!r}")
        if not isinstance(self.augment, AugmentConfig):
            raise ValueError(f"augment must be a mapping of augmentation settings, got {self.augment!r}")
        if self.model not in ARCHITECTURES:
            raise ValueError(f"model must be one of {sorted(ARCHITECTURES)}, got {self.model!r}")
        if not isinstance(self.model_options, dict):
            raise ValueError(f"model_options must be a mapping of architecture options, got {self.model_options!r}")
        architecture = ARCHITECTURES[self.model]
        allowed = sorted(architecture.options)
        unknown = sorted(set(self.model_options) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown model_options for {self.model!r}: {', '.join(unknown)} "
                f"(allowed: {', '.join(allowed) or 'none'})"
            )
        if self.encoder_weights not in (None, "imagenet"):
            raise ValueError(f"encoder_weights must be 'imagenet' or none, got {self.encoder_weights!r}")
        if self.encoder_weights is not None and not architecture.encoder_weights:
            raise ValueError(
                f"encoder_weights {self.encoder_weights!r} does not apply to model {self.model!r} "
                "(set encoder_weights to none: --encoder-weights none)"
            )
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {sorted(TARGETS)}, got {self.target!r}")
        classes = TARGETS[self.target].classes
        if self.class_weights is not None and (
            not isinstance(self.class_weights, (list, tuple))
            or len(self.class_weights) != classes
            or not all(_is_number(w) and w >= 0 for w in self.class_weights)
        ):
            raise ValueError(
                f"class_weights needs {classes} non-negative numbers for target "
                f"{self.target!r}, got {self.class_weights!r}"
            )
        if not isinstance(self.kind_weights, dict) or not all(
            kind in IMAGE_KINDS and _is_number(weight) and weight > 0 for kind, weight in self.kind_weights.items()
        ):
            raise ValueError(
                f"kind_weights must map image kinds ({', '.join(IMAGE_KINDS)}) to positive numbers, "
                f"got {self.kind_weights!r}"
            )
        size = self.resize_to or self.crop_size
        if size % 32:
            raise ValueError(f"crop_size/resize_to must be a multiple of 32, got {size}")
        if not self.low_percentile < self.high_percentile <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {self.low_percentile}, {self.high_percentile}"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        for name in ("init_from", "split_from"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(
                    f"{name} must be a model folder or a shipped model's name, got {getattr(self, name)!r}"
                )
        if not 0.0 < self.lr_factor < 1.0:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor}")
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "mps") or self.device.split(":")[0] == "cuda"
        ):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda' (or 'cuda:N'), got {self.device!r}")
        if self.lr_schedule not in ("plateau", "cosine"):
            raise ValueError(f"lr_schedule must be 'plateau' or 'cosine', got {self.lr_schedule!r}")
        if self.warmup_epochs and self.lr_schedule != "cosine":
            raise ValueError("warmup_epochs needs lr_schedule 'cosine'")
        if self.ema_decay is not None and not (_is_number(self.ema_decay) and 0.0 < self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must be a number in (0, 1) or none, got {self.ema_decay!r}")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.loss not in ("ce", "ce_dice"):
            raise ValueError(f"loss must be 'ce' or 'ce_dice', got {self.loss!r}")
        if self.monitor not in ("dsb_score", "pixel_iou", "pixel_accuracy", "loss"):
            raise ValueError(f"unknown monitor {self.monitor!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.test_fraction < 1.0 or self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"test_fraction must be in [0, 1) and leave images for training beside val_fraction, "
                f"got {self.test_fraction}"
            )
        _check_datasets(self.datasets)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-compatible dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dictionary; unknown keys raise ValueError naming them."""
        return _from_dict(cls, data, "config")

    def updated(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (``augment`` may be a partial dictionary)."""
        data = self.to_dict()
        for key, value in changes.items():
            if key == "augment" and isinstance(value, dict):
                data["augment"].update(value)
            else:
                data[key] = value
        return TrainConfig.from_dict(data)


#: Numeric settings: (``int``, ``float`` or an optional one, smallest allowed value).
_NUMBER_SETTINGS: dict[str, tuple[str, float]] = {
    "epochs": ("int", 1),
    "samples_per_epoch": ("int?", 1),
    "batch_size": ("int", 1),
    "crop_size": ("int", 32),
    "resize_to": ("int?", 32),
    "lr": ("float", 0.0),
    "weight_decay": ("float", 0.0),
    "lr_patience": ("int", 0),
    "lr_factor": ("float", 0.0),
    "min_lr": ("float", 0.0),
    "warmup_epochs": ("int", 0),
    "early_stopping_patience": ("int", 1),
    "time_limit_minutes": ("float?", 0.0),
    "grad_clip": ("float", 0.0),
    "val_fraction": ("float", 0.0),
    "touching_weight": ("float", 0.0),
    "touching_gap": ("int", 1),
    "distance_weight": ("float", 0.0),
    "test_fraction": ("float", 0.0),
    "seed": ("int", 0),
    "num_workers": ("int", 0),
    "snapshot_images": ("int", 0),
    "low_percentile": ("float", 0.0),
    "high_percentile": ("float", 0.0),
}

#: Class weights that go with each target when no layer of :func:`resolve_config` sets them.
DEFAULT_CLASS_WEIGHTS: dict[str, list[float] | None] = {
    "three_class": [1.0, 1.0, 2.0],
    "binary": None,
    "three_class_distance": [1.0, 1.0, 2.0],
}

#: Smallest test split of a dataset when ``test_fraction`` is above 0.
MIN_TEST_IMAGES = 3


def _check_datasets(datasets: Any) -> None:
    if not isinstance(datasets, list):
        raise ValueError(f"datasets must be a list of {{path: ..., weight: ...}} mappings, got {datasets!r}")
    names = set()
    for entry in datasets:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ValueError(f"every entry of datasets needs a path, got {entry!r}")
        unknown = sorted(set(entry) - {"path", "weight", "name"})
        if unknown:
            raise ValueError(
                f"unknown dataset setting(s) {', '.join(unknown)} in {entry!r} (known: path, weight, name)"
            )
        weight = entry.get("weight", 1.0)
        if not _is_number(weight) or weight <= 0:
            raise ValueError(f"dataset weight must be a positive number, got {weight!r} for {entry['path']!r}")
        name = dataset_key(entry)
        if not name or "/" in name:
            raise ValueError(f"a dataset name must be a non-empty word without '/', got {name!r}")
        if name in names:
            raise ValueError(f"two datasets are both named {name!r}; their images could not be told apart")
        names.add(name)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(name: str, value: Any, kind: str, minimum: float) -> None:
    if value is None and kind.endswith("?"):
        return
    integer = kind.startswith("int")
    if not _is_number(value) or (integer and not isinstance(value, int)):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, got {value!r}")


def _from_dict(cls: type, data: dict[str, Any], what: str):
    if not isinstance(data, dict):
        raise ValueError(f"{what} settings must be a mapping, got {data!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} setting(s): {', '.join(unknown)}")
    return cls(**data)


#: Named starting points for ``--preset``.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The seed notebook: 128x128 resize, MobileNetV2 U-Net with ImageNet weights,
    # 2-class cross-entropy, Adam, judged by pixel accuracy, light augmentation.
    "seed": {
        "model": "mobilenetv2_unet",
        "model_options": {},
        "encoder_weights": "imagenet",
        "target": "binary",
        "resize_to": 128,
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "loss": "ce",
        "class_weights": None,
        "batch_size": 16,
        "monitor": "pixel_accuracy",
        "augment": dataclasses.asdict(dataclasses.replace(NO_AUGMENTATION, flips=True)),
    },
}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dictionary (raises InputError)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "config file does not exist")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot parse config file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(path, "config file must hold a mapping of setting names to values")
    return data


#: A run's batches per epoch when ``samples_per_epoch`` is None: at least this many.
MIN_STEPS_PER_EPOCH = 16
#: Settings for fine-tuning a trained network (``init_from``), below every preset, file and flag: a learning rate
#: a tenth of the default with warm-up and cosine decay. At the default 3e-3 from the first step, 8 annotated
#: images took a trained network's validation pixel IoU from 0.53 to 0.16. The weight average (EMA, a horizon of
#: about 100 steps) is what is validated and saved: on a validation split of 2 images the raw weights' score jumps
#: from epoch to epoch, so the epoch chosen was partly luck (chosen on benchmarks/bench_finetune.py --part develop:
#: AP@0.5 +0.196 without, +0.219 with it; the reported draw, run after the choice: +0.198 without, +0.171 with).
FINE_TUNING = {
    "lr": 3e-4,
    "lr_schedule": "cosine",
    "warmup_epochs": 2,
    "min_lr": 1e-5,
    "tune_thresholds": True,
    "ema_decay": 0.99,
}


def initial_model_settings(name_or_path: str) -> dict[str, Any]:
    """The settings fine-tuning from ``name_or_path`` takes from that model: network, target, normalization.

    Raises
    ------
    ModelError
        No such model folder or shipped model.
    """
    from nucseg.models.folder import read_model_config
    from nucseg.models.registry import resolve_model_path

    model_config, _ = read_model_config(resolve_model_path(name_or_path))
    return {
        "model": model_config.architecture,
        "model_options": dict(model_config.architecture_options),
        "target": model_config.target,
        "resize_to": model_config.resize_to,
        "low_percentile": model_config.normalization.low_percentile,
        "high_percentile": model_config.normalization.high_percentile,
    }


def resolve_config(
    *, preset: str | None = None, config_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then fine-tuning settings, then preset, then config file, then overrides (None values ignored).

    Fine-tuning settings (:data:`FINE_TUNING` and the network of the model,
    see :func:`initial_model_settings`) apply when a layer names ``init_from``.

    Each layer replaces the settings it names (``augment`` setting by
    setting). The layers are combined first and checked together, so a later
    layer may repair a combination that an earlier one left inconsistent.
    When no layer names ``class_weights``, they follow the final target
    (:data:`DEFAULT_CLASS_WEIGHTS`).

    Raises
    ------
    InputError
        Unknown preset, unreadable config file or invalid settings, naming
        the layer (the config file, the preset or the command-line options)
        that brought the problem in.
    """
    layers: list[tuple[str | Path, dict[str, Any]]] = []
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(None, f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        layers.append((f"preset {preset!r}", PRESETS[preset]))
    if config_file is not None:
        layers.append((Path(config_file), load_config_file(config_file)))
    layers.append(("command-line options", {k: v for k, v in (overrides or {}).items() if v is not None}))
    init_from = next((layer["init_from"] for _, layer in reversed(layers) if layer.get("init_from")), None)
    if init_from is not None:  # below every named layer: what they name still wins
        fine_tuning = {**FINE_TUNING, **initial_model_settings(init_from)}
        layers.insert(0, (f"the model {init_from!r} to fine-tune", fine_tuning))

    data = TrainConfig().to_dict()
    class_weights_given = False
    first_source_of: dict[str, str | Path] = {}  # error message -> the layer that first produced it
    config, error = None, None
    for source, layer in layers:
        for key, value in layer.items():
            if key == "augment" and isinstance(value, dict) and isinstance(data.get("augment"), dict):
                data["augment"] = {**data["augment"], **value}
            else:
                data[key] = value
        class_weights_given = class_weights_given or "class_weights" in layer
        candidate = dict(data)
        if not class_weights_given and candidate.get("target") in DEFAULT_CLASS_WEIGHTS:
            candidate["class_weights"] = DEFAULT_CLASS_WEIGHTS[candidate["target"]]
        try:
            config, error = TrainConfig.from_dict(candidate), None
        except (TypeError, ValueError) as exc:
            config, error = None, exc
            first_source_of.setdefault(str(exc), source)
    if error is not None:
        source = first_source_of[str(error)]
        if isinstance(source, Path):
            raise InputError(source, str(error))
        raise InputError(None, f"{source}: {error}")
    return config

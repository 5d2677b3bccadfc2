"""Training configuration: every setting of ``nucseg train`` in one dataclass.

A :class:`TrainConfig` is built from defaults, then a preset (``--preset``),
then a YAML/JSON file (``--config``), then command-line flags, each layer
overriding the last. The resolved config is saved as ``config.yaml`` in the
run folder and inside every model folder, so any run can be repeated.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nucseg.augment import AugmentConfig
from nucseg.errors import InputError


@dataclass
class TrainConfig:
    """Every training setting, with defaults that train the shipped model.

    Attributes
    ----------
    model
        Network name from :data:`nucseg.models.REGISTRY` (``unet``, ``mobilenetv2_unet``).
    model_options
        Architecture options, e.g. ``{"base_channels": 8, "depth": 4}`` for ``unet``.
    encoder_weights
        ``"imagenet"`` or ``None``; only for ``mobilenetv2_unet``.
    target
        ``"three_class"`` (interior + boundary, separates touching nuclei) or
        ``"binary"`` (the seed's foreground/background).
    epochs
        Maximum number of epochs.
    samples_per_epoch
        Random crops per epoch; None means one per training image.
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
    class_weights
        Cross-entropy weight per class (None: equal). For ``three_class`` the
        boundary class is up-weighted so touching nuclei stay apart.
    lr_patience, lr_factor, min_lr
        ReduceLROnPlateau on the monitored validation metric.
    early_stopping_patience
        Stop after this many epochs without improvement of the monitored metric.
    time_limit_minutes
        Stop after the first epoch that ends past this wall-clock budget (None: no limit).
    monitor
        Validation metric that picks the best checkpoint: ``"dsb_score"``,
        ``"pixel_iou"``, ``"pixel_accuracy"`` or ``"loss"`` (lower is better).
    grad_clip
        Maximum global gradient norm (0 disables clipping).
    val_fraction
        Fraction of the images held out for validation (seeded split).
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
    augment
        Augmentation settings; see :class:`nucseg.augment.AugmentConfig`.
    """

    model: str = "unet"
    model_options: dict[str, Any] = field(default_factory=lambda: {"base_channels": 8, "depth": 4})
    encoder_weights: str | None = None
    target: str = "three_class"
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
    lr_patience: int = 6
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    early_stopping_patience: int = 15
    time_limit_minutes: float | None = None
    monitor: str = "dsb_score"
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    seed: int = 0
    num_workers: int = 2
    snapshot_images: int = 4
    low_percentile: float = 1.0
    high_percentile: float = 99.8
    amp: bool = True
    device: str = "auto"
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = _from_dict(AugmentConfig, self.augment, "augment")
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work together."""
        from nucseg.models import REGISTRY
        from nucseg.targets import TARGET_CLASSES

        if self.model not in REGISTRY:
            raise ValueError(f"model must be one of {sorted(REGISTRY)}, got {self.model!r}")
        if self.target not in TARGET_CLASSES:
            raise ValueError(f"target must be one of {sorted(TARGET_CLASSES)}, got {self.target!r}")
        if self.class_weights is not None and len(self.class_weights) != TARGET_CLASSES[self.target]:
            raise ValueError(f"class_weights needs {TARGET_CLASSES[self.target]} values for target {self.target!r}")
        size = self.resize_to or self.crop_size
        if size % 32:
            raise ValueError(f"crop_size/resize_to must be a multiple of 32, got {size}")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.loss not in ("ce", "ce_dice"):
            raise ValueError(f"loss must be 'ce' or 'ce_dice', got {self.loss!r}")
        if self.monitor not in ("dsb_score", "pixel_iou", "pixel_accuracy", "loss"):
            raise ValueError(f"unknown monitor {self.monitor!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")

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


def _from_dict(cls: type, data: dict[str, Any], what: str):
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
        "augment": dataclasses.asdict(AugmentConfig(
            rotations=False, scale_min=1.0, scale_max=1.0, brightness=0.0, contrast=0.0, gamma_min=1.0,
            gamma_max=1.0, noise_max=0.0, blur_probability=0.0, color_probability=0.0, invert_probability=0.0,
        )),
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


def resolve_config(
    *, preset: str | None = None, config_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then preset, then config file, then overrides (None values ignored).

    Raises
    ------
    InputError
        Unknown preset, unreadable config file or invalid settings.
    """
    config = TrainConfig()
    layers: list[tuple[str, dict[str, Any]]] = []
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(None, f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        layers.append((f"preset {preset!r}", PRESETS[preset]))
    if config_file is not None:
        layers.append((str(config_file), load_config_file(config_file)))
    layers.append(("command-line options", {k: v for k, v in (overrides or {}).items() if v is not None}))
    for source, layer in layers:
        try:
            config = config.updated(**layer)
        except (TypeError, ValueError) as exc:
            raise InputError(None, f"{source}: {exc}") from None
    return config

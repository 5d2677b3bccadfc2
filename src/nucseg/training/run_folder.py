"""The folders of a training run: what it starts from, and what it writes.

A run folder holds everything a run produces::

    RUN/config.yaml          the resolved TrainConfig
    RUN/split.json           training and validation image names
    RUN/metrics.csv          one row per epoch (losses, learning rate, validation scores)
    RUN/curves.png           the metric curves, drawn at the end
    RUN/snapshots/           every epoch: input | true outlines | predicted outlines, fixed images
    RUN/tensorboard/         scalars and snapshot images for TensorBoard
    RUN/checkpoints/last.pt  model, optimizer, scheduler, early-stopping and RNG state
    RUN/checkpoints/best.pt  the same, at the best validation epoch
    RUN/model/               the best model as a self-describing model folder

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(..., weights_only=True)``. A fine-tuning run starts from a model
folder (``init_from``): its weights and post-processing settings are read here.
The loop that writes these files is :func:`nucseg.training.loop.train`.
"""

from __future__ import annotations

import csv
import io as _io
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nucseg.datasets.sample import Sample
from nucseg.errors import InputError
from nucseg.io.atomic import atomic_write
from nucseg.models.folder import ModelConfig, read_model_config, save_model
from nucseg.models.outputs import output_layout
from nucseg.training.config import TrainConfig
from nucseg.training.data import carried_quality_calibration, normalization_of

CHECKPOINT_VERSION = 1
#: The best model's folder inside a run folder.
MODEL_DIR = "model"


# ------------------------------------------------------------------ the model a run starts from


def load_initial_weights(network: nn.Module, name_or_path: str) -> None:
    """Copy the weights of a model folder (or shipped model name) into ``network`` for fine-tuning.

    The networks must match, except that ``network`` may have more output
    channels (a ``three_class`` model fine-tuned for ``three_class_distance``):
    the output layer's trained channels are copied and the new ones keep
    their fresh initialization.

    Raises
    ------
    ModelError
        The model cannot be loaded.
    InputError
        Its network differs from ``network`` (other architecture, options or classes).
    """
    from nucseg.models.registry import resolve_model_path
    from nucseg.models.folder import load_model_folder

    path = resolve_model_path(name_or_path)
    source = load_model_folder(path)
    state = source.network.state_dict()
    own = network.state_dict()
    for key, value in state.items():
        wanted = own.get(key)
        if (
            wanted is not None
            and wanted.shape != value.shape
            and wanted.shape[1:] == value.shape[1:]
            and wanted.shape[0] > value.shape[0]
        ):
            widened = wanted.clone()
            widened[: value.shape[0]] = value
            state[key] = widened
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError:
        described = f"{source.config.architecture} {source.config.architecture_options}, {source.config.target}"
        raise InputError(
            path,
            f"its network ({described}) differs from the one configured for training; "
            "set model, model_options and target to match it",
        ) from None


def log_settings_not_carried_over(init_from: str, log) -> None:
    """Say that the initial model's settings per image kind stay behind (see :func:`default_postprocess`)."""
    from nucseg.models.registry import resolve_model_path

    initial, _ = read_model_config(resolve_model_path(init_from))
    if initial.postprocess_by_kind:
        log(
            f"{init_from}'s thresholds per image kind ({', '.join(sorted(initial.postprocess_by_kind))}) are not "
            "carried over: the fine-tuned model has one setting, its general one re-tuned on this run's validation "
            "images"
        )


def default_postprocess(config: TrainConfig) -> dict[str, Any]:
    """Post-processing settings of the run: the initial model's tuned ones when fine-tuning, else the defaults.

    A fine-tuned model with another target than its initial model (three-class
    to distance map) keeps the initial model's settings except the seed threshold.
    The initial model's settings per image kind are not carried over: they were
    tuned for its own network, and the end-of-run tuning sets one setting for
    the new one on the run's validation images.
    """
    from nucseg.postprocess.watershed import PostprocessConfig

    if config.init_from is not None:
        from nucseg.models.registry import resolve_model_path

        initial, _ = read_model_config(resolve_model_path(config.init_from))
        settings = PostprocessConfig.from_dict(initial.postprocess).to_dict()
        if initial.target != config.target:  # the seeds come from another map: its threshold means something else
            settings["marker_threshold"] = PostprocessConfig().marker_threshold
        return settings
    return PostprocessConfig().to_dict()


# ------------------------------------------------------------------ the model a run saves


def model_config_for(
    config: TrainConfig,
    *,
    split: dict,
    validation: dict,
    postprocess: dict,
    median_diameter: float | None = None,
    name: str = "",
) -> ModelConfig:
    """The :class:`ModelConfig` of a network trained with ``config``."""
    return ModelConfig(
        architecture=config.model,
        architecture_options={k: v for k, v in config.model_options.items() if k != "encoder_weights"},
        in_channels=3,
        out_channels=output_layout(config.target).channels,
        target=config.target,
        normalization=normalization_of(config),
        resize_to=config.resize_to,
        postprocess=postprocess,
        training=config.to_dict(),
        split={part: list(split.get(part, [])) for part in ("train", "validation", "test")},
        validation=validation,
        median_diameter=median_diameter,
        name=name,
        quality=carried_quality_calibration(config.init_from),
    )


def save_model_folder(network, config, split, row, postprocess, median_diameter, path: Path) -> None:
    """Save ``network`` as a model folder at ``path``, with the validation scores of its epoch's metrics ``row``."""
    validation = {k.removeprefix("val_"): float(v) for k, v in row.items() if k.startswith("val_")}
    validation["epoch"] = int(row["epoch"])
    save_model(
        network,
        model_config_for(
            config, split=split, validation=validation, postprocess=postprocess, median_diameter=median_diameter
        ),
        path,
    )


def tune_saved_model(
    model_dir: Path, val_samples: Sequence[Sample], log: Callable[[str], None], *, groups: Sequence[str] | None = None
) -> None:
    """Tune the post-processing thresholds of the run's best model on its validation images (``nucseg tune``).

    With ``groups`` (the dataset of each image of a mixture), every dataset weighs alike in the score.
    """
    from nucseg.evaluation.tuning import save_tuning, SmallTuningSetWarning, tune_postprocess
    from nucseg.inference.model import load_model

    from nucseg.datasets.mixture import equal_dataset_weights

    weights = None if groups is None else equal_dataset_weights(groups)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SmallTuningSetWarning)
        result = tune_postprocess(load_model(model_dir), val_samples, weights=weights)
    for warning in caught:
        log(f"warning: {warning.message}")
    _, weights_sha256 = read_model_config(model_dir)
    save_tuning(
        model_dir,
        result,
        data=f"the run's validation split ({len(val_samples)} images)",
        expected_weights_sha256=weights_sha256,
    )
    changes = ", ".join(f"{name} {before} -> {after}" for name, (before, after) in result.changed.items())
    log(
        f"thresholds tuned on the {len(val_samples)} validation images: DSB score {result.initial_score:.4f} -> "
        f"{result.score:.4f} ({changes or 'unchanged'})"
    )


# ------------------------------------------------------------------ the run folder's files


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a checkpoint (tensors and plain values only) atomically."""
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_run(run_dir: Path) -> tuple[TrainConfig, dict, dict]:
    """The config, split and last checkpoint of a run folder, to resume it; InputError for what is missing."""
    import yaml

    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise InputError(run_dir, "no checkpoint to resume from (checkpoints/last.pt is missing)")
    try:
        config = TrainConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
        split = json.loads((run_dir / "split.json").read_text())
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(run_dir, f"cannot read the run's config.yaml/split.json ({exc})") from None
    try:
        state = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise InputError(last, f"corrupt checkpoint ({str(exc).splitlines()[0]})") from None
    if state.get("version") != CHECKPOINT_VERSION:
        raise InputError(last, f"checkpoint version {state.get('version')!r} is not supported")
    return config, split, state


def write_config(run_dir: Path, config: TrainConfig) -> None:
    """Write the run's ``config.yaml``."""
    import yaml

    _write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))


def write_split(run_dir: Path, split: dict) -> None:
    """Write the run's ``split.json``."""
    _write_text(run_dir / "split.json", json.dumps(split, indent=1) + "\n")


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    """Write one row per epoch of ``history``."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Draw the loss, validation scores and learning rate per epoch as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [r["train_loss"] for r in history], label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in history], label="validation")
    axes[0].set_title("loss")
    for key, label in (("val_dsb_score", "DSB score"), ("val_ap50", "AP@0.5"), ("val_pixel_iou", "pixel IoU")):
        axes[1].plot(epochs, [r[key] for r in history], label=label)
    axes[1].set_title("validation")
    axes[2].semilogy(epochs, [r["lr"] for r in history])
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with atomic_write(path) as tmp:
        tmp.write_bytes(buffer.getvalue())

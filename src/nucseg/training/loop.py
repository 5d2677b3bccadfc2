"""The training loop behind ``nucseg train``.

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
``torch.load(..., weights_only=True)``. Every crop is a pure function of
(seed, epoch, index), which makes a resumed run continue exactly where the
killed one stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nucseg.training.augment import augment_crop
from nucseg.training.config import TrainConfig
from nucseg.datasets.layouts import image_kind, load_dataset, Sample
from nucseg.errors import InputError
from nucseg.io.atomic import atomic_write
from nucseg.postprocess.measure import median_nucleus_diameter
from nucseg.models.folder import ModelConfig, save_model
from nucseg.models import SIZE_DIVISOR
from nucseg.models.networks import build_model
from nucseg.preprocess.resize import resize_channels
from nucseg.preprocess.normalize import NormalizationConfig, prepare_image
from nucseg.preprocess.resize import resize_image, resize_labels
from nucseg.training.targets import make_target, TARGET_CLASSES, touching_mask

CHECKPOINT_VERSION = 1
MODEL_DIR = "model"


# ----------------------------------------------------------------------------- data


def split_names(names: Sequence[str], *, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of image names into (train, validation), each sorted.

    At least one image goes to each side when there are two or more images.
    """
    names = sorted(names)
    if len(names) < 2:
        raise ValueError("need at least two images to split into training and validation")
    n_val = min(len(names) - 1, max(1, int(round(len(names) * val_fraction))))
    order = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    return train, val


@dataclass
class PreparedSample:
    """A training image normalized once, kept in memory as float16."""

    name: str
    image: np.ndarray  # float16 (H, W, C), normalized
    labels: np.ndarray  # int32 (H, W)
    raw: np.ndarray  # the raw image, for snapshots


def prepare_samples(samples: Sequence[Sample], config: TrainConfig) -> list[PreparedSample]:
    """Normalize (and, for ``resize_to`` configs, resize) samples for training."""
    normalization = normalization_of(config)
    prepared = []
    for sample in samples:
        image = prepare_image(sample.image, normalization)
        labels = sample.labels
        if config.resize_to:
            image = resize_image(image, (config.resize_to, config.resize_to))
            labels = resize_labels(labels, (config.resize_to, config.resize_to))
        prepared.append(PreparedSample(sample.name, image.astype(np.float16), labels.astype(np.int32), sample.image))
    return prepared


def normalization_of(config: TrainConfig) -> NormalizationConfig:
    return NormalizationConfig(low_percentile=config.low_percentile, high_percentile=config.high_percentile)


class CropDataset(torch.utils.data.Dataset):
    """Random augmented crops; item ``(epoch, index)`` is deterministic.

    Returns ``(image, target, pixel_weights)``: float32 ``(C, S, S)``, int64
    ``(S, S)`` class ids and float32 ``(S, S)`` loss weights (1, plus
    ``touching_weight`` where nuclei touch). Images are drawn with probability
    proportional to :func:`sampling_weights`.
    """

    def __init__(self, samples: Sequence[PreparedSample], config: TrainConfig):
        self.samples = samples
        self.config = config
        weights = sampling_weights(samples, config.kind_weights)
        self.cumulative = np.cumsum(weights) / weights.sum() if config.kind_weights else None

    def __len__(self) -> int:
        return len(self.samples)

    def pick(self, rng: np.random.Generator) -> int:
        """Index of the sample that the next crop comes from, drawn by :func:`sampling_weights`."""
        if self.cumulative is None:
            return int(rng.integers(len(self.samples)))
        return min(int(np.searchsorted(self.cumulative, rng.random(), side="right")), len(self.samples) - 1)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, index = key
        rng = np.random.default_rng([self.config.seed, epoch, index])
        sample = self.samples[self.pick(rng)]
        size = self.config.resize_to or self.config.crop_size
        augment = self.config.augment
        if self.config.resize_to:  # seed mode: whole resized image, no scale jitter
            augment = dataclasses.replace(augment, scale_min=1.0, scale_max=1.0)
        image, labels = augment_crop(sample.image.astype(np.float32), sample.labels, size, rng, augment)
        target = make_target(labels, self.config.target)
        pixel_weights = np.ones(labels.shape, dtype=np.float32)
        if self.config.touching_weight > 0:
            pixel_weights[touching_mask(labels, gap=self.config.touching_gap)] += self.config.touching_weight
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(target.astype(np.int64)),
                torch.from_numpy(pixel_weights))


def sampling_weights(samples: Sequence[PreparedSample], kind_weights: dict[str, float]) -> np.ndarray:
    """Relative draw weight of each sample: ``kind_weights[image_kind(raw image)]``, 1 for kinds not listed."""
    if not kind_weights:
        return np.ones(len(samples))
    return np.array([float(kind_weights.get(image_kind(sample.raw), 1.0)) for sample in samples])


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` keys; :meth:`set_epoch` picks the epoch."""

    def __init__(self, samples_per_epoch: int):
        self.samples_per_epoch = samples_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __iter__(self):
        return iter((self.epoch, i) for i in range(self.samples_per_epoch))


# ----------------------------------------------------------------------------- loss


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, config: TrainConfig,
                      pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy (class- and pixel-weighted), plus soft Dice over the nucleus classes for ``ce_dice``.

    logits: (N, C, H, W); target: (N, H, W) class ids; pixel_weights: (N, H, W)
    or None. The cross-entropy is the weighted mean over pixels, weights being
    the class weight times the pixel weight.
    """
    weight = None
    if config.class_weights is not None:
        weight = torch.tensor(config.class_weights, dtype=logits.dtype, device=logits.device)
    if pixel_weights is None:
        loss = F.cross_entropy(logits, target, weight=weight)
    else:
        per_pixel = F.cross_entropy(logits, target, weight=weight, reduction="none")
        total_weight = pixel_weights if weight is None else pixel_weights * weight[target]
        loss = (per_pixel * pixel_weights).sum() / total_weight.sum().clamp_min(1e-6)
    if config.loss == "ce_dice":
        probabilities = torch.softmax(logits.float(), dim=1)[:, 1:]
        one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
        intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))
        total = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
        loss = loss + 1.0 - ((2 * intersection + 1.0) / (total + 1.0)).mean()
    return loss


# ----------------------------------------------------------------------- validation


@dataclass
class ValidationResult:
    """Validation of one epoch: mean scores and the predicted labels of every image."""

    loss: float
    pixel_iou: float
    pixel_accuracy: float
    dsb_score: float
    ap50: float
    predictions: list[np.ndarray]


def predict_logits_full(network: nn.Module, image: np.ndarray, device: torch.device) -> torch.Tensor:
    """Logits (C, H, W) of a whole prepared image (H, W, C), reflect-padded to the size divisor."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((0, (-height) % SIZE_DIVISOR), (0, (-width) % SIZE_DIVISOR), (0, 0)), mode="reflect")
    x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32))[None].to(device)
    return network(x)[0, :, :height, :width].float()


def validate(
    network: nn.Module,
    samples: Sequence[PreparedSample],
    originals: Sequence[Sample],
    config: TrainConfig,
    device: torch.device,
    postprocess: dict[str, Any],
) -> ValidationResult:
    """Loss and pixel scores on the network's input grid; DSB score of the full
    instance pipeline at the original resolution."""
    from nucseg.evaluation.metrics import image_scores, summarize
    from nucseg.postprocess.watershed import instances_from_probabilities, PostprocessConfig

    post_config = PostprocessConfig.from_dict(postprocess)
    network.eval()
    losses, scores, predictions = [], [], []
    with torch.inference_mode():
        for prepared, original in zip(samples, originals):
            logits = predict_logits_full(network, prepared.image.astype(np.float32), device)
            target = torch.from_numpy(make_target(prepared.labels, config.target).astype(np.int64)).to(device)
            losses.append(float(segmentation_loss(logits[None], target[None], config)))
            probabilities = torch.softmax(logits, dim=0).cpu().numpy()
            if config.resize_to:
                probabilities = resize_channels(probabilities, original.labels.shape)  # as prediction does
            labels = instances_from_probabilities(np.ascontiguousarray(probabilities, dtype=np.float32), post_config)
            predictions.append(labels)
            scores.append(image_scores(original.labels, labels))
    summary = summarize(scores)
    pixel_accuracy = float(np.mean([s.pixel_accuracy for s in scores]))
    return ValidationResult(float(np.mean(losses)), summary.pixel_iou, pixel_accuracy, summary.dsb_score,
                            summary.ap50, predictions)


# ----------------------------------------------------------------------------- run


@dataclass
class TrainResult:
    """Summary of a finished (or early-stopped) run."""

    run_dir: Path
    model_dir: Path
    epochs_run: int
    best_epoch: int
    best_metric: float
    history: list[dict[str, float]]


def select_device(name: str) -> torch.device:
    """The torch device for ``"auto"`` (a CUDA GPU if there is one), ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(None, f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, f"device {name!r} requested but no CUDA GPU is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(None, f"device {name!r} requested but there are only {torch.cuda.device_count()} GPUs")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(None, "device 'mps' requested but it is not available")
    return device


def _is_better(value: float, best: float | None, monitor: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if monitor == "loss" else value > best


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    val_data: str | Path | None = None,
    resume: bool = False,
    extend: dict[str, Any] | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train a network as configured and save the best model in ``run_dir/model``.

    Parameters
    ----------
    config
        The run's settings (ignored on resume: the run's saved config is used).
    run_dir
        Run folder; created, or continued with ``resume``.
    data, images_dir, masks_dir
        Training dataset (any layout :func:`nucseg.datasets.load_dataset` reads).
    val_data
        Explicit validation dataset; by default a seeded fraction of ``data``.
    resume
        Continue the run in ``run_dir`` from its last checkpoint.
    extend
        On resume, new values of ``epochs`` and/or ``time_limit_minutes``
        (the run's other settings never change); saved to its config.yaml.
    stop_after_epochs
        Stop (as if killed) after this many epochs in this call; for tests.
    """
    import yaml

    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    if resume:
        config, split, state = _load_run(run_dir)
        if extend:
            unknown = sorted(set(extend) - {"epochs", "time_limit_minutes"})
            if unknown:
                raise ValueError(f"a resumed run can only extend epochs and time_limit_minutes, not {unknown}")
            config = config.updated(**extend)
            _write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        if data is None and images_dir is None:
            source = split.get("source", {})
            data, images_dir, masks_dir = source.get("data"), source.get("images_dir"), source.get("masks_dir")
            val_data = source.get("val_data")
    else:
        if (checkpoint_dir / "last.pt").exists():
            raise InputError(run_dir, "holds a run already; use --resume to continue it or choose another --out")
        state = None
    # The network comes first: a model that cannot be built (for example ImageNet
    # weights that cannot be downloaded) fails before any data is read or any file written.
    device = select_device(config.device)
    torch.manual_seed(config.seed)
    n_classes = TARGET_CLASSES[config.target]
    options = dict(config.model_options)
    if config.encoder_weights is not None and not resume:
        options["encoder_weights"] = config.encoder_weights
    try:
        network = build_model(config.model, in_channels=3, out_channels=n_classes, **options).to(device)
    except (TypeError, ValueError) as exc:
        raise InputError(None, f"cannot build model {config.model!r} with options {options}: {exc}") from None
    if config.init_from is not None and state is None:
        load_initial_weights(network, config.init_from)
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config)
    ema = None
    if config.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    evaluated = network if ema is None else ema.module
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    samples = load_dataset(data, images_dir=images_dir, masks_dir=masks_dir, progress=progress)
    if val_data is not None:
        val_samples = load_dataset(val_data, progress=progress)
        train_samples = samples
        split = {"train": [s.name for s in samples], "validation": [s.name for s in val_samples]}
    else:
        if not resume:
            try:
                train_names, val_names = split_names([s.name for s in samples], val_fraction=config.val_fraction,
                                                     seed=config.seed)
            except ValueError as exc:
                raise InputError(data or images_dir, f"{exc} (or give a validation dataset with --val-data)") from None
            split = {"train": train_names, "validation": val_names}
        by_name = {s.name: s for s in samples}
        missing = [n for n in split["train"] + split["validation"] if n not in by_name]
        if missing:
            raise InputError(data, f"sample {missing[0]!r} of the run's split is missing from the dataset")
        train_samples = [by_name[n] for n in split["train"]]
        val_samples = [by_name[n] for n in split["validation"]]

    split["source"] = {key: None if value is None else str(Path(value).resolve()) for key, value in
                       (("data", data), ("images_dir", images_dir), ("masks_dir", masks_dir), ("val_data", val_data))}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "snapshots").mkdir(exist_ok=True)
    checkpoint_dir.mkdir(exist_ok=True)
    if not resume:
        _write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        _write_text(run_dir / "split.json", json.dumps(split, indent=1) + "\n")

    history: list[dict[str, float]] = []
    start_epoch, best_metric, best_epoch, stale_epochs = 1, None, 0, 0
    if state is not None:
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if state.get("scaler"):  # absent from checkpoints of CPU runs and of older versions
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        history = [dict(row) for row in state["history"]]
        start_epoch = int(state["epoch"]) + 1
        best_metric, best_epoch = state["best_metric"], int(state["best_epoch"])
        stale_epochs = int(state["stale_epochs"])
        log(f"resuming {run_dir} after epoch {start_epoch - 1}")

    median_diameter = median_nucleus_diameter([s.labels for s in train_samples])
    train_prepared = prepare_samples(train_samples, config)
    val_prepared = prepare_samples(val_samples, config)
    samples_per_epoch = config.samples_per_epoch or len(train_prepared)
    sampler = EpochSampler(samples_per_epoch)
    loader = torch.utils.data.DataLoader(
        CropDataset(train_prepared, config), batch_size=config.batch_size, sampler=sampler,
        num_workers=config.num_workers, drop_last=samples_per_epoch >= config.batch_size,
        persistent_workers=config.num_workers > 0, pin_memory=device.type == "cuda",
    )
    postprocess = _default_postprocess(config)
    snapshot_indices = list(range(min(config.snapshot_images, len(val_prepared))))

    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_epoch)
    epochs_this_call = 0
    elapsed_before = sum(row["seconds"] for row in history)
    call_started = time.time()
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            if stale_epochs >= config.early_stopping_patience:
                break
            started = time.time()
            network.train()
            sampler.set_epoch(epoch)
            losses = []
            bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=not progress, leave=False)
            for images, targets, pixel_weights in bar:
                images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                pixel_weights = pixel_weights.to(device, non_blocking=True)
                with torch.autocast(device.type, enabled=use_amp):
                    loss = segmentation_loss(network(images), targets, config, pixel_weights)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update_parameters(network)
                losses.append(loss.item())
                bar.set_postfix(loss=f"{np.mean(losses):.4f}")
            result = validate(evaluated, val_prepared, val_samples, config, device, postprocess)
            monitored = {"dsb_score": result.dsb_score, "pixel_iou": result.pixel_iou,
                         "pixel_accuracy": result.pixel_accuracy, "loss": result.loss}[config.monitor]
            lr = optimizer.param_groups[0]["lr"]
            if config.lr_schedule == "plateau":
                scheduler.step(monitored)
            else:
                scheduler.step()
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                   "val_loss": result.loss, "val_pixel_iou": result.pixel_iou,
                   "val_pixel_accuracy": result.pixel_accuracy, "val_dsb_score": result.dsb_score,
                   "val_ap50": result.ap50, "lr": lr, "seconds": time.time() - started}
            history.append(row)
            improved = _is_better(monitored, best_metric, config.monitor)
            if improved:
                best_metric, best_epoch, stale_epochs = monitored, epoch, 0
            else:
                stale_epochs += 1
            _log_epoch(writer, row, result, val_prepared, snapshot_indices, run_dir, epoch)
            _write_metrics_csv(run_dir / "metrics.csv", history)
            state = {"version": CHECKPOINT_VERSION, "epoch": epoch, "model": network.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "ema": None if ema is None else ema.state_dict(),
                     "torch_rng": torch.get_rng_state(), "history": history, "best_metric": best_metric,
                     "best_epoch": best_epoch, "stale_epochs": stale_epochs}
            _save_checkpoint(state, checkpoint_dir / "last.pt")
            if improved:
                _save_checkpoint(state, checkpoint_dir / "best.pt")
                _save_model_folder(evaluated, config, split, row, postprocess, median_diameter, run_dir / MODEL_DIR)
            log(f"epoch {epoch}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
                f"pixel IoU {row['val_pixel_iou']:.3f}, DSB {row['val_dsb_score']:.3f}, AP50 {row['val_ap50']:.3f}, "
                f"lr {lr:.2g}, {row['seconds']:.0f}s" + (" *" if improved else ""))
            epochs_this_call += 1
            minutes = (elapsed_before + time.time() - call_started) / 60
            if config.time_limit_minutes is not None and minutes >= config.time_limit_minutes:
                log(f"time limit of {config.time_limit_minutes:g} minutes reached after epoch {epoch}")
                break
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                break
    finally:
        writer.close()
    if history:
        _plot_curves(history, run_dir / "curves.png")
    return TrainResult(run_dir, run_dir / MODEL_DIR, len(history), best_epoch,
                       float("nan") if best_metric is None else float(best_metric), history)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """The learning-rate schedule of ``config.lr_schedule``, stepped once per epoch.

    ``plateau`` steps with the monitored metric; ``cosine`` without argument.
    """
    if config.lr_schedule == "plateau":
        mode = "min" if config.monitor == "loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=config.lr_factor,
                                                          patience=config.lr_patience, min_lr=config.min_lr)
    floor = min(config.min_lr / config.lr, 1.0)

    def factor(epochs_done: int) -> float:
        progress = min(epochs_done / config.epochs, 1.0)  # flat at min_lr after the last epoch
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def load_initial_weights(network: nn.Module, name_or_path: str) -> None:
    """Copy the weights of a model folder (or shipped model name) into ``network`` for fine-tuning.

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
    try:
        network.load_state_dict(source.network.state_dict(), strict=True)
    except RuntimeError:
        described = f"{source.config.architecture} {source.config.architecture_options}, {source.config.target}"
        raise InputError(path, f"its network ({described}) differs from the one configured for training; "
                               "set model, model_options and target to match it") from None


def _default_postprocess(config: TrainConfig) -> dict[str, Any]:
    from nucseg.postprocess.watershed import PostprocessConfig

    return PostprocessConfig().to_dict()


def model_config_for(config: TrainConfig, *, split: dict, validation: dict, postprocess: dict,
                     median_diameter: float | None = None, name: str = "") -> ModelConfig:
    """The :class:`ModelConfig` of a network trained with ``config``."""
    return ModelConfig(
        architecture=config.model,
        architecture_options={k: v for k, v in config.model_options.items() if k != "encoder_weights"},
        in_channels=3,
        out_channels=TARGET_CLASSES[config.target],
        target=config.target,
        normalization=normalization_of(config),
        resize_to=config.resize_to,
        postprocess=postprocess,
        training=config.to_dict(),
        split={"train": list(split["train"]), "validation": list(split["validation"])},
        validation=validation,
        median_diameter=median_diameter,
        name=name,
    )


def _save_model_folder(network, config, split, row, postprocess, median_diameter, path: Path) -> None:
    validation = {k.removeprefix("val_"): float(v) for k, v in row.items() if k.startswith("val_")}
    validation["epoch"] = int(row["epoch"])
    save_model(network, model_config_for(config, split=split, validation=validation, postprocess=postprocess,
                                         median_diameter=median_diameter), path)


def _save_checkpoint(state: dict, path: Path) -> None:
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def _load_run(run_dir: Path) -> tuple[TrainConfig, dict, dict]:
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


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def _write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _log_epoch(writer, row, result: ValidationResult, val_prepared, snapshot_indices, run_dir: Path,
               epoch: int) -> None:
    for key, value in row.items():
        if key != "epoch":
            group = "val" if key.startswith("val_") else "train" if key.startswith("train_") else "misc"
            writer.add_scalar(f"{group}/{key.removeprefix('val_').removeprefix('train_')}", value, epoch)
    if not snapshot_indices:
        return
    from nucseg.io.images import write_png
    from nucseg.visualize import prediction_snapshot

    panels = []
    for i in snapshot_indices:
        sample = val_prepared[i]
        predicted = result.predictions[i]
        raw = sample.raw
        true_labels = sample.labels
        if predicted.shape != true_labels.shape:  # resize_to runs: snapshot on the network grid
            predicted = resize_labels(predicted, true_labels.shape)
            raw = resize_image(raw.astype(np.float32), true_labels.shape)
        panels.append(prediction_snapshot(raw, true_labels, predicted))
    width = max(p.shape[1] for p in panels)
    grid = np.concatenate([np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0))) for p in panels], axis=0)
    write_png(run_dir / "snapshots" / f"epoch_{epoch:03d}.png", grid)
    writer.add_image("val/snapshots", grid, epoch, dataformats="HWC")


def _plot_curves(history: list[dict[str, float]], path: Path) -> None:
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

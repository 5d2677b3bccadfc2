"""The training loop behind ``nucseg train``: setup, resume, one epoch after another, early stopping.

What a run reads and writes (its run folder, checkpoints, the model folders it
starts from and saves) is :mod:`nucseg.training.run_folder`. Every crop is a
pure function of (seed, epoch, index), which makes a resumed run continue
exactly where the killed one stopped.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nucseg.training.config import MIN_STEPS_PER_EPOCH, TrainConfig
from nucseg.datasets.sample import Sample
from nucseg.errors import InputError
from nucseg.postprocess.measure import median_nucleus_diameter
from nucseg.models.networks import build_model, select_device
from nucseg.training.data import (
    carried_quality_calibration,
    CropDataset,
    EpochSampler,
    initial_training_images_given,
    initial_training_names,
    load_training_data,
    prepare_samples,
    stored_split,
)
from nucseg.training.loss import segmentation_loss
from nucseg.models.outputs import output_layout
from nucseg.training.run_folder import (
    CHECKPOINT_VERSION,
    default_postprocess,
    load_initial_weights,
    load_run,
    log_settings_not_carried_over,
    MODEL_DIR,
    plot_curves,
    save_checkpoint,
    save_model_folder,
    tune_saved_model,
    write_config,
    write_metrics_csv,
    write_split,
)
from nucseg.training.validation import validate, ValidationResult


@dataclass
class TrainResult:
    """Summary of a finished (or early-stopped) run."""

    run_dir: Path
    model_dir: Path
    epochs_run: int
    best_epoch: int
    best_metric: float
    history: list[dict[str, float]]


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
    on_epoch: Callable[[dict[str, float], bool], bool | None] | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Train a network as configured and save the best model in ``run_dir/model``.

    Parameters
    ----------
    config
        The run's settings (ignored on resume: the run's saved config is used).
    run_dir
        Run folder; created, or continued with ``resume``.
    data, images_dir, masks_dir
        Training dataset (any layout :func:`nucseg.datasets.layouts.load_dataset` reads).
    val_data
        Explicit validation dataset; by default a seeded fraction of ``data``.
    resume
        Continue the run in ``run_dir`` from its last checkpoint.
    extend
        On resume, new values of ``epochs`` and/or ``time_limit_minutes``
        (the run's other settings never change); saved to its config.yaml.
    stop_after_epochs
        Stop (as if killed) after this many epochs in this call; for tests.
    on_epoch
        Called with each epoch's metrics row and whether it is the best so far, once saved; True stops the run.
    cancel
        Set (from any thread) to stop between batches: that epoch and the threshold tuning are dropped.
    """
    cancel = cancel or threading.Event()
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    if resume:
        config, split, state = load_run(run_dir)
        if extend:
            unknown = sorted(set(extend) - {"epochs", "time_limit_minutes"})
            if unknown:
                raise ValueError(f"a resumed run can only extend epochs and time_limit_minutes, not {unknown}")
            config = config.updated(**extend)
            write_config(run_dir, config)
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
    parts = _setup_training(config, device, fresh=state is None)
    if state is None and config.init_from is not None:
        load_initial_weights(parts.network, config.init_from)

    stored = stored_split(config.split_from) if state is None and config.split_from else None
    initial_train = initial_training_names(config.init_from) if state is None and stored is None else ()
    loaded = load_training_data(
        config,
        data=data,
        images_dir=images_dir,
        masks_dir=masks_dir,
        val_data=val_data,
        saved_split=split if resume else stored,
        initial_train=initial_train,
        progress=progress,
    )
    split, train_samples, val_samples = loaded.split, loaded.train, loaded.validation
    kept = initial_training_images_given(split, initial_train)
    if kept:  # said only when it matters: some of the images given were the initial model's training images
        log(
            f"{kept} of the images given were training images of {config.init_from}: they stay on the training "
            "side, never validated or tested on"
        )
    if state is None and config.init_from is not None:
        log_settings_not_carried_over(config.init_from, log)
        carried = carried_quality_calibration(config.init_from)
        log(
            f"quality flags: {carried['fitted_on']}"
            if carried
            else f"quality flags: {config.init_from} has no quality calibration, so the fine-tuned model flags every "
            "image 'unknown' (fit one with benchmarks/calibrate_quality.py)"
        )
    if stored is not None:
        log(
            f"the split of {config.split_from}: {len(stored['train'])} training, {len(stored['validation'])} "
            f"validation and {len(stored['test'])} test images"
        )
    if loaded.drawn:
        log(
            f"split by the seed {config.seed}: {', '.join(loaded.drawn)}, which the split of "
            f"{config.split_from} does not hold"
        )
    if loaded.left_out:
        log(
            f"the split of {config.split_from} also holds images of {', '.join(loaded.left_out)}, which this run "
            "does not train on: left out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "snapshots").mkdir(exist_ok=True)
    checkpoint_dir.mkdir(exist_ok=True)
    if not resume:
        write_config(run_dir, config)
        write_split(run_dir, split)

    progress_state = _Progress()
    if state is not None:
        progress_state = _restore(parts, state)
        log(f"resuming {run_dir} after epoch {progress_state.start_epoch - 1}")

    median_diameter = median_nucleus_diameter([s.labels for s in train_samples])
    train_prepared = prepare_samples(train_samples, config)
    samples_per_epoch = config.samples_per_epoch or max(len(train_prepared), config.batch_size * MIN_STEPS_PER_EPOCH)
    sampler = EpochSampler(samples_per_epoch)
    loader = torch.utils.data.DataLoader(
        CropDataset(train_prepared, config),
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=samples_per_epoch >= config.batch_size,
        persistent_workers=config.num_workers > 0,
        pin_memory=device.type == "cuda",
    )
    postprocess = default_postprocess(config)
    snapshot_indices = list(range(min(config.snapshot_images, len(val_samples))))

    from torch.utils.tensorboard import SummaryWriter

    history = progress_state.history
    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=progress_state.start_epoch)
    epochs_this_call = 0
    elapsed_before = sum(row["seconds"] for row in history)
    call_started = time.time()
    try:
        for epoch in range(progress_state.start_epoch, config.epochs + 1):
            if progress_state.stale_epochs >= config.early_stopping_patience:
                break
            started = time.time()
            sampler.set_epoch(epoch)
            losses = _train_one_epoch(
                parts,
                loader,
                config,
                device,
                description=f"epoch {epoch}/{config.epochs}",
                progress=progress,
                cancel=cancel,
            )
            if cancel.is_set():
                break
            result = validate(parts.evaluated, val_samples, config, postprocess, groups=loaded.groups)
            monitored = {
                "dsb_score": result.dsb_score,
                "pixel_iou": result.pixel_iou,
                "pixel_accuracy": result.pixel_accuracy,
                "loss": result.loss,
            }[config.monitor]
            lr = parts.optimizer.param_groups[0]["lr"]
            if config.lr_schedule == "plateau":
                parts.scheduler.step(monitored)
            else:
                parts.scheduler.step()
            row = {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "val_loss": result.loss,
                "val_pixel_iou": result.pixel_iou,
                "val_pixel_accuracy": result.pixel_accuracy,
                "val_dsb_score": result.dsb_score,
                "val_ap50": result.ap50,
                "lr": lr,
                "seconds": time.time() - started,
            }
            for dataset, scores in result.by_dataset.items():
                row[f"val_dsb_score_{dataset}"], row[f"val_ap50_{dataset}"] = scores["dsb_score"], scores["ap50"]
            history.append(row)
            improved = progress_state.record(epoch, monitored, config.monitor)
            _log_epoch(writer, row, result, val_samples, snapshot_indices, run_dir, epoch)
            write_metrics_csv(run_dir / "metrics.csv", history)
            state = _checkpoint_state(parts, progress_state, epoch)
            save_checkpoint(state, checkpoint_dir / "last.pt")
            if improved:
                save_checkpoint(state, checkpoint_dir / "best.pt")
                save_model_folder(
                    parts.evaluated, config, split, row, postprocess, median_diameter, run_dir / MODEL_DIR
                )
            log(
                f"epoch {epoch}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
                f"pixel IoU {row['val_pixel_iou']:.3f}, DSB {row['val_dsb_score']:.3f}, AP50 {row['val_ap50']:.3f}, "
                f"lr {lr:.2g}, {row['seconds']:.0f}s" + (" *" if improved else "")
            )
            epochs_this_call += 1
            if (on_epoch is not None and on_epoch(row, improved)) or cancel.is_set():
                break
            minutes = (elapsed_before + time.time() - call_started) / 60
            if config.time_limit_minutes is not None and minutes >= config.time_limit_minutes:
                log(f"time limit of {config.time_limit_minutes:g} minutes reached after epoch {epoch}")
                break
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                break
    finally:
        writer.close()
    if history:
        plot_curves(history, run_dir / "curves.png")
    if config.tune_thresholds and epochs_this_call and (run_dir / MODEL_DIR).is_dir() and not cancel.is_set():
        tune_saved_model(run_dir / MODEL_DIR, val_samples, log, groups=loaded.groups)
    best = progress_state.best_metric
    return TrainResult(
        run_dir,
        run_dir / MODEL_DIR,
        len(history),
        progress_state.best_epoch,
        float("nan") if best is None else float(best),
        history,
    )


@dataclass
class _TrainingParts:
    """The network and everything that updates it."""

    network: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any  # torch.optim.swa_utils.AveragedModel or None
    scaler: torch.amp.GradScaler
    use_amp: bool

    @property
    def evaluated(self) -> nn.Module:
        """The network that is validated and saved: the EMA average when there is one."""
        return self.network if self.ema is None else self.ema.module


@dataclass
class _Progress:
    """Where a run stands: its history and the early-stopping state."""

    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    start_epoch: int = 1
    best_metric: float | None = None
    best_epoch: int = 0
    stale_epochs: int = 0

    def record(self, epoch: int, value: float, monitor: str) -> bool:
        """Note the epoch's monitored value; True if it is the best so far."""
        if _is_better(value, self.best_metric, monitor):
            self.best_metric, self.best_epoch, self.stale_epochs = value, epoch, 0
            return True
        self.stale_epochs += 1
        return False


def _setup_training(config: TrainConfig, device: torch.device, *, fresh: bool) -> _TrainingParts:
    """Build the network, optimizer, schedule, EMA and gradient scaler of a run."""
    options = dict(config.model_options)
    if config.encoder_weights is not None and fresh:
        options["encoder_weights"] = config.encoder_weights
    try:
        network = build_model(
            config.model, in_channels=3, out_channels=output_layout(config.target).channels, **options
        ).to(device)
    except (TypeError, ValueError) as exc:
        raise InputError(None, f"cannot build model {config.model!r} with options {options}: {exc}") from None
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = None
    if config.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    use_amp = config.amp and device.type == "cuda"
    return _TrainingParts(
        network,
        optimizer,
        make_scheduler(optimizer, config),
        ema,
        torch.amp.GradScaler("cuda", enabled=use_amp),
        use_amp,
    )


def _restore(parts: _TrainingParts, state: dict) -> _Progress:
    """Load a checkpoint's weights, optimizer, schedule, EMA, scaler and RNG state; return its progress."""
    parts.network.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    if parts.ema is not None:
        parts.ema.load_state_dict(state["ema"])
    if state.get("scaler"):  # absent from checkpoints of CPU runs and of older versions
        parts.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    return _Progress(
        [dict(row) for row in state["history"]],
        int(state["epoch"]) + 1,
        state["best_metric"],
        int(state["best_epoch"]),
        int(state["stale_epochs"]),
    )


def _train_one_epoch(
    parts: _TrainingParts,
    loader,
    config: TrainConfig,
    device: torch.device,
    *,
    description: str,
    progress: bool,
    cancel: threading.Event | None = None,
) -> list[float]:
    """One pass over the epoch's crops (until ``cancel`` is set); the loss of every batch."""
    from tqdm.auto import tqdm

    parts.network.train()
    losses = []
    bar = tqdm(loader, desc=description, unit="batch", disable=not progress, leave=False)
    for images, targets, pixel_weights, distance in bar:
        if cancel is not None and cancel.is_set():
            break
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        pixel_weights = pixel_weights.to(device, non_blocking=True)
        distance = distance.to(device, non_blocking=True) if distance.numel() else None
        with torch.autocast(device.type, enabled=parts.use_amp):
            loss = segmentation_loss(parts.network(images), targets, config, pixel_weights, distance)
        parts.optimizer.zero_grad(set_to_none=True)
        parts.scaler.scale(loss).backward()
        if config.grad_clip > 0:
            parts.scaler.unscale_(parts.optimizer)
            nn.utils.clip_grad_norm_(parts.network.parameters(), config.grad_clip)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        if parts.ema is not None:
            parts.ema.update_parameters(parts.network)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses):.4f}")
    return losses


def _checkpoint_state(parts: _TrainingParts, progress_state: _Progress, epoch: int) -> dict:
    """Everything a resumed run needs, as tensors and plain values (loadable with ``weights_only=True``)."""
    return {
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "model": parts.network.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "ema": None if parts.ema is None else parts.ema.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": progress_state.history,
        "best_metric": progress_state.best_metric,
        "best_epoch": progress_state.best_epoch,
        "stale_epochs": progress_state.stale_epochs,
    }


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """The learning-rate schedule of ``config.lr_schedule``, stepped once per epoch.

    ``plateau`` steps with the monitored metric; ``cosine`` without argument,
    after ``warmup_epochs`` of linear warm-up.
    """
    if config.lr_schedule == "plateau":
        mode = "min" if config.monitor == "loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr
        )
    floor = min(config.min_lr / config.lr, 1.0)

    def factor(epochs_done: int) -> float:
        progress = min(epochs_done / config.epochs, 1.0)  # flat at min_lr after the last epoch
        warmup = min(1.0, (epochs_done + 1) / (config.warmup_epochs + 1))
        return warmup * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _log_epoch(
    writer, row, result: ValidationResult, val_samples: Sequence[Sample], snapshot_indices, run_dir: Path, epoch: int
) -> None:
    for key, value in row.items():
        if key != "epoch":
            group = "val" if key.startswith("val_") else "train" if key.startswith("train_") else "misc"
            writer.add_scalar(f"{group}/{key.removeprefix('val_').removeprefix('train_')}", value, epoch)
    if not snapshot_indices:
        return
    from nucseg.io.images import write_png
    from nucseg.visualize import prediction_snapshot

    panels = [
        prediction_snapshot(val_samples[i].image, val_samples[i].labels, result.predictions[i])
        for i in snapshot_indices
    ]
    width = max(p.shape[1] for p in panels)
    grid = np.concatenate([np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0))) for p in panels], axis=0)
    write_png(run_dir / "snapshots" / f"epoch_{epoch:03d}.png", grid)
    writer.add_image("val/snapshots", grid, epoch, dataformats="HWC")

"""Fine-tuning a model on a training project's corrected images, within a time budget, cancellable.

:func:`fine_tune` runs :func:`nucseg.training.loop.train` from the current
model (``init_from``, with the :data:`~nucseg.training.config.FINE_TUNING`
defaults) on every image of a :class:`~nucseg.datasets.project.TrainingProject`,
and validates on the same images: a user's first corrections are too few to
hold any out, so the score per epoch says how well the model fits them, not
how well it does on new images. The run is written under a temporary name and
only a run that kept an epoch is renamed into ``PROJECT/runs/NAME``, after its
model was published as ``PROJECT/models/NAME`` (a complete model folder with a
``MODEL_CARD.md`` that says what it was fine-tuned from and on). A crash or a
cancel before the first epoch ends leaves the project as it was; the images
and masks are only ever read. The same training from the command line (the
run's ``config.yaml`` holds every setting, ``init_from`` included)::

    nucseg train --config PROJECT/runs/NAME/config.yaml --data PROJECT --val-data PROJECT --out RUN
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nucseg.datasets.project import TrainingProject
from nucseg.errors import InputError
from nucseg.io.atomic import atomic_directory, OutputExistsError
from nucseg.models.folder import CARD_FILE, load_model_folder, read_model_config, rewrite_model_config
from nucseg.models.registry import DEFAULT_MODEL, REGISTERED_MODELS, resolve_model_path
from nucseg.training.config import resolve_config
from nucseg.training.loop import train
from nucseg.training.run_folder import MODEL_DIR

#: Training crops of a project's run, whatever its size (256-pixel crops, 8 a batch): about 5 minutes for the
#: default model on 2 CPU cores; the time budget ends a run that would take longer.
PROJECT_CROPS = 512


def project_settings(images: int) -> dict[str, Any]:
    """Settings of a fine-tuning run on ``images`` corrected images, over :data:`~nucseg.training.config.FINE_TUNING`.

    :data:`PROJECT_CROPS` crops in epochs of 128 crops per two images (so
    that validating on every image each epoch stays a small part of the
    time), one epoch of warm-up, a weight average that forgets the initial
    weights within those few steps (decay 0.9 per step, not 0.99), and no
    worker processes, so that it runs in a GUI's thread.
    """
    samples_per_epoch = 128 * max(1, -(-images // 2))
    return {
        "epochs": max(3, round(PROJECT_CROPS / samples_per_epoch)),
        "samples_per_epoch": samples_per_epoch,
        "warmup_epochs": 1,
        "ema_decay": 0.9,
        "num_workers": 0,
    }


@dataclass(frozen=True)
class EpochReport:
    """Where a fine-tuning run stands after an epoch.

    Attributes
    ----------
    epoch, epochs
        The epoch just finished (from 1) and the most the run will do.
    seconds, budget_seconds
        Time since the run started, and the budget (None: no budget).
    ap50, dsb_score
        Scores of this epoch's model on the project's images (the training images).
    train_loss
        Mean training loss of the epoch.
    best
        True if this epoch's model is the best so far (the one kept).
    """

    epoch: int
    epochs: int
    seconds: float
    budget_seconds: float | None
    ap50: float
    dsb_score: float
    train_loss: float
    best: bool

    @property
    def fraction(self) -> float:
        """How far the run has come, 0 to 1: epochs or budget, whichever runs out first."""
        used = self.epoch / self.epochs
        return min(1.0, max(used, self.seconds / self.budget_seconds if self.budget_seconds else 0.0))


@dataclass(frozen=True)
class FineTuneResult:
    """What a fine-tuning run left.

    Attributes
    ----------
    model_dir
        The published model folder, or None when no epoch finished (cancelled at once).
    run_dir
        The run folder (metrics.csv, curves, checkpoints), or None with ``model_dir``.
    base_model
        The model it started from (a shipped model's name or a folder).
    images
        The names of the project's images it trained on.
    epochs_run, best_epoch, best_ap50
        Epochs finished, the kept one, and its AP@0.5 on the project's images.
    seconds
        Wall-clock time of the whole call, threshold tuning included.
    cancelled
        True if ``cancel`` stopped it (the best model so far was kept; its thresholds were not re-tuned).
    """

    model_dir: Path | None
    run_dir: Path | None
    base_model: str
    images: list[str]
    epochs_run: int
    best_epoch: int
    best_ap50: float
    seconds: float
    cancelled: bool


class _NothingKept(Exception):
    """Raised inside the run's temporary folder to discard it."""


def fine_tune(
    project: TrainingProject | str | Path,
    *,
    base_model: str | Path | None = None,
    minutes: float | None = 5.0,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    cancel: threading.Event | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> FineTuneResult:
    """Fine-tune ``base_model`` on every image of ``project`` and publish the best model as ``project/models/NAME``.

    Parameters
    ----------
    project
        The training project (or its folder).
    base_model
        A shipped model's name or a model folder; None is the default model
        (:data:`nucseg.models.registry.DEFAULT_MODEL`).
    minutes
        Time budget of the training: no epoch starts that the last one's
        duration says would end past it (threshold tuning, a few seconds,
        comes after). None: only the epochs limit.
    name
        Name of the run and of the model folder; by default the time (``20261207-031500``).
    settings
        :class:`~nucseg.training.config.TrainConfig` settings over
        :func:`project_settings` (e.g. ``{"epochs": 2, "device": "cpu"}``).
    on_epoch
        Called after every epoch (from the training thread) with an :class:`EpochReport`.
    cancel
        Set from another thread to stop between batches; the best model so far is kept.
    log
        Receives the run's one-line messages.

    Raises
    ------
    InputError
        The project holds no corrected image, or a run or model of that name exists.
    ModelError
        ``base_model`` cannot be loaded.
    """
    started = time.monotonic()
    project = project if isinstance(project, TrainingProject) else TrainingProject(Path(project))
    base = str(base_model) if base_model is not None else DEFAULT_MODEL
    init_from = base if base in REGISTERED_MODELS else str(Path(base).resolve())
    examples = project.examples()
    if not examples:
        raise InputError(project.folder, "holds no corrected image yet: add one to the training set first")
    name = name or time.strftime("%Y%m%d-%H%M%S")
    run_path, model_path = project.runs_dir / name, project.models_dir / name
    for path in (run_path, model_path):
        if path.exists():
            raise OutputExistsError(path, "exists: choose another name")
    overrides = {
        **project_settings(len(examples)),
        **(settings or {}),
        "init_from": init_from,
        "time_limit_minutes": minutes,
    }
    config = resolve_config(overrides=overrides)
    budget = None if minutes is None else 60.0 * minutes
    last_epoch_end = [0.0]

    def epoch_done(row: dict[str, float], best: bool) -> bool:
        elapsed = time.monotonic() - started
        if on_epoch is not None:
            on_epoch(
                EpochReport(
                    int(row["epoch"]),
                    config.epochs,
                    elapsed,
                    budget,
                    float(row["val_ap50"]),
                    float(row["val_dsb_score"]),
                    float(row["train_loss"]),
                    best,
                )
            )
        duration, last_epoch_end[0] = elapsed - last_epoch_end[0], elapsed
        return budget is not None and elapsed + duration > budget  # the next epoch would end past the budget

    try:
        with atomic_directory(run_path, overwrite=False) as staging:
            result = train(
                config,
                staging,
                data=project.folder,
                val_data=project.folder,
                progress=False,
                log=log,
                on_epoch=epoch_done,
                cancel=cancel,
            )
            if not (staging / MODEL_DIR).is_dir():
                raise _NothingKept
            cancelled = cancel is not None and cancel.is_set()
            best_row = next(row for row in result.history if row["epoch"] == result.best_epoch)
            outcome = FineTuneResult(
                model_path,
                run_path,
                base,
                [e.name for e in examples],
                result.epochs_run,
                result.best_epoch,
                float(best_row["val_ap50"]),
                0.0,
                cancelled,
            )
            _publish(staging / MODEL_DIR, model_path, outcome, project, minutes)
    except _NothingKept:
        return FineTuneResult(
            None,
            None,
            base,
            [e.name for e in examples],
            0,
            0,
            float("nan"),
            time.monotonic() - started,
            cancel is not None and cancel.is_set(),
        )
    return dataclasses.replace(outcome, seconds=time.monotonic() - started)


def _publish(
    trained: Path, target: Path, outcome: FineTuneResult, project: TrainingProject, minutes: float | None
) -> None:
    """Copy the run's model folder to ``target``, named and with its card, checked before it appears."""
    with atomic_directory(target, overwrite=False) as staging:
        shutil.copytree(trained, staging, dirs_exist_ok=True)
        config, _ = read_model_config(staging)
        config = dataclasses.replace(config, name=f"{project.folder.name}/{target.name}")
        rewrite_model_config(staging, config)
        (staging / CARD_FILE).write_text(model_card(config, outcome, project, minutes))
        load_model_folder(staging)  # weights, checksum and architecture verified before the folder appears


def model_card(config, outcome: FineTuneResult, project: TrainingProject, minutes: float | None) -> str:
    """The ``MODEL_CARD.md`` of a fine-tuned model: what it started from, what it saw, how to repeat it."""
    base_path = resolve_model_path(outcome.base_model)
    base_card = base_path / CARD_FILE
    training = config.training
    ending = (
        "cancelled: the best epoch so far was kept and the thresholds were not re-tuned"
        if outcome.cancelled
        else "thresholds re-tuned on the same images"
        if training.get("tune_thresholds")
        else "finished"
    )
    command = (
        f"nucseg train --config {project.runs_dir / outcome.model_dir.name / 'config.yaml'} "
        f"--data {project.folder} --val-data {project.folder} --out RUN"
    )
    lines = [
        f"# nucseg model {config.name}",
        "",
        f"Fine-tuned by nucseg {config.nucseg_version or ''} from `{outcome.base_model}` ({base_path}) on the "
        f"{len(outcome.images)} corrected images of the training project `{project.folder}`: "
        + ", ".join(f"`{n}`" for n in outcome.images)
        + ".",
        "",
        f"{outcome.epochs_run} epochs of at most {training['epochs']} "
        f"({'no time budget' if minutes is None else f'a budget of {minutes:g} minutes'}); the kept epoch, "
        f"{outcome.best_epoch}, has AP@0.5 {outcome.best_ap50:.3f} on those images. They are also its training "
        f"images, so this measures the fit to the corrections, not accuracy on new images. Run {ending}.",
        "",
        "## Licence",
        "",
        f"The weights derive from `{outcome.base_model}`'s: its terms apply"
        + (f" (see {base_card})." if base_card.is_file() else "."),
        "",
        "## Repeat it",
        "",
        "```",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)

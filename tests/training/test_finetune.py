"""Fine-tuning on a training project: the published model, its card, the report per epoch, budget, cancel, crash."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from nucseg.datasets.project import TrainingProject
from nucseg.errors import InputError
from nucseg.inference.model import load_model
from nucseg.io.atomic import OutputExistsError
from nucseg.models.folder import read_model_config
from nucseg.training.finetune import CARD_FILE, fine_tune

pytestmark = pytest.mark.usefixtures("training_environment")
#: A few seconds an epoch on one core: 64-pixel crops, 8 a epoch.
TINY = {"crop_size": 64, "batch_size": 4, "samples_per_epoch": 8, "epochs": 2, "device": "cpu", "snapshot_images": 1}


@pytest.fixture
def project(dsb_samples, tmp_path):
    project = TrainingProject(tmp_path / "project")
    for key in ("00071198", "0280fa8f"):
        project.add(dsb_samples[key].image, dsb_samples[key].labels, name=key)
    return project


def _corrections(project):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in ("images", "masks")
        for p in sorted((project.folder / folder).iterdir())
    }


def _visible(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def test_fine_tuning_publishes_a_model_that_says_what_it_was_tuned_on(project, model_dir, dsb_samples):
    before = _corrections(project)
    reports = []
    result = fine_tune(
        project, base_model=model_dir, minutes=None, name="first", settings=TINY, on_epoch=reports.append
    )
    assert result.model_dir == project.models_dir / "first" and result.run_dir == project.runs_dir / "first"
    assert [r.epoch for r in reports] == [1, 2] and all(0.0 <= r.ap50 <= 1.0 for r in reports)
    assert reports[-1].fraction == 1.0 and result.epochs_run == 2 and not result.cancelled
    assert result.best_ap50 == max(r.ap50 for r in reports if r.best)
    config, _ = read_model_config(result.model_dir)
    assert config.name == "project/first" and config.training["init_from"] == str(model_dir.resolve())
    assert config.split["train"] == ["00071198", "0280fa8f"]
    card = (result.model_dir / CARD_FILE).read_text()
    assert str(model_dir) in card and "`00071198`, `0280fa8f`" in card and "runs/first/config.yaml" in card
    assert (result.run_dir / "metrics.csv").is_file()
    labels = load_model(result.model_dir).segment(dsb_samples["00071198"].image).labels
    assert labels.shape == dsb_samples["00071198"].labels.shape
    assert _corrections(project) == before, "the corrections are only read"

    # The next round starts from the published model; a name in use is refused.
    with pytest.raises(OutputExistsError):
        fine_tune(project, base_model=result.model_dir, name="first", settings=TINY)


def test_cancel_keeps_the_best_epoch_so_far_and_skips_the_tuning(project, model_dir):
    cancel = threading.Event()
    result = fine_tune(
        project,
        base_model=model_dir,
        name="cancelled",
        settings={**TINY, "epochs": 5},
        on_epoch=lambda report: cancel.set(),
        cancel=cancel,
    )
    assert result.cancelled and result.epochs_run == 1 and result.best_epoch == 1
    assert "not re-tuned" in (result.model_dir / CARD_FILE).read_text()
    config, _ = read_model_config(result.model_dir)
    assert "tuning" not in config.validation


def test_cancel_before_the_first_epoch_ends_leaves_the_project_as_it_was(project, model_dir):
    before = _corrections(project)
    cancel = threading.Event()
    cancel.set()
    result = fine_tune(project, base_model=model_dir, settings=TINY, cancel=cancel)
    assert result.cancelled and result.model_dir is None and result.epochs_run == 0
    assert _visible(project.runs_dir) == [] and _visible(project.models_dir) == []
    assert _corrections(project) == before


def test_a_crash_while_training_keeps_the_last_good_model(project, model_dir, dsb_samples):
    good = fine_tune(project, base_model=model_dir, name="good", settings={**TINY, "epochs": 1})

    def crash(report):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        fine_tune(project, base_model=good.model_dir, name="crashed", settings=TINY, on_epoch=crash)
    assert _visible(project.runs_dir) == ["good"] and _visible(project.models_dir) == ["good"]
    assert not any(p.name.startswith(".") for p in project.folder.iterdir())
    assert load_model(good.model_dir).segment(dsb_samples["0280fa8f"].image).labels.max() >= 0


def test_the_time_budget_stops_before_an_epoch_that_would_overrun_it(project, model_dir):
    result = fine_tune(project, base_model=model_dir, minutes=1e-4, name="quick", settings={**TINY, "epochs": 4})
    assert result.epochs_run == 1 and result.model_dir.is_dir()


def test_an_empty_project_is_refused(tmp_path, model_dir):
    with pytest.raises(InputError, match="no corrected image"):
        fine_tune(TrainingProject(tmp_path), base_model=model_dir, settings=TINY)
    assert np.array_equal(sorted(p.name for p in tmp_path.iterdir()), [])

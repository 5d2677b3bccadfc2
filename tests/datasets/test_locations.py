"""Tests of nucseg.datasets.locations: the one place that says where data lives."""

from __future__ import annotations

from pathlib import Path

from nucseg.datasets.locations import DATA_DIR_VARIABLE, data_root, dataset_name, dataset_path, sample_image_paths

REPOSITORY = Path(__file__).resolve().parents[2]


def test_the_data_root_is_shared_data_beside_the_repository_unless_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_VARIABLE, raising=False)
    assert data_root() == REPOSITORY.parent / "shared" / "data"
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(tmp_path))
    assert data_root() == tmp_path
    assert dataset_path("dsb2018/stage1_train") == tmp_path / "dsb2018" / "stage1_train"


def test_datasets_are_recorded_by_name_never_by_machine_path(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(tmp_path))
    (tmp_path / "gbm40_he").mkdir()
    assert dataset_name(tmp_path / "gbm40_he") == "gbm40_he"
    elsewhere = tmp_path.parent / "my annotations"
    assert dataset_name(elsewhere) == "my annotations"


def test_the_shipped_samples_are_three_real_images():
    names = [path.stem.split("_")[0] for path in sample_image_paths()]
    assert names == ["brightfield", "fluorescence", "histology"]
    assert all(path.stat().st_size > 10_000 for path in sample_image_paths())

"""Tests of nucseg.datasets.mixture: several datasets, their folders and qualified image names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nucseg.datasets.mixture import (
    dataset_folders,
    dataset_key,
    load_mixture,
    qualified_name,
    resolve_dataset_path,
    split_qualified,
)
from nucseg.errors import InputError

DSB_DIR = Path(__file__).parents[1] / "data" / "dsb2018"


def test_names_are_qualified_by_dataset():
    assert qualified_name("gbm40_he", "img_07") == "gbm40_he/img_07"
    assert split_qualified("gbm40_he/img_07") == ("gbm40_he", "img_07")
    with pytest.raises(ValueError, match="not a <dataset>/<image> name"):
        split_qualified("img_07")
    assert dataset_key({"path": "dsb2018/stage1_train"}) == "stage1_train"
    assert dataset_folders([{"path": "dsb2018/stage1_train", "name": "dsb2018"}, {"path": "x/gbm40_he"}]) == {
        "dsb2018": "dsb2018/stage1_train",
        "gbm40_he": "x/gbm40_he",
    }


def test_relative_folders_are_found_under_the_data_root(tmp_path, monkeypatch):
    shutil.copytree(DSB_DIR, tmp_path / "root" / "sets" / "dsb")
    monkeypatch.setenv("NUCSEG_DATA_DIR", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    assert resolve_dataset_path("sets/dsb") == tmp_path / "root" / "sets" / "dsb"
    with pytest.raises(InputError, match="does not exist here or under the data root"):
        resolve_dataset_path("sets/missing")


def test_load_mixture_renames_and_selects(tmp_path):
    shutil.copytree(DSB_DIR, tmp_path / "a")
    shutil.copytree(DSB_DIR, tmp_path / "b")
    folders = {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}
    loaded = load_mixture(folders)
    assert list(loaded) == ["a", "b"] and all(len(samples) == 4 for samples in loaded.values())
    assert all(s.name.startswith("a/") for s in loaded["a"]) and all(s.name.startswith("b/") for s in loaded["b"])
    wanted = [loaded["b"][2].name, loaded["b"][0].name]
    only = load_mixture(folders, wanted)
    assert list(only) == ["b"] and [s.name for s in only["b"]] == wanted
    with pytest.raises(InputError, match="belongs to no configured dataset"):
        load_mixture(folders, ["c/x"])


def test_equal_dataset_weights_give_every_dataset_the_same_total():
    from nucseg.datasets.mixture import equal_dataset_weights

    weights = equal_dataset_weights(["a", "b", "a", "a"])
    assert weights == [1 / 3, 1.0, 1 / 3, 1 / 3] and sum(w for w, d in zip(weights, "abaa") if d == "a") == 1.0

"""Tests of nucseg.datasets.pack: a packed copy gives the same names, labels, network input and split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nucseg.datasets.kinds import raw_image_kind
from nucseg.datasets.layouts import detect_layout, load_dataset
from nucseg.datasets.pack import compact_image, pack_dataset, pack_datasets
from nucseg.errors import InputError
from nucseg.preprocess.normalize import prepare_image
from nucseg.training.data import split_dataset

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "dsb2018"


def _by_name(root: Path) -> dict:
    return {sample.name: sample for sample in load_dataset(root, cache_dir=False)}


def test_compact_image_drops_only_what_carries_nothing(dsb_samples):
    gray_rgba = dsb_samples["00071198"].image  # fluorescence stored as gray RGBA, alpha 255
    assert gray_rgba.ndim == 3 and compact_image(gray_rgba).ndim == 2
    assert np.array_equal(compact_image(gray_rgba), gray_rgba[:, :, 0])
    he = dsb_samples["00ae65c1"].image
    assert np.array_equal(compact_image(he), he[:, :, :3])  # colour stays colour
    translucent = gray_rgba.copy()
    translucent[0, 0, 3] = 10
    assert compact_image(translucent) is translucent  # an alpha that says something stays
    gray = gray_rgba[:, :, 0]
    assert compact_image(gray) is gray


def test_a_packed_dataset_has_the_same_names_labels_network_input_kinds_and_split(tmp_path):
    packed = pack_dataset(FIXTURES, tmp_path / "packed")
    assert packed.images == 4 and packed.lossy_images == 0 and packed.bytes > 0
    assert detect_layout(tmp_path / "packed") == "paired"
    original, copy = _by_name(FIXTURES), _by_name(tmp_path / "packed")
    assert sorted(copy) == sorted(original)
    for name, sample in original.items():
        assert np.array_equal(copy[name].labels, sample.labels)
        assert np.array_equal(prepare_image(copy[name].image), prepare_image(sample.image))
        assert raw_image_kind(copy[name].image) == raw_image_kind(sample.image)
    split = {
        name: split_dataset(sorted(samples), val_fraction=0.25, test_fraction=0.25, seed=3)
        for name, samples in (("original", original), ("copy", copy))
    }
    assert split["original"] == split["copy"]


def test_jpeg_packing_is_lossy_for_images_only(tmp_path):
    packed = pack_dataset(FIXTURES, tmp_path / "packed", jpeg_quality=95)
    assert packed.lossy_images == 4
    assert sorted(p.suffix for p in (tmp_path / "packed" / "images").iterdir()) == [".jpg"] * 4
    original, copy = _by_name(FIXTURES), _by_name(tmp_path / "packed")
    for name, sample in original.items():
        assert np.array_equal(copy[name].labels, sample.labels)
        difference = np.abs(prepare_image(copy[name].image) - prepare_image(sample.image)).mean()
        assert 0 < difference < 0.03  # about 1 % of the normalized range
    exact = pack_dataset(FIXTURES, tmp_path / "exact").bytes
    assert packed.bytes < exact


def test_packing_refuses_to_overwrite_and_bad_settings(tmp_path):
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / "mine.txt").write_text("the user's file")
    with pytest.raises(InputError, match="exists"):
        pack_dataset(FIXTURES, tmp_path / "packed")
    assert (tmp_path / "packed" / "mine.txt").read_text() == "the user's file"
    with pytest.raises(InputError, match="JPEG quality"):
        pack_dataset(FIXTURES, tmp_path / "other", jpeg_quality=101)
    with pytest.raises(InputError, match="does not exist"):
        pack_datasets(["no/such/set"], tmp_path / "root")
    assert not (tmp_path / "other").exists() and not (tmp_path / "root").exists()


def test_pack_command_packs_a_configs_datasets_where_the_data_root_has_them(tmp_path, monkeypatch, capsys):
    from nucseg.cli import main
    from nucseg.datasets.mixture import load_mixture

    monkeypatch.setenv("NUCSEG_DATA_DIR", str(FIXTURES.parent))
    config = tmp_path / "run.yaml"
    config.write_text("datasets:\n  - {path: dsb2018, weight: 1.0}\n")
    assert main(["pack", "--config", str(config), "--out", str(tmp_path / "packed"), "--jpeg-quality", "90"]) == 0
    out = capsys.readouterr().out
    assert "4 images, 4 of them JPEG" in out and f"NUCSEG_DATA_DIR={tmp_path / 'packed'}" in out
    monkeypatch.setenv("NUCSEG_DATA_DIR", str(tmp_path / "packed"))
    mixture = load_mixture({"dsb2018": "dsb2018"})  # the config's path, now under the packed root
    assert sorted(s.name for s in mixture["dsb2018"]) == sorted(f"dsb2018/{name}" for name in _by_name(FIXTURES))
    assert main(["pack", "--out", str(tmp_path / "nothing")]) == 2
    assert "name the datasets to pack" in capsys.readouterr().err

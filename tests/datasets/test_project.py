"""A training project folder: corrections of real DSB2018 images stored in the paired layout that training reads."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from nucseg.datasets.layouts import load_dataset
from nucseg.datasets.project import example_name, TrainingProject
from nucseg.errors import InputError
from nucseg.io.atomic import OutputExistsError
from nucseg.io.images import read_image, read_labels


def _digest(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_added_corrections_are_a_dataset_that_training_reads(dsb_samples, tmp_path):
    project = TrainingProject(tmp_path / "project")
    assert project.examples() == []
    fluorescence, histology = dsb_samples["00071198"], dsb_samples["00ae65c1"]
    added = [
        project.add(s.image, s.labels, name=example_name(f"{key} nuclei.png"))
        for key, s in (("00071198", fluorescence), ("00ae65c1", histology))
    ]
    assert [e.name for e in added] == ["00071198_nuclei", "00ae65c1_nuclei"]
    assert [e.name for e in project.examples()] == ["00071198_nuclei", "00ae65c1_nuclei"]
    assert all(e.image_path.suffix == ".png" and e.mask_path.suffix == ".tif" for e in added)
    loaded = {s.name: s for s in load_dataset(project.folder, cache_dir=False)}
    assert np.array_equal(loaded["00071198_nuclei"].labels, fluorescence.labels)
    assert np.array_equal(loaded["00ae65c1_nuclei"].image, histology.image[:, :, :3])
    assert not any(p.name.startswith(".") for p in project.folder.rglob("*")), "no temporary file is left"


def test_an_earlier_correction_is_never_replaced_without_overwrite(dsb_samples, tmp_path):
    project = TrainingProject(tmp_path)
    sample = dsb_samples["00071198"]
    project.add(sample.image, sample.labels, name="cells")
    before = _digest(tmp_path)
    edited = sample.labels.copy()
    edited[edited == edited.max()] = 0
    with pytest.raises(OutputExistsError, match="earlier correction"):
        project.add(sample.image, edited, name="cells")
    assert _digest(tmp_path) == before
    # Replaced on request, also by an image of another file type (16-bit data goes to TIFF).
    wide = sample.image[:, :, 0].astype(np.float32) * 3.5
    example = project.add(wide, edited, name="cells", overwrite=True)
    assert example.image_path.suffix == ".tif" and sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "cells.tif"
    ]
    assert np.array_equal(read_labels(example.mask_path), edited)
    assert np.allclose(read_image(example.image_path), wide)


def test_a_correction_that_cannot_be_stored_leaves_the_project_as_it_was(dsb_samples, tmp_path):
    project = TrainingProject(tmp_path)
    sample = dsb_samples["00071198"]
    project.add(sample.image, sample.labels, name="first")
    before = _digest(tmp_path)
    with pytest.raises(InputError, match="do not cover the image"):
        project.add(sample.image, sample.labels[:-1], name="second")
    with pytest.raises(InputError, match="expected integers or floating point"):
        project.add(sample.image[:, :, 0] > 100, sample.labels, name="second")
    with pytest.raises(InputError, match="non-negative integers"):
        project.add(sample.image, sample.labels.astype(float), name="second")
    assert _digest(tmp_path) == before


def test_a_folder_that_is_not_a_project_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="needs both images/ and masks/"):
        TrainingProject(tmp_path).examples()


def test_example_names_are_safe_file_names():
    assert example_name("cells 1.tif nuclei") == "cells_1.tif_nuclei"
    assert example_name("plate/A01 (DAPI).tif") == "plate_A01_DAPI"
    with pytest.raises(ValueError):
        example_name("...")

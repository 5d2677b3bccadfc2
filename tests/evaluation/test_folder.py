"""Tests of nucseg.evaluation.folder and ``nucseg evaluate`` on the real DSB2018 fixtures."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from nucseg.cli import main
from nucseg.datasets.layouts import load_dataset
from nucseg.errors import InputError
from nucseg.evaluation.folder import (
    CSV_COLUMNS,
    evaluate_folder,
    find_prediction,
    format_summary,
    write_csv,
    write_json,
)
from nucseg.io.images import write_labels, write_png

FIXTURES = Path(__file__).parents[1] / "data" / "dsb2018"
KAGGLE_THRESHOLDS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
JSON_KEYS = {"n_images", "dsb_score", "ap50", "ap75", "f1_50", "pq", "pixel_iou", "n_missing"}


@pytest.fixture(scope="module")
def samples():
    return load_dataset(FIXTURES, cache_dir=False)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """The CLI uses the default decode cache; keep it out of the user's home."""
    monkeypatch.setenv("NUCSEG_CACHE_DIR", str(tmp_path / "cache"))


def reference_dsb_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """Kaggle DSB2018 score computed plainly: a boolean mask per object, greedy matching at IoU > t.

    Only pairs that overlap are looked at (the others have IoU 0), which keeps
    the 1024x1024 fixture fast.
    """
    true_ids = [v for v in np.unique(truth) if v]
    pred_ids = [v for v in np.unique(pred) if v]
    if not true_ids and not pred_ids:
        return 1.0
    ious = np.zeros((len(true_ids), len(pred_ids)))
    for i, t in enumerate(true_ids):
        true_mask = truth == t
        for p in np.unique(pred[true_mask]):
            if p:
                pred_mask = pred == p
                ious[i, pred_ids.index(p)] = (true_mask & pred_mask).sum() / (true_mask | pred_mask).sum()
    per_threshold = []
    for threshold in KAGGLE_THRESHOLDS:
        used: set[int] = set()
        for i in range(len(true_ids)):
            candidates = [j for j in range(len(pred_ids)) if j not in used and ious[i, j] > threshold]
            if candidates:
                used.add(max(candidates, key=lambda j: ious[i, j]))
        tp = len(used)
        per_threshold.append(tp / (len(true_ids) + len(pred_ids) - tp))
    return float(np.mean(per_threshold))


def degraded(labels: np.ndarray, seed: int) -> np.ndarray:
    """GT with every third object removed, the rest eroded by one pixel, and one of them shifted."""
    rng = np.random.default_rng(seed)
    pred = labels.copy()
    ids = np.unique(labels[labels > 0])
    pred[np.isin(pred, ids[::3])] = 0
    pred[find_boundaries(pred, mode="inner")] = 0
    moved = rng.choice(ids)
    pred[pred == moved] = 0
    pred[np.roll(labels == moved, 4, axis=1)] = moved
    return pred


def write_predictions(folder: Path, predictions: dict[str, np.ndarray]) -> None:
    """Write predictions in the three accepted file name forms, in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, labels) in enumerate(predictions.items()):
        if i % 3 == 0:
            write_labels(folder / f"{name}_labels.tif", labels)
        elif i % 3 == 1:
            write_labels(folder / f"{name}.tif", labels)
        else:
            write_png(folder / f"{name}.png", labels.astype(np.uint8))


# ----------------------------------------------------------------- evaluate_folder


def test_ground_truth_as_prediction_scores_one(tmp_path, samples):
    write_predictions(tmp_path / "pred", {s.name: s.labels for s in samples})
    report = evaluate_folder(tmp_path / "pred", FIXTURES, cache_dir=False)
    summary = report.summary
    assert summary.n_images == 4 and report.missing == []
    assert all(getattr(summary, k) == 1.0 for k in ("dsb_score", "ap50", "ap75", "f1_50", "pq", "pixel_iou"))
    assert summary.n_true == summary.n_pred == sum(len(np.unique(s.labels)) - 1 for s in samples)
    assert [r.name for r in report.images] == [s.name for s in samples]


def test_degraded_prediction_matches_independent_reference(tmp_path, samples):
    predictions = {s.name: degraded(s.labels, i) for i, s in enumerate(samples)}
    write_predictions(tmp_path / "pred", predictions)
    report = evaluate_folder(tmp_path / "pred", FIXTURES, cache_dir=False)
    expected = {s.name: reference_dsb_score(s.labels, predictions[s.name]) for s in samples}
    assert all(abs(r.scores.dsb_score - expected[r.name]) < 1e-6 for r in report.images)
    assert abs(report.summary.dsb_score - np.mean(list(expected.values()))) < 1e-6
    assert 0.05 < report.summary.dsb_score < 0.95  # a real, partial score
    assert all(r.scores.n_pred < r.scores.n_true for r in report.images)


def test_missing_prediction_is_scored_empty_and_reported(tmp_path, samples):
    absent = samples[1].name
    write_predictions(tmp_path / "pred", {s.name: s.labels for s in samples if s.name != absent})
    with pytest.warns(UserWarning, match=f"no prediction for 1 of 4 images.*{absent}"):
        report = evaluate_folder(tmp_path / "pred", FIXTURES, cache_dir=False)
    assert report.missing == [absent]
    row = next(r for r in report.images if r.name == absent)
    assert row.missing and row.prediction_path is None
    assert (row.scores.n_pred, row.scores.dsb_score, row.scores.pixel_iou) == (0, 0.0, 0.0)
    assert report.summary.dsb_score == pytest.approx(3 / 4)
    assert absent in format_summary(report)


def test_no_prediction_at_all_is_an_error(tmp_path):
    (tmp_path / "pred").mkdir()
    with pytest.raises(InputError, match="no prediction for any of the 4"):
        evaluate_folder(tmp_path / "pred", FIXTURES, cache_dir=False)


def test_labels_tif_is_preferred_over_other_names(tmp_path, samples):
    sample = samples[0]
    folder = tmp_path / "pred"
    write_png(folder / f"{sample.name}.png", np.zeros(sample.labels.shape, np.uint8))
    assert find_prediction(folder, sample.name) == folder / f"{sample.name}.png"
    write_labels(folder / f"{sample.name}.tif", np.zeros_like(sample.labels))
    assert find_prediction(folder, sample.name) == folder / f"{sample.name}.tif"
    write_labels(folder / f"{sample.name}_labels.tif", sample.labels)
    assert find_prediction(folder, sample.name) == folder / f"{sample.name}_labels.tif"
    assert find_prediction(folder, "not-there") is None


def test_prediction_of_wrong_size_names_the_file(tmp_path, samples):
    write_predictions(tmp_path / "pred", {s.name: s.labels for s in samples})
    wrong = tmp_path / "pred" / f"{samples[0].name}_labels.tif"
    write_labels(wrong, samples[0].labels[:100, :80])
    with pytest.raises(InputError, match="80x100 does not match ground-truth size 256x256") as error:
        evaluate_folder(tmp_path / "pred", FIXTURES, cache_dir=False)
    assert error.value.path == wrong


def test_missing_prediction_folder_is_an_error(tmp_path):
    with pytest.raises(InputError, match="prediction folder does not exist"):
        evaluate_folder(tmp_path / "nope", FIXTURES, cache_dir=False)


def test_paired_ground_truth_folders(tmp_path, samples):
    sample = samples[2]
    (tmp_path / "images").mkdir()
    shutil.copy(sample.image_path, tmp_path / "images" / f"{sample.name}.png")
    write_labels(tmp_path / "masks" / f"{sample.name}.tif", sample.labels)
    write_labels(tmp_path / "pred" / f"{sample.name}_labels.tif", sample.labels)
    report = evaluate_folder(
        tmp_path / "pred", images_dir=tmp_path / "images", masks_dir=tmp_path / "masks", cache_dir=False
    )
    assert report.summary.n_images == 1 and report.summary.dsb_score == 1.0


def test_written_csv_and_json(tmp_path, samples):
    predictions = {s.name: degraded(s.labels, i) for i, s in enumerate(samples)}
    write_predictions(tmp_path / "pred", predictions)
    report = evaluate_folder(tmp_path / "pred", FIXTURES, cache_dir=False)
    write_csv(report, tmp_path / "out" / "per_image.csv")
    write_json(report, tmp_path / "out" / "summary.json")
    with open(tmp_path / "out" / "per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["name"] for r in rows] == [s.name for s in samples]
    assert all(abs(float(row["dsb_score"]) - r.scores.dsb_score) < 1e-6 for row, r in zip(rows, report.images))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert JSON_KEYS <= set(summary)
    assert summary["dsb_score"] == pytest.approx(report.summary.dsb_score)
    assert summary["n_missing"] == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["per_image.csv", "summary.json"]  # no temp files


# ----------------------------------------------------------------- command line


def test_cli_evaluate_prints_table_and_writes_files(tmp_path, samples, capsys):
    absent = samples[0].name
    write_predictions(tmp_path / "pred", {s.name: s.labels for s in samples if s.name != absent})
    out_csv, out_json = tmp_path / "per_image.csv", tmp_path / "summary.json"
    code = main(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "pred"),
            "--gt",
            str(FIXTURES),
            "--csv",
            str(out_csv),
            "--json",
            str(out_json),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "DSB2018 score" in captured.out and "0.7500" in captured.out
    assert f"nucseg: warning: {tmp_path / 'pred'}: no prediction for 1 of 4" in captured.err
    summary = json.loads(out_json.read_text())
    assert JSON_KEYS <= set(summary)
    assert (summary["n_images"], summary["n_missing"], summary["missing"]) == (4, 1, [absent])
    assert summary["dsb_score"] == pytest.approx(0.75)
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["name"], r["missing"]) for r in rows] == [(s.name, "1" if s.name == absent else "0") for s in samples]


def test_cli_refuses_to_overwrite_outputs_unless_asked(tmp_path, samples, capsys):
    write_predictions(tmp_path / "pred", {s.name: s.labels for s in samples})
    out_json = tmp_path / "summary.json"
    out_json.write_text("keep me")
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(FIXTURES), "--json", str(out_json)]
    assert main(args) == 2
    assert out_json.read_text() == "keep me"
    assert "exists (use --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert json.loads(out_json.read_text())["dsb_score"] == 1.0


def one_line_error(capsys) -> str:
    # Warnings raised before the error are printed as they happen, one line each.
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("nucseg: warning: ")]
    assert len(err) == 1 and err[0].startswith("nucseg: error: ")
    return err[0]


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, samples, capsys):
    assert main(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(FIXTURES)]) == 2
    assert "prediction folder does not exist" in one_line_error(capsys)

    (tmp_path / "empty_gt").mkdir()
    (tmp_path / "pred").mkdir()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "empty_gt")]) == 2
    assert "dataset folder is empty" in one_line_error(capsys)

    write_labels(tmp_path / "pred" / f"{samples[3].name}_labels.tif", np.ones((10, 10), np.int32))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(FIXTURES)]) == 2
    assert "does not match ground-truth size 1024x1024" in one_line_error(capsys)

    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--images", str(tmp_path)]) == 2
    assert "--images and --masks go together" in one_line_error(capsys)


def _label_stacks(tmp_path):
    """A ground-truth Z-stack of two 3-D nuclei, and predictions of it: per plane (new labels on every plane,
    as plane-by-plane segmenting writes them) and linked through Z."""
    import tifffile
    from skimage.draw import disk

    truth = np.zeros((3, 64, 64), np.uint16)
    for z in range(3):
        truth[z][disk((20, 20), 8 + z)] = 1
        truth[z][disk((44, 40), 10)] = 2
    per_plane = np.where(truth > 0, truth + 2 * np.arange(3)[:, None, None], 0).astype(np.uint16)
    (tmp_path / "gt").mkdir()
    (tmp_path / "planes").mkdir()
    (tmp_path / "linked").mkdir()
    tifffile.imwrite(tmp_path / "gt" / "cells.tif", truth)  # a plain multi-page TIFF
    tifffile.imwrite(tmp_path / "planes" / "cells_labels.tif", per_plane, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "linked" / "cells_labels.tif", truth * 3)  # other numbers, the same nuclei


def test_label_stacks_are_scored_plane_by_plane_or_in_3d(tmp_path, capsys):
    from nucseg.evaluation.folder import evaluate_label_stacks

    _label_stacks(tmp_path)
    planes = evaluate_label_stacks(tmp_path / "planes", tmp_path / "gt", matching="planes")
    assert [image.name for image in planes.images] == ["cells plane=0", "cells plane=1", "cells plane=2"]
    assert planes.summary.dsb_score == 1.0 and planes.summary.n_true == 6
    split = evaluate_label_stacks(tmp_path / "planes", tmp_path / "gt", matching="3d")
    assert len(split.images) == 1 and split.summary.n_true == 2 and split.summary.n_pred == 6
    assert split.summary.ap50 == 0.0  # each 3-D nucleus is split into three plane-sized pieces
    linked = evaluate_label_stacks(tmp_path / "linked", tmp_path / "gt", matching="3d")
    assert linked.summary.dsb_score == 1.0 and linked.matching == "3d"
    assert (
        main(["evaluate", "--pred", str(tmp_path / "linked"), "--gt-labels", str(tmp_path / "gt"), "--match", "3d"])
        == 0
    )
    assert "label stacks matched in 3-D" in capsys.readouterr().out
    import tifffile

    tifffile.imwrite(tmp_path / "linked" / "cells_labels.tif", np.zeros((2, 64, 64), np.uint16))
    with pytest.raises(InputError, match="does not match"):
        evaluate_label_stacks(tmp_path / "linked", tmp_path / "gt", matching="3d")

"""Validation accuracy reports (nucseg.evaluation.report), ``benchmarks/eval_validation.py``
and ``nucseg evaluate --by-kind``, on the 4 fixture images (2 fluorescence, 1 histology, 1 brightfield)."""

from __future__ import annotations

import importlib.util
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from nucseg.inference.model import Model, SegmentationResult
from nucseg.inference.classical import segment_classical
from nucseg.cli import main as nucseg_main
from nucseg.datasets.kinds import image_kind
from nucseg.io.images import write_labels
from nucseg.errors import InputError, ModelError
from nucseg.evaluation.metrics import dsb_score, image_scores, summarize
from nucseg.models.folder import ModelConfig, save_model
from nucseg.evaluation.report import (
    evaluate_model,
    format_markdown,
    load_validation_samples,
    METRIC_COLUMNS,
    scores_by_kind,
    validation_names,
)

DSB_DIR = Path(__file__).parents[1] / "data" / "dsb2018"
BENCHMARK = Path(__file__).parents[2] / "benchmarks" / "eval_validation.py"
KIND_OF = {"00071198": "fluorescence", "0280fa8f": "fluorescence", "00ae65c1": "histology", "091944f1": "brightfield"}


class LookupModel(Model):
    """Returns fixed labels per image: the truth for fluorescence images, nothing for the others."""

    name = "lookup"
    path = None

    def __init__(self, samples):
        self.labels = {
            zlib.crc32(s.image.tobytes()): s.labels
            if KIND_OF[s.name[:8]] == "fluorescence"
            else np.zeros_like(s.labels)
            for s in samples
        }

    def segment(self, image, **options):
        return SegmentationResult(self.labels[zlib.crc32(np.ascontiguousarray(image).tobytes())])


@pytest.fixture(scope="module")
def samples(dsb_samples):
    return [dsb_samples[key] for key in sorted(dsb_samples)]


def _tiny_model(path: Path, **config) -> Path:
    import torch

    from nucseg.models.networks import build_model

    torch.manual_seed(0)
    return save_model(
        build_model("unet", base_channels=4, depth=2),
        ModelConfig("unet", {"base_channels": 4, "depth": 2}, **config),
        path,
    )


def test_scores_are_aggregated_per_kind(samples):
    report = evaluate_model(LookupModel(samples), samples)
    assert [k[:8] for k in report.image_names] == sorted(KIND_OF)
    assert list(report.image_kinds) == [KIND_OF[name[:8]] for name in report.image_names]
    assert list(report.by_kind) == ["fluorescence", "brightfield", "histology"]
    assert {kind: s.n_images for kind, s in report.by_kind.items()} == {
        "fluorescence": 2,
        "brightfield": 1,
        "histology": 1,
    }
    fluorescence = report.by_kind["fluorescence"]
    assert (fluorescence.dsb_score, fluorescence.ap50, fluorescence.f1_50, fluorescence.pq, fluorescence.pixel_iou) == (
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
    )
    assert all(
        report.by_kind[kind].dsb_score == 0.0 == report.by_kind[kind].f1_50 for kind in ("brightfield", "histology")
    )
    assert report.overall.n_images == 4 and report.overall.dsb_score == 0.5
    # F1 is pooled over nuclei: the matched nuclei are those of the fluorescence images
    n_fluorescence = sum(int(s.labels.max()) for s in samples if KIND_OF[s.name[:8]] == "fluorescence")
    n_all = sum(int(s.labels.max()) for s in samples)
    assert report.overall.f1_50 == pytest.approx(2 * n_fluorescence / (n_fluorescence + n_all))
    assert report.seconds >= 0 and report.name == "lookup"


def test_classical_model_scores_match_the_metrics(dsb_samples):
    small = [dsb_samples["00071198"], dsb_samples["00ae65c1"]]
    report = evaluate_model("classical", small)
    expected = [image_scores(s.labels, segment_classical(s.image)) for s in small]
    assert report.overall == summarize(expected)
    assert [s.dsb_score for s in report.image_scores] == [
        dsb_score(s.labels, segment_classical(s.image)) for s in small
    ]
    assert report.by_kind["fluorescence"] == summarize(expected[:1])
    assert report.by_kind["histology"] == summarize(expected[1:])
    assert report.name == "classical" and report.seconds > 0


def test_network_model_folder_and_no_by_kind(tmp_path, dsb_samples):
    sample = dsb_samples["0280fa8f"]
    report = evaluate_model(str(_tiny_model(tmp_path / "model")), [sample], by_kind=False, name="tiny")
    assert report.by_kind == {} and report.image_kinds == ()
    assert report.name == "tiny" and report.overall.n_images == 1
    assert json.loads(json.dumps(report.to_dict()))["images"][0]["name"] == sample.name


def test_scores_by_kind_checks_its_input(samples):
    scores = [image_scores(s.labels, s.labels) for s in samples]
    assert scores_by_kind([image_kind(s.image) for s in samples], scores)["histology"].n_images == 1
    with pytest.raises(ValueError, match="unknown image kind"):
        scores_by_kind(["fluorescence", "phase"] * 2, scores)
    with pytest.raises(ValueError, match="3 kinds but 4"):
        scores_by_kind(["fluorescence"] * 3, scores)


def _table(markdown: str, index: int) -> list[list[str]]:
    """The cells of the index-th markdown table (header first, separator dropped)."""
    block = markdown.split("\n\n")[index]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in block.splitlines()]
    return [rows[0]] + rows[2:]


def test_markdown_tables(samples):
    lookup = evaluate_model(LookupModel(samples), samples)
    perfect_model = LookupModel(samples)
    perfect_model.labels = {zlib.crc32(s.image.tobytes()): s.labels for s in samples}
    perfect = evaluate_model(perfect_model, samples)
    markdown = format_markdown({"half": lookup, "perfect": perfect})
    overall, per_kind = _table(markdown, 0), _table(markdown, 1)
    assert overall[0] == ["model", "images"] + [header for header, _ in METRIC_COLUMNS] + ["s/image"]
    assert [row[0] for row in overall[1:]] == ["half", "perfect"]
    assert overall[1][2:8] == [f"{getattr(lookup.overall, a):.3f}" for _, a in METRIC_COLUMNS]
    assert overall[2][1:8] == ["4"] + ["1.000"] * 6
    assert per_kind[0][:3] == ["model", "image kind", "images"]
    assert [row[:3] for row in per_kind[1:]] == [
        [name, kind, n]
        for name in ("half", "perfect")
        for kind, n in (("fluorescence", "2"), ("brightfield", "1"), ("histology", "1"))
    ]
    assert per_kind[2][3] == "0.000" and per_kind[1][3] == "1.000"
    assert "\n\n" not in format_markdown({"half": lookup}, by_kind=False)


# ------------------------------------------------------------------ split and benchmark


def test_load_validation_samples_uses_the_stored_names(tmp_path, dsb_samples):
    names = [dsb_samples["0280fa8f"].name, dsb_samples["00071198"].name]
    path = _tiny_model(tmp_path / "model", split={"train": [dsb_samples["00ae65c1"].name], "validation": names})
    assert validation_names(path) == names
    assert [s.name for s in load_validation_samples(path, DSB_DIR, cache_dir=False)] == names
    assert validation_names(path, part="train") == [dsb_samples["00ae65c1"].name]
    assert [s.name for s in load_validation_samples(path, DSB_DIR, cache_dir=False, part="train")] == [
        dsb_samples["00ae65c1"].name
    ]
    with pytest.raises(ModelError, match="stores no test split"):
        validation_names(path, part="test")
    with pytest.raises(ValueError, match="part must be one of"):
        validation_names(path, part="holdout")
    with pytest.raises(InputError, match="trained on one dataset; give it"):
        load_validation_samples(path)


def test_eval_validation_benchmark_on_the_training_part_and_one_kind(tmp_path, dsb_samples, capsys, monkeypatch):
    monkeypatch.setenv("NUCSEG_CACHE_DIR", str(tmp_path / "cache"))
    train = [dsb_samples[k].name for k in ("00071198", "00ae65c1", "0280fa8f")]  # fluorescence, H&E, fluorescence
    model = _tiny_model(tmp_path / "model", split={"train": train, "validation": [dsb_samples["091944f1"].name]})
    code = _benchmark().main(
        [
            "--data",
            str(DSB_DIR),
            "--split-from",
            str(model),
            "--split-part",
            "train",
            "--kind",
            "fluorescence",
            "--model",
            "c=classical",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "the 2 fluorescence train images of the split" in captured.out and "Accuracy on" in captured.out
    assert [row[:2] for row in _table(captured.out.split("\n\n", 1)[1], 0)[1:]] == [["c", "2"]]


def _benchmark():
    spec = importlib.util.spec_from_file_location("eval_validation", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_validation_benchmark(tmp_path, dsb_samples, capsys, monkeypatch):
    monkeypatch.setenv("NUCSEG_CACHE_DIR", str(tmp_path / "cache"))
    names = [dsb_samples["00071198"].name, dsb_samples["00ae65c1"].name]
    model = _tiny_model(tmp_path / "model", split={"train": [dsb_samples["0280fa8f"].name], "validation": names})
    out = tmp_path / "report.json"
    code = _benchmark().main(
        [
            "--data",
            str(DSB_DIR),
            "--split-from",
            str(model),
            "--model",
            f"tiny={model}",
            "--model",
            "classical=classical",
            "--json",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    overall, per_kind = _table(captured.out.split("\n\n", 1)[1], 0), _table(captured.out.split("\n\n", 1)[1], 1)
    assert [(row[0], row[1]) for row in overall[1:]] == [("tiny", "2"), ("classical", "2")]
    assert [row[:3] for row in per_kind[1:]] == [
        [m, k, "1"] for m in ("tiny", "classical") for k in ("fluorescence", "histology")
    ]
    document = json.loads(out.read_text())
    assert list(document["models"]) == ["tiny", "classical"]
    assert all([image["name"] for image in document["models"][m]["images"]] == names for m in ("tiny", "classical"))
    classical = document["models"]["classical"]["overall"]["dsb_score"]
    assert classical == pytest.approx(
        np.mean(
            [
                dsb_score(dsb_samples[k].labels, segment_classical(dsb_samples[k].image))
                for k in ("00071198", "00ae65c1")
            ]
        )
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "tiny"], "expected NAME=MODEL"),
        (["--model", "a=classical", "--model", "a=classical"], "given twice"),
        (["--model", "x=/nonexistent/model"], "no such model folder"),
        (["--model", "c=classical", "--split-part", "train"], "needs --split-from"),
    ],
)
def test_eval_validation_errors(tmp_path, capsys, extra, message):
    code = _benchmark().main(["--data", str(DSB_DIR), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_eval_validation_split_from_another_dataset(tmp_path, capsys):
    model = _tiny_model(tmp_path / "model", split={"train": ["a"], "validation": ["b", "c", "d"]})
    code = _benchmark().main(["--data", str(DSB_DIR), "--split-from", str(model), "--model", "c=classical"])
    err = capsys.readouterr().err
    assert code == 2 and "3 of the 3 validation images stored in" in err and err.count("\n") == 1


# ------------------------------------------------------------------ nucseg evaluate --by-kind


def test_evaluate_by_kind(tmp_path, samples, capsys, monkeypatch):
    monkeypatch.setenv("NUCSEG_CACHE_DIR", str(tmp_path / "cache"))
    pred = tmp_path / "pred"
    lookup = LookupModel(samples)
    for sample in samples:
        write_labels(pred / f"{sample.name}_labels.tif", lookup.segment(sample.image).labels)
    code = nucseg_main(["evaluate", "--pred", str(pred), "--gt", str(DSB_DIR), "--by-kind"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = _table(captured.out.split("\n\n")[-1], 0)
    assert [row[:3] for row in table[1:]] == [
        ["fluorescence", "2", "1.000"],
        ["brightfield", "1", "0.000"],
        ["histology", "1", "0.000"],
    ]

"""Fit a model's quality estimate on its validation images and measure it on images nothing was chosen on.

Segments annotated images with the model (automatic sizing, as ``nucseg
segment`` does), records every image's quality features and its AP@0.5,
fits the weights on the validation split stored in the model folder
(:func:`nucseg.evaluation.quality.fit_calibration`), and reports on the test
split and on extra datasets (``--unseen``: kinds the model did not train on)
the Spearman correlation of score and AP@0.5 and the mean AP@0.5 of flagged
and unflagged images. ``--write`` stores the calibration in the model's
``config.json`` (``quality``). The README's numbers come from::

    nice python benchmarks/calibrate_quality.py --model src/nucseg/data/models/nuclei --write
    nice python benchmarks/calibrate_quality.py --model src/nucseg/data/models/dsb2018 \\
        --data ../shared/data/dsb2018/stage1_train --unseen ../shared/data/monuseg_train_he \\
        --unseen ../shared/data/gbm40_he --unseen ../shared/data/isbi2009_fluo --write

For a model trained on one dataset, ``--data`` names it (the split's
validation images are fitted on; there is no test split, so only the
``--unseen`` sets measure it).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

from nucseg.datasets.kinds import image_kind
from nucseg.datasets.layouts import load_dataset
from nucseg.datasets.mixture import NAME_SEPARATOR, split_qualified
from nucseg.evaluation import not_nuclei
from nucseg.evaluation.metrics import image_scores
from nucseg.evaluation.quality import fit_calibration, quality_relation
from nucseg.evaluation.report import load_validation_samples
from nucseg.inference.model import load_model
from nucseg.io.atomic import atomic_write
from nucseg.models.folder import read_model_config, rewrite_model_config


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--data", help="the dataset of a model trained on one dataset")
    parser.add_argument(
        "--unseen",
        action="append",
        default=[],
        metavar="DATASET",
        help="an annotated dataset of another kind, every image measured (repeat)",
    )
    parser.add_argument("--write", action="store_true", help="store the calibration in the model's config.json")
    parser.add_argument("--json", metavar="FILE", help="write per-image scores, features and AP@0.5 here")
    parser.add_argument(
        "--not-nuclei",
        type=int,
        default=0,
        metavar="N",
        help="also measure images with things other than nuclei built from the first N "
        "fluorescence test images (burned-in text, a whole-cell stain) and the first N "
        "histology ones (stroma texture): nucseg.evaluation.not_nuclei",
    )
    parser.add_argument(
        "--limits-only",
        action="store_true",
        help="keep the stored calibration's weights and threshold; fit only the limits of the "
        "not-nuclei features (so the score, and the images it flags, stay as they were)",
    )
    parser.add_argument(
        "--cache",
        metavar="DIR",
        help="keep each image's segmentation here and reuse it (features change, the network's "
        "output does not: delete the folder after changing the model)",
    )
    return parser.parse_args(argv)


def segmented(model, sample, cache: Path | None):
    """``model.segment(sample.image)``, read from ``cache`` when it holds it (pickled, so exact)."""
    if cache is None:
        return model.segment(sample.image)
    path = cache / (hashlib.sha1(f"{model.path}:{sample.name}".encode()).hexdigest()[:20] + ".pkl")
    if path.exists():
        with path.open("rb") as fh:
            return pickle.load(fh)
    result = model.segment(sample.image)
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return result


def measured(model, samples, cache: Path | None = None) -> list[dict]:
    """Per image: name, kind, quality features and AP@0.5."""
    rows = []
    for sample in samples:
        result = segmented(model, sample, cache)
        features = model.assess_quality(sample.image, result).features
        rows.append(
            {
                "name": sample.name,
                "kind": image_kind(sample.image),
                "features": features,
                "ap50": image_scores(sample.labels, result.labels).ap50,
            }
        )
    return rows


def not_nuclei_samples(samples, count: int) -> dict[str, list]:
    """Per built case, its samples: each image's nuclei stay its truth, what was added is not nuclei."""

    def built(kind: str, make) -> list:
        chosen = [s for s in sorted(samples, key=lambda s: s.name) if image_kind(s.image) == kind][:count]
        return [dataclasses.replace(s, image=make(s), name=f"{s.name}+{make.__name__}") for s in chosen]

    def text(s):
        return not_nuclei.with_text(s.image)

    def cell_stain(s):
        return not_nuclei.as_cell_stain(s.image)

    def stroma(s):
        return not_nuclei.with_stroma(s.image, s.labels)

    return {
        "burned-in text": built("fluorescence", text),
        "whole-cell stain": built("fluorescence", cell_stain),
        "stroma texture (H&E)": built("histology", stroma),
    }


def describe(title: str, rows: list[dict], calibration) -> str:
    relation = quality_relation(
        [r["features"] for r in rows], [r["ap50"] for r in rows], calibration, kinds=[r["kind"] for r in rows]
    )
    return (
        f"| {title} | {relation.images} | {relation.spearman:.3f} | {relation.flagged} | "
        f"{relation.mean_ap50_flagged:.3f} | {relation.mean_ap50_ok:.3f} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model = load_model(args.model)
    config, _ = read_model_config(args.model)
    fit_samples = load_validation_samples(args.model, args.data)
    cache = Path(args.cache) if args.cache else None
    fit_rows = measured(model, fit_samples, cache)
    train_kinds = sorted({image_kind(s.image) for s in load_validation_samples(args.model, args.data, part="train")})
    calibration = fit_calibration(
        [r["features"] for r in fit_rows],
        [r["ap50"] for r in fit_rows],
        training_kinds=train_kinds,
        kinds=[r["kind"] for r in fit_rows],
        fitted_on=f"the {len(fit_rows)} validation images of the model's split",
    )
    stored = model.quality_calibration()
    if args.limits_only:
        if stored is None:
            raise SystemExit(f"{args.model}: --limits-only needs a stored calibration, and it has none")
        calibration = dataclasses.replace(
            stored,
            limits=calibration.limits,
            fitted_on=(f"{stored.fitted_on}; limits: the {len(fit_rows)} validation images of the model's split"),
        )
    sets = {"validation (fitted on)": fit_rows}
    if config.split.get("test"):
        test_rows = measured(model, load_validation_samples(args.model, args.data, part="test"), cache)
        sets["test split"] = test_rows
        for dataset in sorted({split_qualified(r["name"])[0] for r in test_rows if NAME_SEPARATOR in r["name"]}):
            sets[f"test: {dataset}"] = [r for r in test_rows if r["name"].startswith(f"{dataset}/")]
        if args.not_nuclei:
            test_samples = load_validation_samples(args.model, args.data, part="test")
            for case, samples in not_nuclei_samples(test_samples, args.not_nuclei).items():
                sets[f"built: {case}"] = measured(model, samples, cache)
    for folder in args.unseen:
        sets[f"unseen: {folder.rstrip('/').split('/')[-1]}"] = measured(model, load_dataset(folder), cache)
    held_out = [
        r
        for title, rows in sets.items()
        if title == "test split" or title.startswith(("unseen", "built"))
        for r in rows
    ]
    for name, scoring in [("the calibration stored in the model folder now", stored), ("the new fit", calibration)]:
        if scoring is None:
            continue
        print(
            f"Quality estimate of {args.model}, {name} (threshold {scoring.threshold:g}; kinds trained on: "
            f"{', '.join(train_kinds)}):\n"
        )
        print("| images | n | Spearman (score, AP@0.5) | flagged | mean AP@0.5 flagged | mean AP@0.5 ok |")
        print("|---|---:|---:|---:|---:|---:|")
        for title, rows in sets.items():
            print(describe(title, rows, scoring))
        if held_out:
            print(describe("all held-out images", held_out, scoring))
        print()
    print(
        "weights: "
        + ", ".join(f"{k} {v:+.3f}" for k, v in calibration.weights.items())
        + f"; intercept {calibration.intercept:.3f}"
    )
    print(
        "limits: "
        + "; ".join(
            f"{kind}: " + ", ".join(f"{k} {v:.3f}" for k, v in limits.items())
            for kind, limits in calibration.limits.items()
        )
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"calibration": calibration.to_dict(), "sets": sets}, fh, indent=1)
    if args.write:
        rewrite_model_config(args.model, dataclasses.replace(config, quality=calibration.to_dict()))
        print(f"wrote the calibration into {args.model}/config.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

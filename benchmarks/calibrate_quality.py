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
import json
import sys
from collections.abc import Sequence


from nucseg.datasets.kinds import image_kind
from nucseg.datasets.layouts import load_dataset
from nucseg.datasets.mixture import NAME_SEPARATOR, split_qualified
from nucseg.evaluation.metrics import image_scores
from nucseg.evaluation.quality import fit_calibration, quality_relation
from nucseg.evaluation.report import load_validation_samples
from nucseg.inference.model import load_model
from nucseg.models.folder import read_model_config, rewrite_model_config


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--data", help="the dataset of a model trained on one dataset")
    parser.add_argument("--unseen", action="append", default=[], metavar="DATASET",
                        help="an annotated dataset of another kind, every image measured (repeat)")
    parser.add_argument("--write", action="store_true", help="store the calibration in the model's config.json")
    parser.add_argument("--json", metavar="FILE", help="write per-image scores, features and AP@0.5 here")
    return parser.parse_args(argv)


def measured(model, samples) -> list[dict]:
    """Per image: name, kind, quality features and AP@0.5."""
    rows = []
    for sample in samples:
        result = model.segment(sample.image)
        features = model.assess_quality(sample.image, result).features
        rows.append({"name": sample.name, "kind": image_kind(sample.image), "features": features,
                     "ap50": image_scores(sample.labels, result.labels).ap50})
    return rows


def describe(title: str, rows: list[dict], calibration) -> str:
    relation = quality_relation([r["features"] for r in rows], [r["ap50"] for r in rows], calibration)
    return (f"| {title} | {relation.images} | {relation.spearman:.3f} | {relation.flagged} | "
            f"{relation.mean_ap50_flagged:.3f} | {relation.mean_ap50_ok:.3f} |")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model = load_model(args.model)
    config, _ = read_model_config(args.model)
    fit_samples = load_validation_samples(args.model, args.data)
    fit_rows = measured(model, fit_samples)
    train_kinds = sorted({image_kind(s.image) for s in load_validation_samples(args.model, args.data, part="train")})
    calibration = fit_calibration([r["features"] for r in fit_rows], [r["ap50"] for r in fit_rows],
                                  training_kinds=train_kinds,
                                  fitted_on=f"the {len(fit_rows)} validation images of the model's split")
    sets = {"validation (fitted on)": fit_rows}
    if config.split.get("test"):
        test_rows = measured(model, load_validation_samples(args.model, args.data, part="test"))
        sets["test split"] = test_rows
        for dataset in sorted({split_qualified(r["name"])[0] for r in test_rows if NAME_SEPARATOR in r["name"]}):
            sets[f"test: {dataset}"] = [r for r in test_rows if r["name"].startswith(f"{dataset}/")]
    for folder in args.unseen:
        sets[f"unseen: {folder.rstrip('/').split('/')[-1]}"] = measured(model, load_dataset(folder))
    print(f"Quality estimate of {args.model} (threshold {calibration.threshold:g}; kinds trained on: "
          f"{', '.join(train_kinds)}):\n")
    print("| images | n | Spearman (score, AP@0.5) | flagged | mean AP@0.5 flagged | mean AP@0.5 ok |")
    print("|---|---:|---:|---:|---:|---:|")
    for title, rows in sets.items():
        print(describe(title, rows, calibration))
    held_out = [r for title, rows in sets.items() if title == "test split" or title.startswith("unseen") for r in rows]
    if held_out:
        print(describe("all held-out images", held_out, calibration))
    print("\nweights: " + ", ".join(f"{k} {v:+.3f}" for k, v in calibration.weights.items())
          + f"; intercept {calibration.intercept:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"calibration": calibration.to_dict(), "sets": sets}, fh, indent=1)
    if args.write:
        rewrite_model_config(args.model, dataclasses.replace(config, quality=calibration.to_dict()))
        print(f"wrote the calibration into {args.model}/config.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy of models on the validation (or test) images held out by a training run.

Segments the validation images named in a model folder's ``config.json``
(``split.validation``, written by ``nucseg train``) with each model, and
prints markdown tables of the DSB2018 score, AP@0.5, AP@0.75, F1@0.5, PQ and
pixel IoU, overall and per image kind (fluorescence, brightfield, histology),
with the seconds per image spent segmenting.

Usage::

    nice python benchmarks/eval_validation.py --data ../shared/data/dsb2018/stage1_train \\
        --split-from runs/dsb2018/model \\
        --model dsb2018=runs/dsb2018/model --model seed=runs/seed/model --model classical=classical \\
        [--split-part train] [--kind brightfield] [--json validation.json] [--device cpu] [--scale 1] \\
        [--backend onnxruntime-int8] [--rescale 0.4] [--scale-limits 0.5 2.5]

For a model trained on several datasets (a ``datasets`` config) ``--data`` is
left out: the images come from its datasets, and the scores are printed per
dataset too. The test scores of the README come from::

    nice python benchmarks/eval_validation.py --split-from runs/nuclei/model --split-part test \
        --model nuclei=runs/nuclei/model --model dsb2018=dsb2018

Without ``--split-from`` every image of ``--data`` is used; ``--split-part
train`` scores the split's training images instead, and ``--kind`` keeps one
image kind (the brightfield scores in the README come from
``--split-part train --kind brightfield``: the split holds no brightfield
image out). Each ``--model`` is ``ROW_NAME=MODEL``, where MODEL is a model
folder, ``dsb2018`` (the shipped model) or ``classical`` (the baseline
without a network).

``--rescale F`` resizes every image and its labels by F before segmenting
(nuclei F times their size: 0.4 turns the validation images' nuclei of about
20 pixels into nuclei of 8, as a 10x objective or dense tissue shows them), to
measure automatic sizing outside the sizes the sets hold. ``--postprocess
NAME=VALUE`` (repeatable) replaces one post-processing setting of the networks
for every image kind (``min_size=20``), to measure what thresholds can and
cannot recover. ``--scale-limits LOW
HIGH`` sets the range of factors automatic sizing may choose
(:data:`nucseg.postprocess.measure.AUTO_SCALE_LIMITS`) in this process, to
choose that range on validation images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nucseg.datasets.kinds import image_kind, IMAGE_KINDS
from nucseg.datasets.layouts import load_dataset
from nucseg.datasets.sample import Sample
from nucseg.errors import NucsegError
from nucseg.inference import BACKENDS
from nucseg.datasets.mixture import NAME_SEPARATOR
from nucseg.evaluation.report import (
    evaluate_model,
    format_markdown,
    load_validation_samples,
    report_subset,
    SPLIT_PARTS,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", help="annotated dataset (DSB2018 or paired layout); not for a model trained on several datasets"
    )
    parser.add_argument(
        "--split-from", metavar="MODEL_DIR", help="model folder whose stored validation split selects the images"
    )
    parser.add_argument(
        "--split-part",
        choices=SPLIT_PARTS,
        default="validation",
        help="with --split-from: score the split's validation images (default), its test images or its training images",
    )
    parser.add_argument("--kind", choices=IMAGE_KINDS, help="only the images of this kind")
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=MODEL",
        help="row name and model folder (or 'dsb2018' / 'classical'); repeat for each model",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where networks run")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation for the networks")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="what runs the networks (default: as nucseg segment chooses); onnxruntime against "
        "onnxruntime-int8 measures what the int8 graph costs",
    )
    parser.add_argument(
        "--scale",
        type=float,
        metavar="F",
        help="run the networks at this fixed resize factor (1: native resolution) instead of "
        "sizing each image automatically (the default)",
    )
    parser.add_argument(
        "--rescale",
        type=float,
        metavar="F",
        help="resize every image and its labels by F first (nuclei F times their size)",
    )
    parser.add_argument(
        "--scale-limits",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="the factors automatic sizing may choose (default: nucseg's AUTO_SCALE_LIMITS)",
    )
    parser.add_argument(
        "--postprocess",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a post-processing setting that replaces the networks' own for every image kind, e.g. min_size=20 "
        "(a PostprocessConfig field; sizes in the frame the model's settings use); repeat for several",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every report (with per-image scores) as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return parser.parse_args(argv)


def parse_postprocess(entries: Sequence[str]) -> dict[str, float | int | bool | str]:
    """``["min_size=20", ...]`` -> ``{"min_size": 20}``, each value read as JSON (a bare word stays a string).

    SegmentOptions checks the names and ranges; a malformed entry raises NucsegError.
    """
    settings: dict[str, float | int | bool | str] = {}
    for entry in entries:
        name, sep, text = entry.partition("=")
        if not sep or not name or not text:
            raise NucsegError(f"--postprocess {entry!r}: expected NAME=VALUE, e.g. min_size=20")
        try:
            settings[name] = json.loads(text)
        except json.JSONDecodeError:
            settings[name] = text
    return settings


def parse_models(entries: Sequence[str]) -> dict[str, str]:
    """``["name=path", ...]`` -> ``{name: path}``; raises NucsegError for a malformed or repeated name."""
    models: dict[str, str] = {}
    for entry in entries:
        name, sep, model = entry.partition("=")
        if not sep or not name or not model:
            raise NucsegError(f"--model {entry!r}: expected NAME=MODEL, e.g. dsb2018=runs/dsb2018/model")
        if name in models:
            raise NucsegError(f"--model {entry!r}: the name {name!r} is given twice")
        models[name] = model
    return models


def rescaled(sample: Sample, factor: float) -> Sample:
    """``sample`` with its image (bilinear) and labels (nearest) resized by ``factor``."""
    from nucseg.preprocess.resize import resize_image, resize_labels

    height, width = sample.labels.shape
    shape = (max(1, round(height * factor)), max(1, round(width * factor)))
    image = resize_image(sample.image, shape)
    if np.issubdtype(sample.image.dtype, np.integer):  # keep the pixel type: 8-bit colour stays colour
        limits = np.iinfo(sample.image.dtype)
        image = np.clip(np.rint(image), limits.min, limits.max).astype(sample.image.dtype)
    return dataclasses.replace(sample, image=image, labels=resize_labels(sample.labels, shape))


def set_scale_limits(low: float, high: float) -> None:
    """Set the range of automatic sizing's factors in this process."""
    from nucseg.postprocess import measure

    if not 0 < low <= 1 <= high:
        raise NucsegError(f"--scale-limits {low:g} {high:g}: need 0 < LOW <= 1 <= HIGH")
    measure.AUTO_SCALE_LIMITS = (low, high)


def dataset_positions(names: Sequence[str]) -> dict[str, list[int]]:
    """``{dataset: positions}`` of ``<dataset>/<image>`` names (one group for plain names)."""
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        groups.setdefault(name.partition(NAME_SEPARATOR)[0] if NAME_SEPARATOR in name else "", []).append(index)
    return groups


def main(argv: Sequence[str] | None = None) -> int:
    from nucseg.inference.classical import ClassicalModel
    from nucseg.inference.model import load_model
    from nucseg.io.atomic import atomic_write

    args = parse_args(argv)
    try:
        models = parse_models(args.model)
        postprocess = parse_postprocess(args.postprocess)
        if args.split_part != "validation" and not args.split_from:
            raise NucsegError(
                f"--split-part {args.split_part} needs --split-from (the model folder that stores the split)"
            )
        if args.data is None and not args.split_from:
            raise NucsegError("give --data, or --split-from a model folder trained on several datasets")
        if args.json and Path(args.json).exists() and not args.overwrite:
            raise NucsegError(f"{args.json}: exists (use --overwrite to replace it)")
        if args.scale_limits:
            set_scale_limits(*args.scale_limits)
        loaded = {name: load_model(model, device=args.device) for name, model in models.items()}
        progress = sys.stderr.isatty()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if args.split_from:
                samples = load_validation_samples(args.split_from, args.data, progress=progress, part=args.split_part)
                source = f"{args.split_part} images of the split stored in {args.split_from}"
            else:
                samples = load_dataset(args.data, progress=progress)
                source = "images"
            if args.kind:
                samples = [sample for sample in samples if image_kind(sample.image) == args.kind]
                source = f"{args.kind} {source}"
            if args.rescale:
                samples = [rescaled(sample, args.rescale) for sample in samples]
                source = f"{source}, resized by {args.rescale:g}"
            source = f"the {len(samples)} {source}"
        for warning in caught:
            print(f"eval_validation: warning: {warning.message}", file=sys.stderr)
        reports = {}
        for name, model in loaded.items():
            options: dict = {}
            if args.tta and not isinstance(model, ClassicalModel):
                options["tta"] = True
            if args.scale is not None and not isinstance(model, ClassicalModel):
                options["scale"] = args.scale
            if args.backend and not isinstance(model, ClassicalModel):
                options["backend"] = args.backend
            if postprocess and not isinstance(model, ClassicalModel):
                options["postprocess"] = postprocess
            reports[name] = evaluate_model(model, samples, name=name, progress=progress, **options)
    except NucsegError as exc:
        print(f"eval_validation: error: {exc}", file=sys.stderr)
        return 2
    sizing = "automatic sizing" if args.scale is None else f"fixed scale {args.scale:g}"
    if args.scale is None and args.scale_limits:
        sizing += f" within factors {args.scale_limits[0]:g}-{args.scale_limits[1]:g}"
    origin = args.data or "the datasets of the model's training config"
    backend = f", backend {args.backend}" if args.backend else ""
    backend += "".join(f", {name} {value}" for name, value in postprocess.items())
    print(
        f"Accuracy on {source}, from {origin} (device {args.device}{backend}, {sizing}{', TTA' if args.tta else ''}):\n"
    )
    print(format_markdown(reports))
    datasets = dataset_positions(next(iter(reports.values())).image_names)
    if len(datasets) > 1:
        for dataset, indices in datasets.items():
            print(f"\n{dataset} ({len(indices)} images):\n")
            print(
                format_markdown(
                    {name: report_subset(report, indices) for name, report in reports.items()}, by_kind=False
                )
            )
    if args.json:
        document = {
            "data": str(args.data),
            "split_from": args.split_from,
            "split_part": args.split_part,
            "device": args.device,
            "backend": args.backend,
            "postprocess": postprocess,
            "tta": args.tta,
            "scale": args.scale,
            "rescale": args.rescale,
            "scale_limits": args.scale_limits,
            "models": {name: {"model": models[name], **report.to_dict()} for name, report in reports.items()},
        }
        with atomic_write(args.json) as tmp:
            tmp.write_text(json.dumps(document, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

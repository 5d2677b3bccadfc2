"""Why a model's nuclei are wrong, per dataset: missed, merged, split, poorly outlined, spurious.

Segments the validation (or test) images that a model folder's split holds
out, as ``nucseg segment`` does by default, and sorts every ground-truth
nucleus that no prediction matches at IoU > 0.5 into one cause
(:mod:`nucseg.evaluation.error_causes`), per dataset. The table tells which remedy a
set needs: missed small nuclei (micronuclei, dense tissue) call for another
size range, merges for better separation of touching nuclei, spurious objects
for cleaner backgrounds::

    python benchmarks/error_breakdown.py --split-from src/nucseg/data/models/nuclei --model nuclei

"Small" missed nuclei are below a quarter of the median area of the nuclei of
their image.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from nucseg.datasets.mixture import NAME_SEPARATOR, split_qualified
from nucseg.errors import NucsegError
from nucseg.evaluation.error_causes import combine, error_breakdown
from nucseg.evaluation.report import load_validation_samples
from nucseg.inference.model import load_model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split-from", required=True, metavar="MODEL_DIR", help="model folder storing the split")
    parser.add_argument(
        "--split-part", choices=("validation", "test", "train"), default="validation", help="which images"
    )
    parser.add_argument("--model", default="nuclei", help="model folder or shipped model name (default: nuclei)")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the loader's notes on the split are eval_validation's business
            samples = load_validation_samples(args.split_from, part=args.split_part)
    except NucsegError as exc:
        print(f"error_breakdown: error: {exc}", file=sys.stderr)
        return 2
    by_dataset: dict[str, list] = {}
    for sample in samples:
        dataset = split_qualified(sample.name)[0] if NAME_SEPARATOR in sample.name else "images"
        by_dataset.setdefault(dataset, []).append(error_breakdown(sample.labels, model.segment(sample.image).labels))
    print(
        f"Unmatched nuclei (IoU <= 0.5) by cause, {args.model} on the {len(samples)} {args.split_part} images "
        f"of {args.split_from}:\n"
    )
    print(
        "| dataset | images | nuclei | matched | missed (small) | merged | split | poorly outlined "
        "| predictions | spurious |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = {**by_dataset, "all": [b for group in by_dataset.values() for b in group]}
    for dataset, breakdowns in rows.items():
        total = combine(breakdowns)
        print(
            f"| {dataset} | {len(breakdowns)} | {total.n_true} | {total.matched} "
            f"| {total.missed} ({total.missed_small}) | {total.merged} | {total.split} | {total.poorly_outlined} "
            f"| {total.n_pred} | {total.spurious} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

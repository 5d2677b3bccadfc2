"""``nucseg show`` and ``nucseg evaluate``: look at a dataset, score predictions against it."""

from __future__ import annotations

import argparse
import sys

from nucseg.cli.common import EXIT_OK
from nucseg.errors import NucsegError

# --------------------------------------------------------------------------- show


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("dataset", nargs="?", help="dataset folder (DSB2018 or paired layout)")
    source.add_argument("--images", help="folder of images (paired layout; needs --masks)")
    parser.add_argument("--masks", help="folder of masks matched to --images by file name")
    parser.add_argument("--n", type=int, default=8, help="number of samples to show (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for choosing samples")
    parser.add_argument("--out", required=True, help="output PNG file")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nucseg.datasets.layouts import load_dataset
    from nucseg.errors import InputError
    from nucseg.visualize import save_sample_grid

    if (args.images is None) != (args.masks is None):
        raise NucsegError("--images and --masks go together")
    if args.n < 1:
        raise NucsegError(f"--n must be at least 1, got {args.n}")
    if Path(args.out).exists() and not args.overwrite:  # checked before a possibly long load
        raise InputError(args.out, "exists (use --overwrite to replace it)")
    samples = load_dataset(args.dataset, images_dir=args.images, masks_dir=args.masks, progress=sys.stderr.isatty())
    path = save_sample_grid(samples, args.out, n=args.n, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {path} ({min(args.n, len(samples))} of {len(samples)} samples)")
    return EXIT_OK


# ----------------------------------------------------------------------- evaluate


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred",
        required=True,
        metavar="DIR",
        help="folder of predicted label images (<name>_labels.tif, <name>.tif or <name>.png)",
    )
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument("--gt", metavar="DATASET", help="ground-truth dataset folder (DSB2018 or paired layout)")
    truth.add_argument("--images", metavar="DIR", help="ground-truth images folder (paired layout; needs --masks)")
    truth.add_argument(
        "--gt-labels",
        metavar="DIR",
        help="ground-truth label images, Z-stacks among them (<name>.tif or <name>_labels.tif), instead of a dataset",
    )
    parser.add_argument("--masks", metavar="DIR", help="ground-truth masks folder matched to --images by name")
    parser.add_argument(
        "--match",
        choices=["planes", "3d"],
        default="planes",
        help="with --gt-labels: score each plane of a stack as an image (planes, the default), or "
        "match each stack's nuclei by their 3-D IoU (3d, for --stitch-threshold output)",
    )
    parser.add_argument("--csv", metavar="FILE", help="write one row of scores per image to this CSV file")
    parser.add_argument("--json", metavar="FILE", help="write the dataset scores to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --csv / --json files")
    parser.add_argument(
        "--by-kind",
        action="store_true",
        help="also print the scores per image kind (fluorescence, brightfield, histology)",
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nucseg.errors import InputError
    from nucseg.evaluation.folder import evaluate_folder, evaluate_label_stacks, format_summary, write_csv, write_json

    if (args.images is None) != (args.masks is None):
        raise NucsegError("--images and --masks go together")
    for output in (args.csv, args.json):
        if output is not None and Path(output).exists() and not args.overwrite:
            raise InputError(output, "exists (use --overwrite to replace it)")
    if args.gt_labels is not None:
        if args.by_kind:
            raise NucsegError("--by-kind needs a dataset (--gt or --images), not --gt-labels")
        report = evaluate_label_stacks(args.pred, args.gt_labels, matching=args.match)
    else:
        report = evaluate_folder(
            args.pred, args.gt, images_dir=args.images, masks_dir=args.masks, progress=sys.stderr.isatty()
        )
    print(format_summary(report))
    if args.by_kind:
        from nucseg.evaluation.report import format_evaluation_by_kind

        print("\n" + format_evaluation_by_kind(report, args.gt, images_dir=args.images, masks_dir=args.masks))
    if args.csv:
        print(f"wrote {write_csv(report, args.csv)}")
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    return EXIT_OK

"""Command line interface: ``nucseg <command> [options]``.

A thin layer over the library: each command parses its arguments, then calls
one API function. Heavy modules (torch, skimage) are imported inside the
``_run_*`` functions, after parsing, so that ``nucseg --help`` is instant.

Every :class:`nucseg.errors.NucsegError` is printed as one line
(``nucseg: error: <file>: <problem>``) with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from nucseg.errors import NucsegError

EXIT_OK = 0
EXIT_FAILURES = 1  # the command ran, but some inputs failed
EXIT_USAGE = 2  # bad input: nothing (or nothing more) could be done


# --------------------------------------------------------------------------- show


def _add_show_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("dataset", nargs="?", help="dataset folder (DSB2018 or paired layout)")
    source.add_argument("--images", help="folder of images (paired layout; needs --masks)")
    parser.add_argument("--masks", help="folder of masks matched to --images by file name")
    parser.add_argument("--n", type=int, default=8, help="number of samples to show (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for choosing samples")
    parser.add_argument("--out", required=True, help="output PNG file")


def _run_show(args: argparse.Namespace) -> int:
    from nucseg.datasets import load_dataset
    from nucseg.visualize import save_sample_grid

    if (args.images is None) != (args.masks is None):
        raise NucsegError("--images and --masks go together")
    samples = load_dataset(args.dataset, images_dir=args.images, masks_dir=args.masks, progress=True)
    path = save_sample_grid(samples, args.out, n=args.n, seed=args.seed)
    print(f"wrote {path} ({min(args.n, len(samples))} of {len(samples)} samples)")
    return EXIT_OK


# ----------------------------------------------------------------------- evaluate


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, metavar="DIR",
                        help="folder of predicted label images (<name>_labels.tif, <name>.tif or <name>.png)")
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument("--gt", metavar="DATASET", help="ground-truth dataset folder (DSB2018 or paired layout)")
    truth.add_argument("--images", metavar="DIR", help="ground-truth images folder (paired layout; needs --masks)")
    parser.add_argument("--masks", metavar="DIR", help="ground-truth masks folder matched to --images by name")
    parser.add_argument("--csv", metavar="FILE", help="write one row of scores per image to this CSV file")
    parser.add_argument("--json", metavar="FILE", help="write the dataset scores to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --csv / --json files")


def _run_evaluate(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    from nucseg.errors import InputError
    from nucseg.evaluation import evaluate_folder, format_summary, write_csv, write_json

    if (args.images is None) != (args.masks is None):
        raise NucsegError("--images and --masks go together")
    for output in (args.csv, args.json):
        if output is not None and Path(output).exists() and not args.overwrite:
            raise InputError(output, "exists (use --overwrite to replace it)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate_folder(args.pred, args.gt, images_dir=args.images, masks_dir=args.masks,
                                 progress=sys.stderr.isatty())
    for warning in caught:
        print(f"nucseg: warning: {warning.message}", file=sys.stderr)
    print(format_summary(report))
    if args.csv:
        print(f"wrote {write_csv(report, args.csv)}")
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    return EXIT_OK


# -------------------------------------------------------------------------- train


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="training dataset folder (DSB2018 or paired layout)")
    parser.add_argument("--images", help="folder of training images (paired layout; needs --masks)")
    parser.add_argument("--masks", help="folder of masks matched to --images by file name")
    parser.add_argument("--val-data", help="explicit validation dataset (default: a seeded split of --data)")
    run = parser.add_mutually_exclusive_group(required=True)
    run.add_argument("--out", help="new run folder, e.g. runs/NAME (the model is saved in runs/NAME/model)")
    run.add_argument("--resume", metavar="RUN", help="continue the killed or stopped run in this folder")
    parser.add_argument("--config", help="YAML or JSON file of TrainConfig settings")
    parser.add_argument("--preset", help="named starting configuration: 'default' or 'seed' (the seed notebook)")
    settings = parser.add_argument_group("settings (override --preset and --config)")
    settings.add_argument("--model", help="network: unet or mobilenetv2_unet")
    settings.add_argument("--encoder-weights", choices=["imagenet", "none"],
                          help="mobilenetv2_unet encoder start: ImageNet weights or random")
    settings.add_argument("--target", choices=["three_class", "binary"], help="training target")
    settings.add_argument("--epochs", type=int, help="maximum number of epochs")
    settings.add_argument("--batch-size", type=int, help="crops per optimisation step")
    settings.add_argument("--crop-size", type=int, help="side of the square training crops (multiple of 32)")
    settings.add_argument("--resize-to", type=int, help="resize every image to this square size instead of cropping")
    settings.add_argument("--lr", type=float, help="learning rate")
    settings.add_argument("--samples-per-epoch", type=int, help="random crops per epoch (default: one per image)")
    settings.add_argument("--val-fraction", type=float, help="fraction of images held out for validation")
    settings.add_argument("--seed", type=int, help="seed of the split, initialization and augmentation")
    settings.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    settings.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train")
    settings.add_argument("--time-limit", type=float, dest="time_limit_minutes",
                          help="stop after the epoch that passes this many minutes")


def _run_train(args: argparse.Namespace) -> int:
    from nucseg.config import resolve_config
    from nucseg.training import train

    if (args.images is None) != (args.masks is None):
        raise NucsegError("--images and --masks go together")
    if args.resume:
        if args.config or args.preset:
            raise NucsegError("--resume continues a run with its saved settings; drop --config/--preset")
        config = None
    else:
        if args.data is None and args.images is None:
            raise NucsegError("give the training data with --data DATASET or --images DIR --masks DIR")
        # encoder_weights stays the string "none" here (None would mean "flag not given"); TrainConfig maps it to None.
        overrides = {key: getattr(args, key) for key in (
            "model", "encoder_weights", "target", "epochs", "batch_size", "crop_size", "resize_to", "lr",
            "samples_per_epoch", "val_fraction", "seed", "num_workers", "device", "time_limit_minutes")}
        config = resolve_config(preset=args.preset, config_file=args.config, overrides=overrides)
    result = train(config, args.resume or args.out, data=args.data, images_dir=args.images, masks_dir=args.masks,
                   val_data=args.val_data, resume=bool(args.resume))
    print(f"best epoch {result.best_epoch} of {result.epochs_run}: "
          f"validation {config.monitor if config else 'metric'} {result.best_metric:.4f}; model in {result.model_dir}")
    return EXIT_OK


# ----------------------------------------------------------------------- commands

#: name -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "show": ("draw sample images with their nucleus outlines into one PNG", _add_show_arguments, _run_show),
    "evaluate": ("score predicted label images against a ground-truth dataset (DSB2018 metric, AP, F1, PQ)",
                 _add_evaluate_arguments, _run_evaluate),
    "train": ("train a segmentation model on an annotated dataset", _add_train_arguments, _run_train),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the ``nucseg`` argument parser with one subparser per command."""
    from nucseg import __version__

    parser = argparse.ArgumentParser(
        prog="nucseg", description="Find and outline every cell nucleus in microscopy images."
    )
    parser.add_argument("--version", action="version", version=f"nucseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nucseg`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except NucsegError as exc:
        print(f"nucseg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nucseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

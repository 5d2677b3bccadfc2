"""Fine-tuning on a handful of a user's images: the shipped model before and after, on other images of the same set.

Usage::

    python benchmarks/bench_finetune.py [--data gbm40_he] [--model dsb2018] [--minutes 14] [--epochs 50] \
        [--out runs/bench_finetune]
    # for choosing settings:
    python benchmarks/bench_finetune.py --part develop --out runs/finetune_dev [--config SETTINGS.yaml]

Draws, by seed 0, 10 images of the dataset to fine-tune on and 10 others to
score on (``--data`` is a paired-layout set under the data root, by default
``gbm40_he``: H&E glioblastoma, unlike anything in DSB2018). Scores the
starting model (``--model``, by default the shipped ``dsb2018``) on the 10
test images, fine-tunes it with the README's command (``nucseg train --data
MINE --out RUN --init-from MODEL``,
defaults for small sets included: the fine-tuning learning rate and warm-up,
at least 16 batches an epoch, a validation split with enough nuclei) under a
time limit, and scores the result on the same test images. The test images
take no part in training or in choosing the epoch. Prints a markdown table.

The starting model must never have trained on the set: the shipped default
``nuclei`` trained on GBM40, so its fine-tuning is measured from
``runs/dsb2018_lite0/model`` (the default's network and recipe on DSB2018
alone, ``configs/dsb2018_lite0.yaml``), as ``dsb2018`` stood for the U-Net.

``--part develop`` draws its 10 + 10 images from the images the reported draw
leaves out (the same seeded order, images 21-40), so fine-tuning defaults can
be compared there and the reported images stay untouched by that choice.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nucseg.datasets.layouts import list_dataset, load_dataset
from nucseg.datasets.locations import dataset_path
from nucseg.evaluation.report import evaluate_model
from nucseg.inference.model import load_model

N_TUNE = 10
N_TEST = 10


def paired_folder(files, folder: Path) -> Path:
    """A paired-layout folder of links to ``files`` (images/ and masks/)."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    for item in files:
        (folder / "images" / item.image_path.name).symlink_to(item.image_path.resolve())
        mask = item.mask_paths[0]
        (folder / "masks" / mask.name).symlink_to(mask.resolve())
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="gbm40_he", help="dataset name under the data root, or a folder")
    parser.add_argument(
        "--minutes",
        type=float,
        default=14.0,
        help="time limit of the fine-tuning run (checked after each epoch: 14 keeps it under 15)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=50,
        help="the README's fine-tuning command uses 50 (chosen on --part develop of 20, 40, 50)",
    )
    parser.add_argument(
        "--part",
        choices=("report", "develop"),
        default="report",
        help="report: the seeded order's images 1-20; develop: its images 21-40, for choosing settings",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a YAML of TrainConfig settings passed to train (to compare settings on --part develop)",
    )
    parser.add_argument(
        "--model",
        default="dsb2018",
        help="starting model, a shipped name or a model folder that never trained on --data",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench_finetune"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    root = Path(args.data) if Path(args.data).is_dir() else dataset_path(args.data)
    files = list_dataset(root)
    order = np.random.default_rng(args.seed).permutation(len(files))
    if args.part == "develop":
        order = order[N_TUNE + N_TEST :]
    if len(order) < N_TUNE + N_TEST:
        raise SystemExit(f"bench_finetune: {root} has too few images for --part {args.part} ({len(order)})")
    tune = [files[i] for i in order[:N_TUNE]]
    test_names = [files[i].name for i in order[N_TUNE : N_TUNE + N_TEST]]
    test = load_dataset(root, names=test_names, progress=False)
    before = evaluate_model(load_model(args.model), test, name=args.model, progress=False)
    if args.out.exists():
        raise SystemExit(f"bench_finetune: {args.out} exists; remove it or give another --out")
    with tempfile.TemporaryDirectory() as work:
        mine = paired_folder(tune, Path(work) / "mine")
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nucseg.cli",
                "train",
                "--data",
                str(mine),
                "--out",
                str(args.out),
                "--init-from",
                str(args.model),
                "--epochs",
                str(args.epochs),
                "--time-limit",
                str(args.minutes),
                "--device",
                "cpu",
                *(["--config", str(args.config)] if args.config else []),
            ],
            check=True,
        )
        minutes = (time.perf_counter() - started) / 60
    after = evaluate_model(load_model(args.out / "model"), test, name="fine-tuned", progress=False)
    print(
        f"{root.name}: {args.model} fine-tuned on {N_TUNE} images, scored on {N_TEST} others (seed {args.seed}, "
        f"part {args.part}, --epochs {args.epochs}"
        f"{f', --config {args.config}' if args.config else ''}); "
        f"training took {minutes:.1f} min\n"
    )
    print("| model | DSB score | AP@0.5 | AP@0.75 | F1@0.5 |")
    print("|---|---:|---:|---:|---:|")
    for label, report in ((f"{args.model} (before)", before), ("fine-tuned (after)", after)):
        scores = report.overall
        print(f"| {label} | {scores.dsb_score:.3f} | {scores.ap50:.3f} | {scores.ap75:.3f} | {scores.f1_50:.3f} |")
    print(
        f"\nAP@0.5 {before.overall.ap50:.3f} -> {after.overall.ap50:.3f} "
        f"({after.overall.ap50 - before.overall.ap50:+.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

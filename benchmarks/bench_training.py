"""Training throughput (images/s) and peak memory at the default training config.

Usage::

    nice python benchmarks/bench_training.py [DATASET] [--steps 20] [--warmup 3] [--workers N]

``DATASET`` defaults to the full DSB2018 training set
(``dsb2018/stage1_train`` of the data root (``../shared/data`` or ``$NUCSEG_DATA_DIR``)) when it is present, else the
four test fixtures. The run uses :class:`nucseg.training.config.TrainConfig`'s
defaults (256-pixel crops, batch 8, the default network, its DataLoader
workers) on the CPU, and the same data pipeline and optimisation step as
``nucseg train``: augmented crops from :class:`nucseg.training.CropDataset`
through a ``torch.utils.data.DataLoader``, forward, loss, backward, gradient
clipping, AdamW. Throughput counts only the timed steps after the warm-up,
data loading included. Peak memory is the maximum resident set size of this
process and of the (finished) DataLoader workers. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from nucseg.datasets.locations import dataset_path
from nucseg.training.config import TrainConfig
from nucseg.datasets.layouts import load_dataset
from nucseg.models.networks import build_model
from nucseg.training.targets import TARGET_CLASSES
from nucseg.training.data import CropDataset, EpochSampler, prepare_samples
from nucseg.training.loss import segmentation_loss

FULL_DATASET = dataset_path("dsb2018/stage1_train")  # ../shared/data, or $NUCSEG_DATA_DIR
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "data" / "dsb2018"


def peak_rss_mib(who: int) -> float:
    """Peak resident set size in MiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=FULL_DATASET if FULL_DATASET.is_dir() else FIXTURES)
    parser.add_argument("--steps", type=int, default=20, help="timed optimisation steps (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    args = parser.parse_args()

    config = TrainConfig(device="cpu")
    if args.workers is not None:
        config = config.updated(num_workers=args.workers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overlapping-mask reports are not what is measured
        samples = load_dataset(args.dataset)
    prepared = prepare_samples(samples, config)
    del samples

    torch.manual_seed(config.seed)
    network = build_model(config.model, out_channels=TARGET_CLASSES[config.target], **config.model_options)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sampler = EpochSampler((args.warmup + args.steps) * config.batch_size)
    loader = torch.utils.data.DataLoader(
        CropDataset(prepared, config),
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=True,
    )
    network.train()
    data_seconds = 0.0
    started = waited = time.perf_counter()
    for step, (images, targets) in enumerate(loader):
        if step >= args.warmup:
            data_seconds += time.perf_counter() - waited
        loss = segmentation_loss(network(images), targets, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
        optimizer.step()
        waited = time.perf_counter()
        if step == args.warmup - 1:
            started = waited  # the timed steps begin when the warm-up ends
    seconds = time.perf_counter() - started
    del loader  # ends the workers, so that their peak memory is counted

    images_per_second = args.steps * config.batch_size / seconds
    parameters = sum(p.numel() for p in network.parameters())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"Dataset: `{args.dataset}` ({len(prepared)} images); {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"load average before the end: {load}\n"
    )
    print("| setting | value |")
    print("|---|---|")
    print(f"| model | `{config.model}` {config.model_options or '(defaults)'}, {parameters / 1e6:.2f} M parameters |")
    print(f"| crop, batch, workers | {config.crop_size} px, {config.batch_size}, {config.num_workers} |")
    print(f"| timed steps (after {args.warmup} warm-up) | {args.steps} |")
    print(f"| throughput | **{images_per_second:.1f} images/s** ({seconds / args.steps:.2f} s per step) |")
    print(f"| of which waiting for data | {data_seconds:.1f} s of {seconds:.1f} s |")
    print(f"| peak RSS, main process | {peak_rss_mib(resource.RUSAGE_SELF):.0f} MiB |")
    print(
        f"| peak RSS, largest DataLoader worker (pages shared with the main process included) | "
        f"{peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB |"
    )


if __name__ == "__main__":
    main()

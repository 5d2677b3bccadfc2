"""Time loading the DSB2018 training set: first load (empty cache), then the cached reload.

Usage::

    nice python benchmarks/bench_dataset_load.py [DATASET] [--workers N]

``DATASET`` defaults to ``dsb2018/stage1_train`` of the data root
(``../shared/data`` or ``$NUCSEG_DATA_DIR``). The decode cache goes to a fresh
temporary folder, removed afterwards, so that the first load really decodes
every PNG. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from nucseg.datasets.locations import dataset_path
from nucseg.datasets.layouts import load_dataset

DEFAULT_DATASET = dataset_path("dsb2018/stage1_train")  # ../shared/data, or $NUCSEG_DATA_DIR


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decoding workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed_load(root: Path, cache_dir: Path, workers: int | None) -> tuple[float, float, list]:
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overlapping-mask reports are not what is timed
        samples = load_dataset(root, cache_dir=cache_dir, workers=workers)
    return time.perf_counter() - start, _cpu_seconds() - start_cpu, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPU count)")
    args = parser.parse_args()
    if not args.dataset.is_dir():
        parser.error(f"{args.dataset}: dataset folder does not exist")

    with tempfile.TemporaryDirectory(prefix="nucseg-bench-cache-") as cache:
        rows = []
        for label in ("first load (empty cache)", "cached reload"):
            seconds, cpu_seconds, samples = _timed_load(args.dataset, Path(cache), args.workers)
            nuclei = sum(len(np.unique(s.labels)) - (s.labels.min() == 0) for s in samples)
            rows.append((label, seconds, cpu_seconds, len(samples), nuclei))
            del samples

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"Dataset: `{args.dataset}`; {os.cpu_count()} CPU cores, workers={args.workers or os.cpu_count()}, "
        f"load average {load}\n"
    )
    print("| load | seconds | CPU seconds | images | masks |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds, cpu_seconds, images, nuclei in rows:
        print(f"| {label} | {seconds:.1f} | {cpu_seconds:.1f} | {images} | {nuclei} |")


if __name__ == "__main__":
    main()

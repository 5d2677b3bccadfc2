"""Size of a config's training data packed by ``nucseg pack``, and how far JPEG moves the network's input.

Usage::

    python benchmarks/bench_pack.py [--config configs/nuclei_unet.yaml] [--quality 95 90] [--images 10]

Packs the datasets of the config (under the data root) exactly and at each
JPEG quality into a temporary folder, and prints a markdown table: the size of
each packed dataset, and for the JPEG copies the mean absolute difference of
the network input (:func:`nucseg.preprocess.normalize.prepare_image`, 0-1 is the
1st-99.8th percentile range) from the exact copy, over the first ``--images``
images of each dataset.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from nucseg.datasets.layouts import load_dataset
from nucseg.datasets.pack import pack_datasets
from nucseg.preprocess.normalize import prepare_image
from nucseg.training.config import load_config_file, TrainConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/nuclei_unet.yaml"))
    parser.add_argument("--quality", type=int, nargs="*", default=[95, 90])
    parser.add_argument("--images", type=int, default=10)
    args = parser.parse_args(argv)

    paths = [entry["path"] for entry in TrainConfig.from_dict(load_config_file(args.config)).datasets]
    with tempfile.TemporaryDirectory() as work:
        exact = pack_datasets(paths, Path(work) / "exact")
        lossy = {
            quality: pack_datasets(paths, Path(work) / f"q{quality}", jpeg_quality=quality) for quality in args.quality
        }
        print(f"{args.config}: {len(paths)} datasets\n")
        print(
            "| dataset | exact MB | " + " | ".join(f"JPEG {q}: MB, mean input difference" for q in args.quality) + " |"
        )
        print("|---|---:|" + "---:|" * len(args.quality))
        for i, packed in enumerate(exact):
            reference = load_dataset(packed.folder, cache_dir=False)[: args.images]
            cells = [f"{packed.bytes / 1e6:.1f}"]
            for quality in args.quality:
                copy = {s.name: s for s in load_dataset(lossy[quality][i].folder, cache_dir=False)}
                difference = np.mean(
                    [np.abs(prepare_image(copy[s.name].image) - prepare_image(s.image)).mean() for s in reference]
                )
                cells.append(f"{lossy[quality][i].bytes / 1e6:.1f}, {difference:.4f}")
            print(f"| {paths[i]} | " + " | ".join(cells) + " |")
        totals = [sum(p.bytes for p in exact)] + [sum(p.bytes for p in lossy[q]) for q in args.quality]
        print("| all | " + " | ".join(f"{total / 1e6:.1f}" for total in totals) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Whole-process speed of ``nucseg segment`` on a folder of mixed real images, as a user waits for it.

Usage::

    python benchmarks/bench_folder.py [--data DATASET] [--split-from MODEL] [--repeat 3]

The folder is the validation images of the shipped model's stored split of
DSB2018 stage-1 (66 images of 0.07-1.4 megapixels, mixed kinds and sizes;
``--data`` defaults to ``dsb2018/stage1_train`` under the data root), or, without
that set, the 4 test fixtures. Every command is the full CLI in a fresh
process, start-up (imports, loading the model) and writing the label images
included. The commands run interleaved, ``--repeat`` rounds, so that the
drift of a shared machine hits them alike; the table gives the median wall
time of each and its ratio to the classical baseline's, measured in the same
run. The float-graph rows run the model's float32 ONNX graph instead of the
int8 one the shipped models run by default. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from nucseg.datasets.locations import dataset_path
from nucseg.models.registry import package_models_dir

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "dsb2018"
COMMANDS = {
    "default (automatic sizing)": [],
    "`--scale 1` (one pass)": ["--scale", "1"],
    "default, float graph (`--backend onnxruntime`)": ["--backend", "onnxruntime"],
    "`--scale 1`, float graph": ["--scale", "1", "--backend", "onnxruntime"],
    "classical baseline (`--model classical`)": ["--model", "classical"],
}


def validation_images(data: Path, model_dir: Path) -> list[Path]:
    """The image files of the validation names stored in ``model_dir`` (all of ``data`` if none match)."""
    split = json.loads((model_dir / "config.json").read_text()).get("split", {})
    names = set(split.get("validation", []))
    images = sorted(data.glob("*/images/*.png"))
    chosen = [path for path in images if path.parents[1].name in names]
    return chosen or images


def megapixels(paths: list[Path]) -> float:
    total = 0
    for path in paths:
        with Image.open(path) as image:
            total += image.width * image.height
    return total / 1e6


def run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=dataset_path("dsb2018/stage1_train"))
    parser.add_argument("--split-from", type=Path, default=package_models_dir() / "dsb2018")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    source = args.data if args.data.is_dir() else FIXTURES
    images = validation_images(source, args.split_from)
    mp = megapixels(images)
    nucseg = [sys.executable, "-m", "nucseg.cli", "segment"]
    times: dict[str, list[float]] = {label: [] for label in COMMANDS}
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "images"
        folder.mkdir()
        for path in images:
            (folder / path.name).symlink_to(path.resolve())
        for _ in range(args.repeat):
            for label, options in COMMANDS.items():
                out = Path(work) / "out"
                times[label].append(run([*nucseg, str(folder), "--out", str(out), "--overwrite", *options]))
        one = [*nucseg, str(images[0]), "--out", str(Path(work) / "one"), "--overwrite"]
        small = statistics.median(run(one) for _ in range(args.repeat))
        skip = statistics.median(run([*nucseg, str(folder), "--out", str(Path(work) / "out")])
                                 for _ in range(args.repeat))
    classical = statistics.median(times["classical baseline (`--model classical`)"])
    print(f"{len(images)} images from {source}, {mp:.1f} megapixels; median of {args.repeat} runs, whole process\n")
    print("| command | seconds | s per megapixel | × classical |")
    print("|---|---:|---:|---:|")
    for label, measured in times.items():
        median = statistics.median(measured)
        print(f"| {label} | {median:.1f} | {median / mp:.2f} | {median / classical:.2f} |")
    print(f"| one image ({images[0].name[:8]}, default) | {small:.2f} | | |")
    print(f"| the folder again, every output existing | {skip:.2f} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Whole-process speed of ``nucseg segment`` on a folder of mixed real images, as a user waits for it.

Usage::

    python benchmarks/bench_folder.py [--data DATASET] [--split-from MODEL] [--repeat 3]
    git worktree add /tmp/before COMMIT && python benchmarks/bench_folder.py --before /tmp/before/src

The folder is the validation images of the shipped model's stored split of
DSB2018 stage-1 (66 images of 0.07-1.4 megapixels, mixed kinds and sizes;
``--data`` defaults to ``dsb2018/stage1_train`` under the data root), or, without
that set, the 4 test fixtures. Every command is the full CLI in a fresh
process, start-up (imports, loading the model) and writing the label images
included. The commands run interleaved, ``--repeat`` rounds, so that the
drift of a shared machine hits them alike; the table gives the median wall
time of each and its ratio to the classical baseline's, measured in the same
run. The float-graph rows run the model's float32 ONNX graph instead of the
int8 one the shipped models run by default. ``--before SRC`` also runs every
command with another version of nucseg (the ``src`` folder of a checkout of
it, put first on ``PYTHONPATH``), interleaved with this one, and adds its
times and the ratio: a change's speed-up measured side by side. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
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


def run(command: list[str], source: Path | None = None) -> float:
    """Wall seconds of ``command``; with ``source``, that nucseg ``src`` folder is imported instead."""
    env = None if source is None else {**os.environ, "PYTHONPATH": str(source)}
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=dataset_path("dsb2018/stage1_train"))
    parser.add_argument("--split-from", type=Path, default=package_models_dir() / "dsb2018")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--before", type=Path, metavar="SRC", help="the src folder of another nucseg version to time beside this one"
    )
    args = parser.parse_args(argv)
    if args.before is not None and not (args.before / "nucseg" / "version.py").is_file():
        raise SystemExit(f"bench_folder: {args.before} is not a nucseg src folder (no nucseg/version.py in it)")

    source = args.data if args.data.is_dir() else FIXTURES
    images = validation_images(source, args.split_from)
    mp = megapixels(images)
    nucseg = [sys.executable, "-m", "nucseg.cli", "segment"]
    times: dict[str, list[float]] = {label: [] for label in COMMANDS}
    before: dict[str, list[float]] = {label: [] for label in COMMANDS}
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "images"
        folder.mkdir()
        for path in images:
            (folder / path.name).symlink_to(path.resolve())
        for _ in range(args.repeat):
            for label, options in COMMANDS.items():
                out = Path(work) / "out"
                command = [*nucseg, str(folder), "--out", str(out), "--overwrite", *options]
                times[label].append(run(command))
                if args.before is not None:
                    before[label].append(run(command, args.before))
        one = [*nucseg, str(images[0]), "--out", str(Path(work) / "one"), "--overwrite"]
        small = statistics.median(run(one) for _ in range(args.repeat))
        skip = statistics.median(
            run([*nucseg, str(folder), "--out", str(Path(work) / "out")]) for _ in range(args.repeat)
        )
    classical = statistics.median(times["classical baseline (`--model classical`)"])
    print(f"{len(images)} images from {source}, {mp:.1f} megapixels; median of {args.repeat} runs, whole process\n")
    extra = " | before: seconds | before: s per megapixel | × before" if args.before is not None else ""
    print(f"| command | seconds | s per megapixel | × classical{extra} |")
    print("|---|---:|---:|---:" + ("|---:|---:|---:" if extra else "") + "|")
    for label, measured in times.items():
        median = statistics.median(measured)
        row = f"| {label} | {median:.1f} | {median / mp:.2f} | {median / classical:.2f}"
        if args.before is not None:
            then = statistics.median(before[label])
            row += f" | {then:.1f} | {then / mp:.2f} | {median / then:.2f}"
        print(row + " |")
    blanks = " | | |" if args.before is not None else ""
    print(f"| one image ({images[0].name[:8]}, default) | {small:.2f} | | |{blanks}")
    print(f"| the folder again, every output existing | {skip:.2f} | | |{blanks}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

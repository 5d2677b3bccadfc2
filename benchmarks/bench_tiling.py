"""Paired timing of two tiling settings of ``Model.probabilities`` on CPU.

The speed of a shared 2-core machine drifts by 20 % or more within minutes,
so two settings timed in separate runs cannot be compared. This script
alternates them on the same image (the shipped brightfield sample tiled to
2048 x 2048, as in ``bench_inference.py``) and reports, per backend, the
best and median seconds per megapixel of each, and the median ratio of the
back-to-back pairs.

Usage::

    python benchmarks/bench_tiling.py [--model PATH] [--repeat 8] \\
        [--baseline 512,64,2] [--candidate 768,64,1]

A setting is ``TILE_SIZE,OVERLAP,BATCH_SIZE`` in pixels and tiles per call.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_setting(text: str) -> tuple[int, int, int]:
    """``"768,64,1"`` -> ``(768, 64, 1)``."""
    try:
        tile_size, overlap, batch_size = (int(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TILE_SIZE,OVERLAP,BATCH_SIZE, got {text!r}") from None
    return tile_size, overlap, batch_size


def main() -> None:
    from bench_inference import load_benchmark_model, test_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or registered name (default: the shipped model)")
    parser.add_argument("--size", type=int, default=2048, help="side of the timed image in pixels")
    parser.add_argument("--repeat", type=int, default=8, help="pairs timed per backend")
    parser.add_argument("--baseline", type=parse_setting, default=(512, 64, 2))
    parser.add_argument("--candidate", type=parse_setting, default=(768, 64, 1))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        model, note = load_benchmark_model(args.model, Path(work))
        image = test_image(args.size)
        megapixels = image.shape[0] * image.shape[1] / 1e6
        settings = {"baseline": args.baseline, "candidate": args.candidate}
        print(note)
        print(
            f"image {image.shape[1]} x {image.shape[0]}; {args.repeat} alternating pairs per backend; "
            "settings are tile size, overlap, tiles per call\n"
        )
        print("| backend | setting | best s/MP | median s/MP | median candidate/baseline ratio |")
        print("|---|---|---:|---:|---:|")
        for backend in ("onnxruntime", "torch"):
            model.probabilities(image, backend=backend)  # warm-up (and the ONNX export)
            seconds = {name: [] for name in settings}
            for _ in range(args.repeat):
                for name, (tile_size, overlap, batch_size) in settings.items():
                    start = time.perf_counter()
                    model.probabilities(
                        image, tile_size=tile_size, overlap=overlap, batch_size=batch_size, backend=backend
                    )
                    seconds[name].append((time.perf_counter() - start) / megapixels)
            ratio = np.median(np.array(seconds["candidate"]) / np.array(seconds["baseline"]))
            for name, setting in settings.items():
                cell = f"{ratio:.2f}" if name == "candidate" else ""
                print(
                    f"| {backend} | {name} {','.join(map(str, setting))} | {min(seconds[name]):.3f} "
                    f"| {np.median(seconds[name]):.3f} | {cell} |"
                )


if __name__ == "__main__":
    main()

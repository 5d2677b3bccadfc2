"""Speed of instance post-processing and of the classical baseline (one core).

Synthetic field: ``--nuclei`` elliptic nuclei (radii 6-14 px, some touching)
on a square image; probability maps are the blurred one-hot three-class and
binary targets, so that the numbers reflect typical nucleus densities.

Usage::

    nice python benchmarks/bench_postprocess.py [--size 1024] [--nuclei 300] [--repeat 5]

Prints a markdown table of seconds per call and seconds per megapixel.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from skimage.draw import ellipse  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from nucseg.inference.classical import segment_classical  # noqa: E402
from nucseg.postprocess.watershed import instances_from_probabilities  # noqa: E402
from nucseg.postprocess.watershed import PostprocessConfig


def synthetic_labels(size: int, n_nuclei: int, seed: int = 0) -> np.ndarray:
    """Random ellipses; later ones overwrite earlier ones where they overlap."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), dtype=np.int32)
    for i in range(1, n_nuclei + 1):
        r, c = rng.uniform(0, size, 2)
        rr, cc = ellipse(
            r, c, rng.uniform(6, 14), rng.uniform(6, 14), shape=labels.shape, rotation=rng.uniform(0, np.pi)
        )
        labels[rr, cc] = i
    return labels


def probability_maps(labels: np.ndarray, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Blurred one-hot (3, H, W) three-class and (2, H, W) binary maps, float32."""
    boundary = find_boundaries(labels, mode="inner")
    classes = np.where(boundary, 2, np.where(labels > 0, 1, 0))
    three = np.stack([ndi.gaussian_filter((classes == k).astype(np.float32), sigma) for k in range(3)])
    three /= three.sum(axis=0, keepdims=True)
    binary = np.stack([three[0], three[1] + three[2]])
    return three.astype(np.float32), binary.astype(np.float32)


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--nuclei", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    labels = synthetic_labels(args.size, args.nuclei)
    three, binary = probability_maps(labels)
    rng = np.random.default_rng(1)
    image = np.where(labels > 0, 180, 30).astype(np.float32)
    image = np.clip(ndi.gaussian_filter(image, 1.5) + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
    megapixels = labels.size / 1e6

    cases = [
        ("three-class watershed", lambda: instances_from_probabilities(three)),
        ("binary components", lambda: instances_from_probabilities(binary)),
        ("binary + distance split", lambda: instances_from_probabilities(binary, PostprocessConfig(split_binary=True))),
        ("classical baseline", lambda: segment_classical(image)),
    ]
    print(f"{args.size} x {args.size}, {len(np.unique(labels)) - 1} nuclei, best of {args.repeat}, one thread\n")
    print("| step | objects found | s / image | s / megapixel |")
    print("|---|---:|---:|---:|")
    for name, fn in cases:
        found = int(fn().max())
        seconds = best_time(fn, args.repeat)
        print(f"| {name} | {found} | {seconds:.3f} | {seconds / megapixels:.3f} |")


if __name__ == "__main__":
    main()

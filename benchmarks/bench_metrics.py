"""Speed of the instance metrics on one large image (one core).

Synthetic ground truth: ``--objects`` discs (radii 5-12 px) on a square image,
placed by rejection so that they barely overlap. The prediction perturbs it:
each object is kept, shifted by up to 3 px, dilated or eroded by one pixel, or
dropped (5 %), and 5 % spurious discs are added, so that matches exist at some
thresholds and not at others.

Usage::

    nice python benchmarks/bench_metrics.py [--size 1024] [--objects 500] [--repeat 7]

Prints a markdown table of the median seconds per image.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from skimage.draw import disk  # noqa: E402

from nucseg.evaluation.metrics import dsb_score, image_scores, iou_matrix
from nucseg.evaluation.metrics import match_instances  # noqa: E402


def synthetic_truth(size: int, n_objects: int, rng: np.random.Generator) -> np.ndarray:
    """Random discs; a disc whose centre lies inside an earlier one is redrawn."""
    labels = np.zeros((size, size), dtype=np.int32)
    label = 0
    while label < n_objects:
        center = rng.uniform(0, size, 2)
        if labels[int(center[0]), int(center[1])]:
            continue
        label += 1
        rr, cc = disk(center, rng.uniform(5, 12), shape=labels.shape)
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = label
    return labels


def perturbed(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pred = np.zeros_like(labels)
    objects = ndi.find_objects(labels)
    n = len(objects)
    for label, box in enumerate(objects, start=1):
        if box is None or rng.random() < 0.05:
            continue
        padded = tuple(slice(max(s.start - 4, 0), s.stop + 4) for s in box)
        mask = labels[padded] == label
        action = rng.integers(0, 4)
        if action == 1:
            mask = ndi.shift(mask, rng.integers(-3, 4, size=2), order=0)
        elif action == 2:
            mask = ndi.binary_dilation(mask)
        elif action == 3:
            mask = ndi.binary_erosion(mask)
        pred[padded][mask] = label
    for extra in range(int(0.05 * n)):
        rr, cc = disk(rng.uniform(0, labels.shape[0], 2), rng.uniform(4, 8), shape=labels.shape)
        pred[rr, cc] = n + 1 + extra
    return pred


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    truth = synthetic_truth(args.size, args.objects, rng)
    pred = perturbed(truth, rng)
    scores = image_scores(truth, pred)
    print(
        f"{args.size}x{args.size} image, {scores.n_true} true and {scores.n_pred} predicted objects, "
        f"DSB score {scores.dsb_score:.3f}, median of {args.repeat} runs\n"
    )

    cases = [
        ("`iou_matrix`", lambda: iou_matrix(truth, pred)),
        ("`match_instances` (IoU > 0.5)", lambda: match_instances(truth, pred)),
        ("`dsb_score`", lambda: dsb_score(truth, pred)),
        ("`image_scores` (all scores)", lambda: image_scores(truth, pred)),
    ]
    print("| function | seconds per image |")
    print("|---|---|")
    for name, fn in cases:
        print(f"| {name} | {median_time(fn, args.repeat):.3f} |")


if __name__ == "__main__":
    main()

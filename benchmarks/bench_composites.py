"""Fluorescence composites told from H&E and brightfield: the confusion table of the rule of
:func:`nucseg.datasets.kinds.composite_evidence`, and how often it names the nuclear channel.

Positives are 8-bit RGB composites built from the annotated fluorescence sets (``isbi2009_fluo``,
``aitslab_u2os_fluo`` and DSB2018's fluorescence images): the nuclei image in one channel (chosen at random),
and in the others real-looking structures of the same cells: a cytoplasm-like signal (the nuclei grown by
6-14 pixels, textured, blurred and shifted), a mitochondria-like one (filaments of thresholded smooth noise
around the nuclei), another fluorescence image's content, or nothing (a two-colour merge).
Negatives are every image of ``monuseg_train_he`` and ``gbm40_he`` (H&E) and DSB2018's H&E/brightfield
images (told by :func:`nucseg.datasets.kinds.image_kind`), and DSB2018's gray fluorescence images stored as
RGB(A), which must stay gray fluorescence.

Usage::

    nice python benchmarks/bench_composites.py [--data ../shared/data] [--per-set 40] [--seed 0]

Prints markdown tables.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from nucseg.datasets.kinds import composite_evidence, image_kind
from nucseg.datasets.locations import data_root
from nucseg.io.images import read_image, read_labels


def _scaled(channel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``channel`` stretched to a random brightness (40-100 % of 255), uint8."""
    channel = channel.astype(np.float32)
    top = np.percentile(channel, 99.8) or 1.0
    return np.clip(channel / top * 255 * rng.uniform(0.4, 1.0), 0, 255).astype(np.uint8)


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    noise = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return (noise - noise.mean()) / (noise.std() or 1.0)


def cytoplasm_like(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Nuclei grown by 6-14 pixels into touching cell bodies, textured, blurred and shifted."""
    grown = ndi.distance_transform_edt(labels == 0) <= rng.uniform(6, 14)
    texture = 1.0 + 0.3 * _smooth_noise(labels.shape, 4, rng)
    signal = ndi.gaussian_filter(grown * texture, 3)
    return np.roll(signal, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))


def mitochondria_like(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Filaments (ridges of thresholded smooth noise) in a ring around every nucleus."""
    ring = (ndi.distance_transform_edt(labels == 0) <= rng.uniform(10, 20)) & (labels == 0)
    ridges = np.abs(_smooth_noise(labels.shape, 2, rng)) < 0.25
    return ndi.gaussian_filter((ring & ridges).astype(np.float32), 0.8)


def other_content(other: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Another fluorescence image, tiled or cropped to ``shape``."""
    reps = (-(-shape[0] // other.shape[0]), -(-shape[1] // other.shape[1]))
    return np.tile(other, reps)[: shape[0], : shape[1]]


def build_composite(
    nuclei: np.ndarray, labels: np.ndarray, other: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, int, str]:
    """An 8-bit RGB composite: ``nuclei`` in a random channel, other structures in the others.

    Returns the image, its nuclear channel (0-based) and what the other channels hold.
    """
    nuclear = int(rng.integers(3))
    kinds = list(rng.choice(["cytoplasm", "mitochondria", "other image", "empty"], size=2, replace=False))
    composite = np.zeros(nuclei.shape + (3,), dtype=np.uint8)
    composite[..., nuclear] = _scaled(nuclei, rng)
    makers = {
        "cytoplasm": lambda: cytoplasm_like(labels, rng),
        "mitochondria": lambda: mitochondria_like(labels, rng),
        "other image": lambda: other_content(other, nuclei.shape),
        "empty": lambda: np.zeros(nuclei.shape),
    }
    for channel, kind in zip([c for c in range(3) if c != nuclear], kinds):
        composite[..., channel] = _scaled(makers[kind](), rng) if kind != "empty" else 0
    noise = rng.normal(0, 1.5, composite.shape)
    return np.clip(composite + noise, 0, 255).astype(np.uint8), nuclear, " + ".join(sorted(kinds))


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else image[..., :3].mean(axis=2)


def _pairs(folder: Path, names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (read_image(folder / "images" / f"{name}.png"), read_labels(folder / "masks" / f"{name}.tif")) for name in names
    ]


def _dsb_fluorescence_labels(root: Path, names: list[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for sample in names:
        image = read_image(next((sample / "images").iterdir()))
        labels = np.zeros(image.shape[:2], dtype=np.int32)
        for index, mask in enumerate(sorted((sample / "masks").iterdir()), start=1):
            labels[read_image(mask) > 0] = index
        pairs.append((image, labels))
    return pairs


def _spread(evidences: list, field: str) -> str:
    """``"0.01-0.20 (median 0.05)"`` of one field of the evidences; images with one content channel do not count."""
    values = [getattr(evidence, field) for evidence in evidences if evidence is not None]
    if not values:
        return "(one content channel)"
    return f"{min(values):.2f}-{max(values):.2f} (median {np.median(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--per-set", type=int, default=40, help="composites built from each fluorescence set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = args.data or data_root()
    rng = np.random.default_rng(args.seed)

    sources: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name in ("isbi2009_fluo", "aitslab_u2os_fluo"):
        names = sorted(path.stem for path in (root / name / "images").glob("*.png"))
        chosen = sorted(rng.choice(names, size=min(args.per_set, len(names)), replace=False))
        sources[name] = _pairs(root / name, chosen)
    negatives: dict[str, list[np.ndarray]] = {"monuseg_train_he": [], "gbm40_he": []}
    for name in negatives:
        negatives[name] = [read_image(path) for path in sorted((root / name / "images").glob("*.png"))]
    dsb_samples = sorted((root / "dsb2018" / "stage1_train").iterdir())
    gray: list[Path] = []
    for sample in dsb_samples:
        image = read_image(next((sample / "images").iterdir()))
        kind = image_kind(image)
        if kind == "fluorescence":
            gray.append(sample)
        else:
            negatives.setdefault(f"dsb2018 {kind}", []).append(image)
    chosen_gray = [gray[i] for i in sorted(rng.choice(len(gray), size=min(args.per_set, len(gray)), replace=False))]
    sources["dsb2018 fluorescence"] = _dsb_fluorescence_labels(root, chosen_gray)
    negatives["dsb2018 fluorescence, gray as RGB(A)"] = [image for image, _ in sources["dsb2018 fluorescence"]]

    all_nuclei = [_gray(image) for pairs in sources.values() for image, _ in pairs]
    rows = []
    hints: Counter = Counter()
    for name, pairs in sources.items():
        called, evidences = 0, []
        for image, labels in pairs:
            other = all_nuclei[int(rng.integers(len(all_nuclei)))]
            composite, nuclear, content = build_composite(_gray(image), labels, other, rng)
            evidence = composite_evidence(composite)
            evidences.append(evidence)
            called += bool(evidence and evidence.composite)
            if evidence is not None:
                hints[(content, evidence.nuclear_channel == nuclear)] += 1
        rows.append((f"composites from {name}", "composite", len(pairs), called, evidences))
    for name, images in negatives.items():
        evidences = [composite_evidence(image) for image in images]
        called = sum(bool(evidence and evidence.composite) for evidence in evidences)
        rows.append((name, "not a composite", len(images), called, evidences))

    print("| images | truth | n | called composite | called not | background | channel correlation |")
    print("|---|---|---:|---:|---:|---|---|")
    for name, truth, n, called, evidences in rows:
        print(
            f"| {name} | {truth} | {n} | {called} | {n - called} | {_spread(evidences, 'background')} | "
            f"{_spread(evidences, 'correlation')} |"
        )
    print("\n| other channels of the composite | nuclear channel named right | of |")
    print("|---|---:|---:|")
    for content in sorted({content for content, _ in hints}):
        right, wrong = hints[(content, True)], hints[(content, False)]
        print(f"| {content} | {right} | {right + wrong} |")


if __name__ == "__main__":
    main()

"""Side-by-side crops of the sample images' overlays from two ``nucseg segment --sample --overlay`` runs.

Usage::

    nucseg segment --sample --overlay --out /tmp/before   # with the code before (a worktree of it on PYTHONPATH)
    nucseg segment --sample --overlay --out /tmp/after
    python tools/overlay_before_after.py /tmp/before /tmp/after docs/images/overlay_before_after.png

Each row is one sample image: a 200 x 200 crop of its centre, enlarged twice (nearest neighbour), before | after.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nucseg.datasets.locations import sample_image_paths
from nucseg.io.images import read_image, write_png

CROP = 200
ZOOM = 2
GAP = 8


def _crop(overlay: np.ndarray) -> np.ndarray:
    top, left = (overlay.shape[0] - CROP) // 2, (overlay.shape[1] - CROP) // 2
    crop = overlay[top : top + CROP, left : left + CROP, :3]
    return np.repeat(np.repeat(crop, ZOOM, axis=0), ZOOM, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    side = CROP * ZOOM
    rows = []
    for path in sample_image_paths():
        name = f"{path.stem}_overlay.png"
        pair = [_crop(read_image(folder / name)) for folder in (args.before, args.after)]
        rows.append(np.concatenate([pair[0], np.full((side, GAP, 3), 255, np.uint8), pair[1]], axis=1))
    gap = np.full((GAP, rows[0].shape[1], 3), 255, np.uint8)
    write_png(args.output, np.concatenate([part for row in rows for part in (row, gap)][:-1], axis=0))


if __name__ == "__main__":
    main()

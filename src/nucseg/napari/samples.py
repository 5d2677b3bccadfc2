"""The sample images shipped with nucseg, as napari sample data."""

from __future__ import annotations

from pathlib import Path

from nucseg.datasets.locations import sample_image_paths
from nucseg.io.images import read_image


def _sample(kind: str) -> list[tuple]:
    path = _path_of(kind)
    image = read_image(path)
    return [(image, {"name": path.stem, "rgb": image.ndim == 3})]


def _path_of(kind: str) -> Path:
    matches = [path for path in sample_image_paths() if path.name.startswith(f"{kind}_")]
    if not matches:
        raise FileNotFoundError(f"no {kind} sample image in the nucseg installation")
    return matches[0]


def fluorescence_sample() -> list[tuple]:
    """A DSB2018 fluorescence image (stage-1 training set, CC0)."""
    return _sample("fluorescence")


def histology_sample() -> list[tuple]:
    """A DSB2018 H&E histology image (stage-1 training set, CC0)."""
    return _sample("histology")


def brightfield_sample() -> list[tuple]:
    """A DSB2018 brightfield image (stage-1 training set, CC0)."""
    return _sample("brightfield")

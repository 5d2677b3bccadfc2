"""Where annotated data and shipped samples live: resolved here, and only here.

The annotated datasets (``dsb2018/stage1_train``, ``monuseg_train_he``, ...)
live in a *data root*: ``$NUCSEG_DATA_DIR`` when set, else ``shared/data``
beside the repository (``../shared/data`` of a checkout). Model configs
record dataset names relative to the data root (``dsb2018/stage1_train``),
never a path of the machine that trained them.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

#: Environment variable that overrides the data root.
DATA_DIR_VARIABLE = "NUCSEG_DATA_DIR"
#: File suffixes of the shipped sample images.
_SAMPLE_SUFFIXES = (".png",)


def data_root() -> Path:
    """The folder that holds the annotated datasets (it may not exist on this machine).

    ``$NUCSEG_DATA_DIR`` if set; else ``<repository>/../shared/data``, the
    repository being the checkout this package runs from.
    """
    configured = os.environ.get(DATA_DIR_VARIABLE)
    if configured:
        return Path(configured)
    repository = Path(__file__).resolve().parents[3]  # src/nucseg/datasets/locations.py
    return repository.parent / "shared" / "data"


def dataset_path(name: str) -> Path:
    """The folder of the dataset ``name`` (e.g. ``"dsb2018/stage1_train"``) under :func:`data_root`."""
    return data_root() / name


def dataset_name(path: str | Path) -> str:
    """How a model config records the dataset at ``path``: relative to the data root, else the folder's name."""
    path = Path(path).resolve()
    root = data_root().resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


def sample_image_paths() -> list[Path]:
    """The sample images shipped with nucseg (fluorescence, histology, brightfield DSB2018 images)."""
    folder = Path(str(importlib.resources.files("nucseg").joinpath("data", "samples")))
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _SAMPLE_SUFFIXES)

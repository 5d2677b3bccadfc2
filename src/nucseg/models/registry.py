"""The models shipped with nucseg, by name, and where their folders are."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from nucseg.errors import ModelError


#: Registered model names and what they are.
REGISTERED_MODELS = {
    "dsb2018": "U-Net trained on the Kaggle DSB2018 stage-1 images (shipped with nucseg)",
    "classical": "classical baseline: Otsu threshold, distance transform, watershed (no network)",
}


#: The model used when none is named.
DEFAULT_MODEL = "dsb2018"


def package_models_dir() -> Path:
    """Folder of the model folders shipped as package data (``nucseg/data/models``)."""
    return Path(str(importlib.resources.files("nucseg").joinpath("data", "models")))


def resolve_model_path(name_or_path: str | Path) -> Path:
    """The folder of a shipped model's name, or ``name_or_path`` itself if it is a folder.

    Raises
    ------
    ModelError
        A registered model missing from the installation, or no such folder.
    """
    if isinstance(name_or_path, str) and name_or_path in REGISTERED_MODELS:
        path = package_models_dir() / name_or_path
        if not (path / "config.json").is_file():
            raise ModelError(path, f"model {name_or_path!r} is not installed (its folder is missing from the "
                                   "nucseg package); reinstall nucseg, or give a model folder "
                                   "(--model PATH), or use --model classical for the classical baseline")
        return path
    path = Path(name_or_path)
    if not path.exists():
        raise ModelError(path, f"no such model folder, and not a registered model name "
                               f"({', '.join(REGISTERED_MODELS)})")
    return path

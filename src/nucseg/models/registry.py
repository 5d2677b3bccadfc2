"""The models shipped with nucseg, by name, and where their folders are."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from nucseg.errors import ModelError


#: Registered model names and what they are.
REGISTERED_MODELS = {
    "nuclei": "EfficientNet-Lite0 U-Net (ImageNet-pretrained encoder) for fluorescence, brightfield and H&E, "
    "trained on DSB2018, MoNuSeg, GBM40, ISBI 2009 and Aitslab U2OS (shipped with nucseg; "
    "non-commercial: MoNuSeg is CC BY-NC-SA 4.0)",
    "nuclei_unet": "the default before 2026-12-07: an 8-channel U-Net trained from scratch, dsb2018 fine-tuned on "
    "DSB2018, MoNuSeg, GBM40 and ISBI 2009 (shipped with nucseg; non-commercial: MoNuSeg is "
    "CC BY-NC-SA 4.0)",
    "dsb2018": "U-Net trained on the Kaggle DSB2018 stage-1 images alone, the seed's data (shipped with nucseg)",
    "classical": "classical baseline: Otsu threshold, distance transform, watershed (no network)",
}


#: The model used when none is named.
DEFAULT_MODEL = "nuclei"


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
            raise ModelError(
                path,
                f"model {name_or_path!r} is not installed (its folder is missing from the "
                "nucseg package); reinstall nucseg, or give a model folder "
                "(--model PATH), or use --model classical for the classical baseline",
            )
        return path
    path = Path(name_or_path)
    if not path.exists():
        raise ModelError(
            path, f"no such model folder, and not a registered model name ({', '.join(REGISTERED_MODELS)})"
        )
    if path.is_file() and path.name in PACKAGE_DESCRIPTIONS:  # the rdf.yaml of an unpacked bioimage.io package
        path = path.parent
    if path.is_file() and path.suffix.lower() == ".zip":
        path = unpacked_package(path)
    if (
        path.is_dir()
        and not (path / "config.json").is_file()
        and any((path / n).is_file() for n in PACKAGE_DESCRIPTIONS)
    ):
        raise ModelError(
            path,
            "is a bioimage.io package that nucseg did not write (it holds no nucseg "
            "config.json); nucseg loads its own exports only",
        )
    return path


#: File names of a bioimage.io package's description.
PACKAGE_DESCRIPTIONS = ("rdf.yaml", "bioimageio.yaml")


def unpacked_package(archive: Path) -> Path:
    """The folder a zipped model package (``nucseg export --format bioimageio --out X.zip``) unpacks to.

    Unpacked once into the cache (``$NUCSEG_CACHE_DIR/packages/<checksum>``), atomically.

    Raises
    ------
    ModelError
        Not a readable zip file.
    """
    import hashlib
    import zipfile

    from nucseg.datasets.cache import default_cache_dir
    from nucseg.io.atomic import atomic_directory

    digest = hashlib.sha256()
    with open(archive, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    target = default_cache_dir() / "packages" / digest.hexdigest()[:16]
    if target.is_dir():
        return target
    try:
        with zipfile.ZipFile(archive) as bundle, atomic_directory(target) as staging:
            bundle.extractall(staging)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(archive, f"cannot unpack the model package ({exc})") from None
    return target

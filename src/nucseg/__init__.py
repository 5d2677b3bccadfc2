"""nucseg: find and outline every cell nucleus in microscopy images."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nucseg")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from nucseg.errors import InputError, ModelError, NucsegError

__all__ = ["__version__", "InputError", "ModelError", "NucsegError", "load_model", "segment_many"]


def __getattr__(name: str):
    # nucseg.load_model imports nucseg.api (and torch) on first use only, so
    # that ``import nucseg`` stays light.
    if name == "load_model":
        from nucseg.api import load_model

        return load_model
    if name == "segment_many":  # nucseg.distributed imports dask only when it runs
        from nucseg.distributed import segment_many

        return segment_many
    raise AttributeError(f"module 'nucseg' has no attribute {name!r}")

"""nucseg: find and outline every cell nucleus in microscopy images."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nucseg")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from nucseg.errors import InputError, ModelError, NucsegError

__all__ = ["__version__", "InputError", "ModelError", "NucsegError"]

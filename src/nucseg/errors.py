"""Exceptions that carry a one-line, user-facing message.

Every error raised for bad user input names the offending file (or folder) and
the problem in a single line, so that the command line can print it as is,
without a traceback.
"""

from __future__ import annotations

import importlib
from pathlib import Path


class NucsegError(Exception):
    """Base class of all errors whose message is meant for the user."""


class _PathError(NucsegError):
    """An error about one file or folder: message ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

    def __reduce__(self):  # picklable across worker processes (args holds only the message)
        return (type(self), (self.path, self.problem))


class InputError(_PathError):
    """A user-supplied file or folder is missing, unreadable or inconsistent."""


class ModelError(_PathError):
    """A model file or folder is corrupt, foreign or incompatible."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


#: The extra that installs each optional dependency (``pip install "nucseg[EXTRA]"``).
EXTRAS = {
    "torch": "train",
    "torchvision": "train",
    "timm": "train",
    "safetensors": "train",
    "tensorboard": "train",
    "yaml": "train",
    "onnx": "train",
    "bioimageio.spec": "bioimageio",
    "bioimageio.core": "bioimageio",
}


def require(*modules: str, purpose: str) -> None:
    """Raise a one-line :class:`NucsegError` when a module is missing or installed but broken.

    Parameters
    ----------
    *modules
        Top-level module names, e.g. ``"torch"``; each is imported (the callers use them next).
    purpose
        What needs them, e.g. ``"training"``: the message reads
        ``"training needs torch, which is not installed: pip install 'nucseg[train]'"``, or for a module
        that is installed but fails to import (torchvision built for another torch, say) names the
        module and the first line of its error.
    """
    failures = {name: _import_failure(name) for name in modules}
    missing = [name for name, failure in failures.items() if isinstance(failure, ModuleNotFoundError)]
    if missing:
        extras = sorted({EXTRAS.get(name, "train") for name in missing})
        raise NucsegError(
            f"{purpose} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f'installed: pip install "nucseg[{",".join(extras)}]"'
        )
    for name, failure in failures.items():
        if failure is not None:
            remedy = (
                "torch, torchvision and timm must be builds made for each other, "
                "e.g. pip install --force-reinstall torch torchvision"
                if name in _TORCH_FAMILY
                else f"reinstall it, e.g. pip install --force-reinstall {name.split('.')[0]}"
            )
            raise NucsegError(
                f"{purpose} needs {name}, which is installed but fails to import ({first_line(failure)}): {remedy}"
            )


#: Packages whose compiled parts must match torch's build: PyPI's torchvision is built for PyPI's torch.
_TORCH_FAMILY = {"torch", "torchvision", "timm"}


def _import_failure(module: str) -> Exception | None:
    """None when ``module`` imports; a ModuleNotFoundError when it is absent; else the import's error."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == module.split(".")[0]:
            return exc
        return ImportError(str(exc))  # installed, but one of its own dependencies is missing
    except Exception as exc:  # noqa: BLE001 - any failure of an installed package is reported, not raised
        return exc
    return None

"""Exceptions that carry a one-line, user-facing message.

Every error raised for bad user input names the offending file (or folder) and
the problem in a single line, so that the command line can print it as is,
without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class NucsegError(Exception):
    """Base class of all errors whose message is meant for the user."""


class InputError(NucsegError):
    """A user-supplied file or folder is missing, unreadable or inconsistent."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class ModelError(NucsegError):
    """A model file or folder is corrupt, foreign or incompatible."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

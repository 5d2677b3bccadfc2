"""Writing outputs atomically: a reader never sees a half-written file.

:func:`atomic_write` and :func:`atomic_directory` write under a temporary name
beside the target and rename into place; :func:`remove_stale_temporaries`
cleans up after a writer that was killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from nucseg.errors import InputError


class OutputExistsError(InputError, FileExistsError):
    """An output file exists and overwriting it was not asked for."""


@contextlib.contextmanager
def atomic_write(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    A reader never sees a half-written file, and a failure (or a kill) leaves
    no partial output under the final name. The temporary file keeps the
    suffix of ``path`` so that writers that choose a format by suffix work,
    and is created with the usual permissions (``0o666`` less the umask).

    Raises
    ------
    OutputExistsError
        ``overwrite`` is False and ``path`` exists (a ``FileExistsError``
        and an :class:`~nucseg.errors.InputError`).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(path, "exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary_file(path)
    try:
        yield tmp
        if not overwrite and path.exists():
            raise OutputExistsError(path, "exists (use --overwrite to replace it)")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it in for ``path`` on success.

    A reader sees the old folder or the new one, never a mix, and a failure
    leaves the old folder untouched. Files in the new folder get the usual
    permissions (``0o666``, folders ``0o777``, less the umask), whatever the
    writers or copies chose.

    Raises
    ------
    OutputExistsError
        ``overwrite`` is False and ``path`` exists.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(path, "exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        for child in [tmp, *tmp.rglob("*")]:
            child.chmod((0o777 if child.is_dir() else 0o666) & ~umask)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _create_temporary_file(path: Path) -> Path:
    # Not tempfile.mkstemp: its files are private (0o600), and os.replace would
    # carry that mode to the output.
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path}: cannot create a temporary file beside it")


def remove_stale_temporaries(paths: Iterator[Path] | Sequence[Path]) -> list[Path]:
    """Delete temporary files and folders that an interrupted :func:`atomic_write` or :func:`atomic_directory`
    left beside ``paths``.

    A process killed while writing ``X_labels.tif`` leaves
    ``.X_labels.tif.<8 hex digits>.tmp.tif`` behind; the task that writes
    the image again removes it. Returns the files removed.
    """
    removed = []
    for path in map(Path, paths):
        if not path.parent.is_dir():
            continue
        pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp({re.escape(path.suffix)})?")
        for candidate in path.parent.iterdir():
            if pattern.fullmatch(candidate.name):
                remove_output(candidate)
                removed.append(candidate)
    return removed


def remove_output(path: Path) -> None:
    """Delete an output file or folder (a Zarr store) if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

"""The on-disk decode cache of datasets: decoded samples keyed by their files' paths, sizes and times."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nucseg.datasets.sample import Sample, SampleFiles
from nucseg.io.atomic import atomic_write


CACHE_FORMAT_VERSION = 2


def default_cache_dir() -> Path:
    """``$NUCSEG_CACHE_DIR`` if set, else ``~/.cache/nucseg``."""
    return Path(os.environ.get("NUCSEG_CACHE_DIR", Path.home() / ".cache" / "nucseg"))


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    fingerprint: str


@dataclass
class Decoded:
    """What a (possibly remote) decoding returns: a sample or an error, and the warnings raised."""

    sample: Sample | None
    messages: list[str] = field(default_factory=list)
    error: tuple[Path | None, str] | None = None  # NucsegError does not survive pickling


def cache_entry(files: SampleFiles, cache_dir: Path) -> CacheEntry:
    # The file name identifies the sample; the fingerprint inside tells if it is current.
    # (Absolute, not resolved, paths: resolving costs a system call per path component.)
    identity = (
        f"v{CACHE_FORMAT_VERSION}|{files.layout}|{os.path.abspath(files.image_path)}|"
        f"{os.path.abspath(files.mask_paths[0].parent)}"
    )
    name = hashlib.sha1(identity.encode()).hexdigest()
    parts = []
    for path in (files.image_path, *files.mask_paths):
        stat = os.stat(path)
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    fingerprint = hashlib.sha1("|".join(parts).encode()).hexdigest()
    return CacheEntry(cache_dir / "samples" / f"{name}.npy", fingerprint)


def read_cache(entry: CacheEntry, files: SampleFiles) -> Decoded | None:
    """The cached sample, or None if absent, stale or damaged."""
    try:
        with open(entry.path, "rb") as fh:
            meta = np.load(fh, allow_pickle=False)
            if meta.ndim != 1 or meta.size < 1 or str(meta[0]) != entry.fingerprint:
                return None
            image = np.load(fh, allow_pickle=False)
            labels = np.load(fh, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # absent, or damaged: rebuilt, never trusted
        return None
    if labels.shape != image.shape[:2]:
        return None
    sample = Sample(files.name, image, labels.astype(np.int32, copy=False), files.image_path)
    return Decoded(sample, [str(m) for m in meta[1:]])


def write_cache(entry: CacheEntry, decoded: Decoded) -> None:
    sample = decoded.sample
    labels = sample.labels
    if labels.max(initial=0) <= np.iinfo(np.uint16).max:
        labels = labels.astype(np.uint16)  # halves the cache; loaded back as int32
    meta = np.array([entry.fingerprint, *decoded.messages])
    with atomic_write(entry.path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, meta, allow_pickle=False)
        np.save(fh, np.ascontiguousarray(sample.image), allow_pickle=False)
        np.save(fh, labels, allow_pickle=False)

"""Kaggle DSB2018 run-length encoding and submission files.

The competition encodes each nucleus as space-separated pairs ``start
length``: pixels are numbered from 1 in column-major order (top to bottom,
then left to right), and each pair covers ``length`` consecutive pixels
starting at ``start``. A submission is a CSV file with the header
``ImageId,EncodedPixels`` and one line per nucleus; an image without nuclei
gets one line with empty ``EncodedPixels``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from nucseg.io.atomic import atomic_write

SUBMISSION_HEADER = ("ImageId", "EncodedPixels")


def rle_encode(mask: np.ndarray) -> list[int]:
    """Run-length encode a binary mask, DSB2018 style.

    Parameters
    ----------
    mask : ndarray, shape (H, W)
        Nonzero pixels are in the mask.

    Returns
    -------
    list of int
        ``[start_1, length_1, start_2, length_2, ...]``, starts 1-indexed in
        column-major order, increasing; empty for an empty mask.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    pixels = np.concatenate([[False], mask.ravel(order="F") != 0, [False]])
    changes = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    changes[1::2] -= changes[::2]
    return changes.tolist()


def format_rle(runs: Sequence[int]) -> str:
    """``[1, 3, 10, 2]`` -> ``"1 3 10 2"``."""
    return " ".join(str(int(value)) for value in runs)


def parse_rle(text: str) -> list[int]:
    """``"1 3 10 2"`` -> ``[1, 3, 10, 2]``; raises ``ValueError`` on anything but integers."""
    try:
        return [int(token) for token in text.split()]
    except ValueError:
        raise ValueError(f"run-length encoding must be space-separated integers, got {text[:50]!r}") from None


def rle_decode(rle: str | Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """Decode a DSB2018 run-length encoding into a binary mask.

    Parameters
    ----------
    rle
        ``"start length start length ..."`` or the same as a sequence of ints.
    shape
        (H, W) of the image.

    Returns
    -------
    mask : ndarray of bool, shape (H, W)

    Raises
    ------
    ValueError
        Odd number of values, a start below 1, a length below 1, runs that
        overlap or are not in increasing order, or a run past the last pixel.
    """
    runs = np.asarray(parse_rle(rle) if isinstance(rle, str) else list(rle), dtype=np.int64)
    height, width = (int(n) for n in shape)
    size = height * width
    if runs.size % 2:
        raise ValueError(f"run-length encoding needs start/length pairs, got {runs.size} values")
    starts, lengths = runs[::2] - 1, runs[1::2]
    if np.any(starts < 0) or np.any(lengths < 1):
        raise ValueError("run-length encoding has a start below 1 or a length below 1")
    ends = starts + lengths
    if np.any(starts[1:] < ends[:-1]):
        raise ValueError("run-length encoding has overlapping or unsorted runs")
    if ends.size and ends[-1] > size:
        raise ValueError(f"run-length encoding runs past the last pixel ({size}) of an image of shape {shape}")
    # +1 at each start, -1 at each end; the running sum is 1 inside runs.
    steps = np.zeros(size + 1, dtype=np.int8)
    steps[starts] = 1
    np.subtract.at(steps, ends, 1)
    flat = np.cumsum(steps[:-1], dtype=np.int8).astype(bool)
    return flat.reshape((width, height)).T.copy()


def labels_to_rles(labels: np.ndarray) -> list[str]:
    """Encode every object of a label image, in increasing label order.

    Parameters
    ----------
    labels : ndarray of non-negative int, shape (H, W)
        0 background; objects need not be numbered sequentially.

    Returns
    -------
    list of str
        One ``"start length ..."`` string per object; empty for no objects.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 2-D integer array, got {labels.dtype} of shape {labels.shape}")
    flat = labels.ravel(order="F")
    if flat.size and flat.min() < 0:
        raise ValueError("labels must be non-negative")
    # One stable sort groups every object's pixels, already in column-major
    # order, so no per-object full-image mask is ever built.
    order = np.argsort(flat, kind="stable")
    ids, first, counts = np.unique(flat[order], return_index=True, return_counts=True)
    rles = []
    for label, start, count in zip(ids, first, counts):
        if label == 0:
            continue
        pixels = order[start : start + count]
        breaks = np.flatnonzero(np.diff(pixels) != 1) + 1
        run_starts = pixels[np.concatenate([[0], breaks])]
        run_lengths = np.diff(np.concatenate([[0], breaks, [count]]))
        runs = np.empty(2 * run_starts.size, dtype=np.int64)
        runs[::2], runs[1::2] = run_starts + 1, run_lengths
        rles.append(format_rle(runs))
    return rles


def write_submission_csv(
    rows: Iterable[tuple[str, np.ndarray]],
    path: str | Path,
    *,
    overwrite: bool = True,
) -> Path:
    """Write a Kaggle DSB2018 submission file, atomically.

    Parameters
    ----------
    rows
        ``(image_id, labels)`` pairs; ``labels`` is an (H, W) label image.
    path
        Output CSV file: ``ImageId,EncodedPixels``, one line per nucleus, one
        line with empty ``EncodedPixels`` for an image without nuclei.
    overwrite
        If False, refuse to replace an existing file.

    Raises
    ------
    ValueError
        An image id that is empty, repeated, or holds a comma, quote or line break.
    FileExistsError
        ``overwrite`` is False and ``path`` exists.
    """
    return join_submission(path, (submission_lines(image_id, labels) for image_id, labels in rows), overwrite=overwrite)


def submission_lines(image_id: str, labels: np.ndarray) -> str:
    """The lines of one image in a submission file: ``image_id,RLE`` per nucleus, ``image_id,`` for none.

    Raises
    ------
    ValueError
        As :func:`check_image_id`.
    """
    check_image_id(image_id)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for rle in labels_to_rles(labels) or [""]:
        writer.writerow((image_id, rle))
    return buffer.getvalue()


def join_submission(path: str | Path, parts: Iterable[str], *, overwrite: bool = True) -> Path:
    """Write the header and the :func:`submission_lines` of every image (read one at a time), atomically.

    Raises
    ------
    ValueError
        An image id that appears twice.
    FileExistsError
        ``overwrite`` is False and ``path`` exists.
    """
    seen: set[str] = set()
    with atomic_write(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            handle.write(",".join(SUBMISSION_HEADER) + "\n")
            for part in parts:
                check_image_id(part.split(",", 1)[0], seen)
                handle.write(part)
    return Path(path)


def check_image_id(image_id: str, seen: set[str] | None = None) -> None:
    """Raise ``ValueError`` for an image id that is empty, holds a comma, quote or line break, or is in ``seen``
    (to which it is added)."""
    if not isinstance(image_id, str) or not image_id or any(ch in image_id for ch in ',"\r\n'):
        raise ValueError(f"image id must be a non-empty string without commas, quotes or line breaks: {image_id!r}")
    if seen is not None:
        if image_id in seen:
            raise ValueError(f"image id {image_id!r} appears twice")
        seen.add(image_id)

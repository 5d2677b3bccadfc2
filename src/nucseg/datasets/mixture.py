"""Several annotated datasets used together: where each lives, and how their images are named.

A training config's ``datasets`` list names folders relative to the working
directory or to the data root (:func:`nucseg.datasets.locations.data_root`).
Images of a mixture are named ``<dataset>/<image>`` (``gbm40_he/img_07``) in
splits, model folders and reports, so that two datasets may hold images of
the same name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from nucseg.datasets.locations import data_root
from nucseg.datasets.sample import Sample
from nucseg.errors import InputError

#: Separates the dataset's name from the image's in a mixture's image names.
NAME_SEPARATOR = "/"


def resolve_dataset_path(path: str | Path) -> Path:
    """The folder of a ``datasets`` entry: ``path`` itself if it exists, else under the data root.

    Raises
    ------
    InputError
        Neither exists.
    """
    path = Path(path)
    if path.exists() or path.is_absolute():
        if not path.exists():
            raise InputError(path, "dataset folder does not exist")
        return path
    under_root = data_root() / path
    if not under_root.exists():
        raise InputError(
            path, f"dataset folder does not exist here or under the data root {data_root()} (set NUCSEG_DATA_DIR)"
        )
    return under_root


def dataset_key(entry: Mapping) -> str:
    """The name a ``datasets`` entry's images are filed under in splits and reports (``name``, else the folder's)."""
    return str(entry.get("name") or Path(entry["path"]).name)


def dataset_folders(entries: Sequence[Mapping]) -> dict[str, str]:
    """``{dataset name: folder}`` of a config's ``datasets`` entries, in order."""
    return {dataset_key(entry): entry["path"] for entry in entries}


def qualified_name(dataset: str, image: str) -> str:
    """``<dataset>/<image>``: an image's name within a mixture."""
    return f"{dataset}{NAME_SEPARATOR}{image}"


def split_qualified(name: str) -> tuple[str, str]:
    """``(dataset, image)`` of a :func:`qualified_name`."""
    dataset, separator, image = name.partition(NAME_SEPARATOR)
    if not separator:
        raise ValueError(f"{name!r} is not a <dataset>/<image> name")
    return dataset, image


def equal_dataset_weights(datasets: Sequence[str]) -> list[float]:
    """Per image, 1 / the number of images of its dataset (``datasets``: each image's), so that in a
    weighted mean over the images every dataset counts alike."""
    counts: dict[str, int] = {}
    for dataset in datasets:
        counts[dataset] = counts.get(dataset, 0) + 1
    return [1.0 / counts[dataset] for dataset in datasets]


def load_mixture(
    datasets: Mapping[str, str | Path],
    names: Sequence[str] | None = None,
    *,
    progress: bool = False,
) -> dict[str, list[Sample]]:
    """Load the samples of several datasets, renamed ``<dataset>/<image>``.

    Parameters
    ----------
    datasets
        ``{dataset name: folder}`` (any layout :func:`nucseg.datasets.layouts.load_dataset` reads).
    names
        Load only these qualified names (e.g. a stored test split); datasets
        none of them belong to are not read.

    Returns
    -------
    dict
        ``{dataset name: samples}``, samples in name order (or in ``names`` order).

    Raises
    ------
    InputError
        A folder is missing, or a name's dataset is not in ``datasets``.
    """
    from nucseg.datasets.layouts import load_dataset

    wanted: dict[str, list[str]] | None = None
    if names is not None:
        wanted = {}
        for name in names:
            dataset, image = split_qualified(name)
            if dataset not in datasets:
                raise InputError(
                    None, f"image {name!r} belongs to no configured dataset ({', '.join(datasets) or 'none'})"
                )
            wanted.setdefault(dataset, []).append(image)
    loaded = {}
    for dataset, folder in datasets.items():
        if wanted is not None and dataset not in wanted:
            continue
        samples = load_dataset(
            resolve_dataset_path(folder), names=None if wanted is None else wanted[dataset], progress=progress
        )
        loaded[dataset] = [Sample(qualified_name(dataset, s.name), s.image, s.labels, s.image_path) for s in samples]
    return loaded

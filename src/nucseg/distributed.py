"""Segmenting many images, and images larger than memory, on a Dask cluster.

::

    from dask.distributed import Client
    import nucseg

    with Client("tcp://scheduler:8786") as client:        # or nucseg.distributed.connect("local:4")
        report = nucseg.segment_many(["images/"], "out/", client=client, model="dsb2018")
    print(report.format_summary())

:func:`segment_many` writes the same files as :func:`nucseg.api.segment_files`
(``X_labels.tif``, optional ``X_overlay.png`` and ``X_nuclei.csv``, and
``summary.csv``), one task per image. Each worker process loads the model
once (:func:`worker_model`) and writes every output atomically, so a worker
killed mid-image leaves no partial file; Dask runs its image again
elsewhere. Images whose outputs exist are skipped unless ``overwrite``, so
running the same command again after a crash does only what is missing.
An image that fails is reported with its reason and the others go on.

Images larger than ``blockwise_above`` pixels (and Zarr stores, and every
image with ``blockwise=True``) are segmented block by block instead
(:func:`nucseg.blockwise.segment_large`), their blocks spread over the same
cluster.

Workers must see the inputs, the model folder and the output folder at the
same paths as the process that submits the work (a shared file system).
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any


from nucseg.errors import InputError, NucsegError

if TYPE_CHECKING:
    from dask.distributed import Client

    from nucseg.api import BatchReport, ImageInput, ImageReport, Model

#: Images with more pixels than this are segmented block-wise when ``blockwise`` is None (8192 x 8192).
DEFAULT_BLOCKWISE_ABOVE = 8192 * 8192
#: Seconds to wait for a scheduler to answer.
CONNECT_TIMEOUT = 10
# Dask's nanny starts workers with glibc's MALLOC_TRIM_THRESHOLD_ at 64 KiB, to hand memory back to the system
# sooner. Setting it also turns off glibc's adaptive mmap threshold, so every large temporary array is mapped and
# zero-filled anew: the classical segmentation ran 1.55 times slower. Local clusters are started without it.
_MALLOC_TRIM_SETTING = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


# ----------------------------------------------------------------------- cluster


@contextlib.contextmanager
def connect(address: str, *, dashboard_address: str | None = ":8787", quiet: bool = False) -> Iterator[Client]:
    """Connect to a Dask scheduler, or start a local cluster; close what was started on exit.

    Local workers run without Dask's default ``MALLOC_TRIM_THRESHOLD_`` (see
    docs/scale-out.md): with it, segmentation is about 1.5 times slower.

    Parameters
    ----------
    address
        ``"local"`` (a ``LocalCluster`` with one single-threaded worker
        process per CPU core), ``"local:N"`` (N such workers), or the
        address of a running scheduler, e.g. ``"tcp://host:8786"``.
    dashboard_address
        Where a local cluster serves its dashboard (None: no dashboard).
        The dashboard needs the ``bokeh`` package.
    quiet
        Do not print the dashboard address of a local cluster to stderr.

    Yields
    ------
    dask.distributed.Client

    Raises
    ------
    NucsegError
        A malformed ``local:N``, or no scheduler answering at ``address``.
    """
    import os

    import dask
    from dask.distributed import Client, LocalCluster

    match = re.fullmatch(r"local(?::(\d+))?", address.strip())
    if match:
        workers = int(match.group(1)) if match.group(1) else (os.cpu_count() or 1)
        if workers < 1:
            raise NucsegError(f"--dask {address}: the number of local workers must be at least 1")
        with warnings.catch_warnings(), dask.config.set({_MALLOC_TRIM_SETTING: None}):
            warnings.simplefilter("ignore")  # "install bokeh for the dashboard", "port in use, using another"
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=dashboard_address)
        try:
            with Client(cluster) as client:
                if not quiet:
                    print(f"nucseg: local Dask cluster of {workers} worker process(es); "
                          f"dashboard {_dashboard(client)}", file=sys.stderr)
                yield client
        finally:
            cluster.close()
        return
    if address.startswith("local"):
        raise NucsegError(f"--dask {address}: write 'local' or 'local:N' (N worker processes)")
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise NucsegError(f"cannot connect to the Dask scheduler at {address} ({_first_line(exc)})") from None
    with client:
        yield client


def _dashboard(client: Client) -> str:
    import importlib.util

    link = client.dashboard_link if client.dashboard_link else "off"
    if link != "off" and importlib.util.find_spec("bokeh") is None:
        return f"{link} (needs the bokeh package: pip install bokeh)"
    return link


@functools.lru_cache(maxsize=4)
def worker_model(reference: str) -> Model:
    """The model ``reference`` (a registered name or a model folder), loaded once per process.

    Tasks call this on the worker, so a worker loads each model once however
    many images it segments.
    """
    from nucseg.api import load_model

    return load_model(reference)


def model_reference(model: Model | str | Path | Callable | None) -> tuple[Any, Any]:
    """(the loaded model, what to send to workers) for ``model``.

    A name or folder is loaded here, to fail before any work is sent and to
    check the options; workers get its name or absolute path and load it
    themselves (:func:`worker_model`). Other :class:`~nucseg.api.Model`
    objects, and plain callables (block-wise only), are sent as they are.
    """
    from nucseg.api import ClassicalModel, Model, NetworkModel, load_model

    if model is None or isinstance(model, (str, Path)):
        model = load_model(model)
    if isinstance(model, ClassicalModel):
        return model, "classical"
    if isinstance(model, NetworkModel):
        return model, str(Path(model.path).resolve())
    if isinstance(model, Model) or callable(model):
        return model, model
    raise TypeError(f"model must be a Model or a model name or folder, got {type(model).__name__}")


def scatter_model(client: Client, model: Any) -> Any:
    """Send a model object to every worker once; returns the future that tasks take in its place."""
    return client.scatter(model, broadcast=True, hash=False)


def resolve_model(model: Any) -> Any:
    """The model a task was given: a name or folder is loaded once per process (:func:`worker_model`)."""
    return worker_model(model) if isinstance(model, str) else model


def run_tasks(
    client: Client | None,
    function: Callable[..., Any],
    arguments: Sequence[tuple[Any, ...]],
    *,
    description: str,
    progress: bool = False,
    key_prefix: str = "nucseg",
) -> list[Any]:
    """``[function(*args) for args in arguments]``, on ``client``'s workers or in this process.

    Results come back in the order of ``arguments``. The first task that
    raises cancels the others and its exception is raised here.

    Parameters
    ----------
    client
        Where to run; None runs the calls one after the other here.
    description
        Label of the progress bar.
    progress
        Show a progress bar (tqdm, on stderr).
    key_prefix
        Prefix of the task names shown on the Dask dashboard.
    """
    from tqdm import tqdm

    if client is None:
        return [function(*args) for args in tqdm(arguments, desc=description, unit="task", disable=not progress,
                                                  leave=False)]
    from dask.distributed import as_completed

    token = _token()
    futures = [client.submit(function, *args, key=f"{key_prefix}-{i}-{token}", pure=False)
               for i, args in enumerate(arguments)]
    try:
        for future in tqdm(as_completed(futures), total=len(futures), desc=description, unit="task",
                           disable=not progress, leave=False):
            if future.status == "error":
                future.result()  # raises the task's exception
        return client.gather(futures)
    finally:
        client.cancel([future for future in futures if not future.done()])


def _token() -> str:
    import secrets

    return secrets.token_hex(4)


# ------------------------------------------------------------------------- batch


@dataclass(frozen=True)
class PlannedImage:
    """An input image and how it will be segmented.

    Attributes
    ----------
    image
        Its name and path (see :func:`nucseg.api.find_images`).
    blockwise
        True: block by block (:func:`nucseg.blockwise.segment_large`);
        False: whole, in memory.
    """

    image: ImageInput
    blockwise: bool


def plan_images(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    blockwise: bool | None = None,
    blockwise_above: int = DEFAULT_BLOCKWISE_ABOVE,
    channel_axis: int | None = None,
) -> list[PlannedImage]:
    """Expand inputs into named images (as :func:`nucseg.api.find_images`) and choose how to segment each.

    Zarr stores are inputs of their own (named by their stem) and always go
    block-wise. With ``blockwise=None``, other images go block-wise when
    their header says they have more than ``blockwise_above`` pixels.

    Raises
    ------
    InputError
        As :func:`nucseg.api.find_images`, or a Zarr store with ``blockwise=False``.
    """
    from nucseg.api import ImageInput, find_images
    from nucseg.blockwise import image_shape, is_zarr

    zarr_inputs = [Path(item) for item in inputs if is_zarr(item)]
    if zarr_inputs and blockwise is False:
        raise InputError(zarr_inputs[0], "Zarr images are only segmented block-wise")
    others = [item for item in inputs if not is_zarr(item)]
    images = find_images(others, exclude=out_dir) if others else []
    names = {image.name for image in images}
    for path in zarr_inputs:
        if path.stem in names:
            raise InputError(path, f"has the same output name {path.stem!r} as another input")
        names.add(path.stem)
    planned = [PlannedImage(ImageInput(path.stem, path), True) for path in zarr_inputs]
    for image in images:
        if blockwise is None:
            try:
                height, width = image_shape(image.path, channel_axis=channel_axis)
            except InputError:  # unreadable: the in-memory path reports why
                height = width = 0
            large = height * width > blockwise_above
        else:
            large = blockwise
        planned.append(PlannedImage(image, large))
    return planned


def blockwise_output_path(out_dir: str | Path, name: str, *, zarr: bool = False) -> Path:
    """Label image of a block-wise segmented image: ``X_labels.tif``, or ``X_labels.zarr``."""
    return Path(out_dir) / f"{name}_labels.{'zarr' if zarr else 'tif'}"


def segment_many(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    client: Client | None,
    model: Model | str | Path | None = None,
    overlay: bool = False,
    measure: bool = False,
    pixel_size: float | None = None,
    rle_path: str | Path | None = None,
    overwrite: bool = False,
    channel_axis: int | None = None,
    progress: bool = False,
    blockwise: bool | None = None,
    blockwise_above: int = DEFAULT_BLOCKWISE_ABOVE,
    block_size: int | None = None,
    margin: int | None = None,
    zarr_labels: bool = False,
    **segment_options: Any,
) -> BatchReport:
    """Segment image files on a Dask cluster; the outputs of :func:`nucseg.api.segment_files`.

    Every image becomes one task; the progress bar advances as images
    finish, in any order. Large images are segmented block-wise, their
    blocks spread over the cluster (see :func:`plan_images`).

    ``summary.csv`` lists every input of this run: ``ok``, ``failed`` with
    the reason, or ``skipped`` (outputs existed). It is the record of the
    latest run and is replaced by each run, so that a run resumed after a
    crash or a failure can write it.

    Parameters
    ----------
    inputs
        Image files, folders, DSB2018 datasets and Zarr stores.
    out_dir
        Output folder (created).
    client
        The ``dask.distributed`` client (see :func:`connect`); None runs
        everything in this process.
    model
        A :class:`~nucseg.api.Model`, or a name or folder (loaded once per worker).
    overlay, measure, pixel_size, rle_path, overwrite, channel_axis, progress
        As for :func:`nucseg.api.segment_files`. Block-wise images get a
        label image only (no overlay or measurements).
    blockwise
        True: every image block-wise; False: none; None: images above
        ``blockwise_above`` pixels, and Zarr stores.
    blockwise_above
        Pixel count above which ``blockwise=None`` segments an image block-wise.
    block_size, margin
        Block settings of :func:`nucseg.blockwise.segment_large` (None: its defaults).
    zarr_labels
        Write the labels of block-wise images as ``X_labels.zarr`` instead
        of a tiled ``X_labels.tif``.
    **segment_options
        Passed to :meth:`~nucseg.api.Model.segment` (``tile_size``, ``overlap``, ...).

    Returns
    -------
    nucseg.api.BatchReport
        Its ``exit_code`` is 1 if any image failed.

    Raises
    ------
    InputError
        Missing inputs, no images, clashing names, an output folder that is
        a file, or bad block settings (checked before any work).
    ModelError
        The model cannot be loaded, or cannot honour the options.
    """
    from nucseg.api import BatchReport, Model, check_batch_options, output_paths, write_summary_csv
    from nucseg.blockwise import DEFAULT_BLOCK_SIZE, DEFAULT_MARGIN, check_block_settings

    started = time.perf_counter()
    check_batch_options(segment_options, pixel_size=pixel_size)
    block_size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
    margin = DEFAULT_MARGIN if margin is None else margin
    try:
        check_block_settings(block_size, margin)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output path exists and is not a folder")
    planned = plan_images(inputs, out_dir, blockwise=blockwise, blockwise_above=blockwise_above,
                          channel_axis=channel_axis)
    local_model, reference = model_reference(model)
    if not isinstance(local_model, Model):
        raise TypeError(f"model must be a Model or a model name or folder, got {type(local_model).__name__}")
    try:
        local_model.check_options(**segment_options)
    except ValueError as exc:
        raise NucsegError(str(exc)) from None
    if any(item.blockwise for item in planned) and (overlay or measure):
        warnings.warn("block-wise images get a label image only, no overlay or measurements", stacklevel=2)
    out_dir.mkdir(parents=True, exist_ok=True)

    reports: dict[str, ImageReport] = {}
    whole = []
    for item in planned:
        paths = ([blockwise_output_path(out_dir, item.image.name, zarr=zarr_labels)] if item.blockwise
                 else list(output_paths(out_dir, item.image.name, overlay=overlay, measure=measure).values()))
        existing = [path for path in paths if path.exists()]
        if existing and not overwrite:
            reports[item.image.name] = _skipped(item.image, existing[0])
        elif not item.blockwise:
            whole.append(item.image)
    settings = {"overlay": overlay, "measure": measure, "pixel_size": pixel_size, "overwrite": overwrite,
                "channel_axis": channel_axis, "options": segment_options}
    reports.update(_segment_whole_images(client, whole, out_dir, local_model, reference, settings, progress))
    for item in planned:
        if item.blockwise and item.image.name not in reports:
            reports[item.image.name] = _segment_blockwise_image(
                client, item.image, out_dir, local_model, block_size=block_size, margin=margin,
                zarr_labels=zarr_labels, overwrite=overwrite, channel_axis=channel_axis, progress=progress,
                options=segment_options)
    report = BatchReport([reports[item.image.name] for item in planned], out_dir, out_dir / "summary.csv",
                         None if rle_path is None else Path(rle_path))
    if rle_path is not None:
        from nucseg.api import labels_of_report
        from nucseg.rle import write_submission_csv

        write_submission_csv(labels_of_report(report), rle_path, overwrite=overwrite)
    report.seconds = time.perf_counter() - started
    write_summary_csv(report, report.summary_path, overwrite=True)
    return report


def _skipped(image: ImageInput, existing: Path) -> ImageReport:
    from nucseg.api import ImageReport

    return ImageReport(image.name, image.path, "skipped", error=f"{existing} exists (use --overwrite to replace it)")


def _segment_whole_images(
    client: Client | None,
    images: list[ImageInput],
    out_dir: Path,
    local_model: Model,
    reference: Any,
    settings: dict[str, Any],
    progress: bool,
) -> dict[str, ImageReport]:
    """One task per image; a report per image, failures included."""
    from tqdm import tqdm

    if not images:
        return {}
    bar = tqdm(total=len(images), desc="segmenting", unit="image", disable=not progress, leave=False)
    reports = {}
    if client is None:
        for image in images:
            reports[image.name] = _segment_file_task(image, out_dir, local_model, settings)
            bar.update()
        bar.close()
        return reports

    from dask.distributed import as_completed

    model = reference if isinstance(reference, str) else scatter_model(client, reference)
    token = _token()
    futures = {client.submit(_segment_file_task, image, out_dir, model, settings, pure=False,
                             key=f"nucseg-segment-{_key_name(image.name)}-{token}"): image for image in images}
    try:
        for future in as_completed(futures):
            image = futures[future]
            try:
                reports[image.name] = future.result()
            except Exception as exc:  # the task died with its worker, or could not run at all
                reports[image.name] = _failed(image, exc)
            bar.update()
    finally:
        bar.close()
        client.cancel([future for future in futures if not future.done()])
    return reports


def _key_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]


def _failed(image: ImageInput, exc: BaseException) -> ImageReport:
    from nucseg.api import ImageReport, describe_failure

    if type(exc).__name__ == "KilledWorker":
        reason = f"{image.path}: the worker segmenting it died repeatedly (out of memory?)"
    else:
        reason = describe_failure(exc, image.path)
    return ImageReport(image.name, image.path, "failed", error=reason)


def _segment_file_task(image: ImageInput, out_dir: Path, model: Any, settings: dict[str, Any]) -> ImageReport:
    """Segment one image file and write its outputs (runs on a worker)."""
    from nucseg.api import output_paths, segment_file

    paths = output_paths(out_dir, image.name, overlay=settings["overlay"], measure=settings["measure"])
    remove_stale_temporaries(paths.values())
    return segment_file(image, out_dir, model=resolve_model(model), overlay=settings["overlay"],
                        measure=settings["measure"], pixel_size=settings["pixel_size"],
                        overwrite=settings["overwrite"], channel_axis=settings["channel_axis"],
                        **settings["options"])


def remove_stale_temporaries(paths: Iterator[Path] | Sequence[Path]) -> list[Path]:
    """Delete temporary files that an interrupted :func:`nucseg.io.atomic_write` left beside ``paths``.

    A process killed while writing ``X_labels.tif`` leaves
    ``.X_labels.tif.<8 hex digits>.tmp.tif`` behind; the task that writes
    the image again removes it. Returns the files removed.
    """
    removed = []
    for path in map(Path, paths):
        if not path.parent.is_dir():
            continue
        pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp{re.escape(path.suffix)}")
        for candidate in path.parent.iterdir():
            if pattern.fullmatch(candidate.name):
                candidate.unlink(missing_ok=True)
                removed.append(candidate)
    return removed


def _segment_blockwise_image(
    client: Client | None,
    image: ImageInput,
    out_dir: Path,
    model: Model,
    *,
    block_size: int,
    margin: int,
    zarr_labels: bool,
    overwrite: bool,
    channel_axis: int | None,
    progress: bool,
    options: dict[str, Any],
) -> ImageReport:
    from nucseg.api import ImageReport
    from nucseg.blockwise import segment_large

    started = time.perf_counter()
    output = blockwise_output_path(out_dir, image.name, zarr=zarr_labels)
    try:
        result = segment_large(image.path, output, model=model,
                               block_size=block_size, margin=margin, client=client, overwrite=overwrite,
                               channel_axis=channel_axis, progress=progress, **options)
    except Exception as exc:  # one bad image must not stop the batch
        report = _failed(image, exc)
        report.seconds = time.perf_counter() - started
        return report
    return ImageReport(image.name, image.path, "ok", nuclei=result.nuclei, mean_area=result.mean_area,
                       scale=result.scale, seconds=time.perf_counter() - started, outputs=[output])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

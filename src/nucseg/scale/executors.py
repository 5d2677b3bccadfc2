"""Where tasks run: in this process, or on a Dask cluster.

An executor runs a list of independent calls and returns their results in
order. :mod:`nucseg.batch` hands it one task per image, or three passes of
one task per block for an image segmented block-wise, and never needs to
know where they ran.

:class:`InProcessExecutor`
    Runs the calls here (the default): one after the other, or a few side by
    side in threads, as many at once as a memory budget allows.
:class:`DaskExecutor`
    Submits them to a ``dask.distributed`` client (see
    :func:`nucseg.scale.dask.connect`). Network models travel as their
    folder's path and are loaded once per worker process
    (:func:`worker_model`); other models are scattered once.

Tasks receive the model as :meth:`Executor.share_model` returned it and get
the model object back with :func:`resolve_model`.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import as_completed, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dask.distributed import Client

    from nucseg.inference.model import Model


class TaskFailed:
    """The result of a call that raised, when :meth:`Executor.run` collects failures.

    Attributes
    ----------
    error
        The exception the call raised (or the executor's, e.g. a worker
        that died repeatedly).
    """

    def __init__(self, error: BaseException):
        self.error = error

    def __repr__(self) -> str:
        return f"TaskFailed({self.error!r})"


class Executor:
    """Runs independent calls and returns their results in order."""

    def share_model(self, model: Model) -> Any:
        """What tasks get in place of ``model`` (see :func:`resolve_model`)."""
        raise NotImplementedError

    def run(
        self,
        function: Callable[..., Any],
        arguments: Sequence[tuple[Any, ...]],
        *,
        description: str,
        progress: bool = False,
        collect_failures: bool = False,
        memory: Sequence[float] | None = None,
    ) -> list[Any]:
        """``[function(*args) for args in arguments]``, run by this executor.

        Parameters
        ----------
        function, arguments
            The calls.
        description
            Label of the progress bar and of the task names.
        progress
            Report progress on stderr as calls finish: a progress bar on a
            terminal; elsewhere (a log file, a batch system) a line such as
            ``nucseg: segmenting blocks of slide.tif: 12 of 64 done`` at most
            every :data:`LOG_INTERVAL` seconds.
        collect_failures
            False: the first call that raises cancels the others and its
            exception is raised here. True: a call that raises gives a
            :class:`TaskFailed` in its place and the others go on.
        memory
            Bytes each call needs at its peak, for an executor that runs calls
            side by side in one process (:class:`InProcessExecutor`); None: too
            little to count. A Dask worker runs one task at a time and ignores it.
        """
        raise NotImplementedError


class InProcessExecutor(Executor):
    """Runs every call in this process: one after the other, or side by side in threads.

    Parameters
    ----------
    workers
        Calls run at once, each in a thread of its own (1: one after the
        other, in the calling thread). Worth it for calls that spend much of
        their time in single-threaded code that releases the GIL (NumPy,
        SciPy, scikit-image, ONNX Runtime), so that the cores do not idle.
    max_memory
        With ``workers`` above 1: the bytes the calls running at once may
        need together (their ``memory`` in :meth:`run`); a call waits until
        those running leave room for it, and one that needs more than the
        whole budget runs alone. None: no limit.
    """

    def __init__(self, workers: int = 1, *, max_memory: float | None = None):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.max_memory = max_memory

    def share_model(self, model: Model) -> Any:
        return model

    def run(self, function, arguments, *, description, progress=False, collect_failures=False, memory=None):
        if self.workers == 1 or len(arguments) < 2:
            return _collect(
                ((i, _outcome(function, args)) for i, args in enumerate(arguments)),
                len(arguments),
                description=description,
                progress=progress,
                collect_failures=collect_failures,
            )
        budget = MemoryBudget(self.max_memory)
        needs = [0.0] * len(arguments) if memory is None else list(memory)

        def call(i: int) -> tuple[int, Any]:
            with budget.reserve(needs[i]):
                return i, _outcome(function, arguments[i])

        with ThreadPoolExecutor(min(self.workers, len(arguments)), thread_name_prefix="nucseg") as pool:
            futures = [pool.submit(call, i) for i in range(len(arguments))]
            try:
                return _collect(
                    (future.result() for future in as_completed(futures)),
                    len(arguments),
                    description=description,
                    progress=progress,
                    collect_failures=collect_failures,
                )
            finally:
                for future in futures:
                    future.cancel()

    def __repr__(self) -> str:
        return f"InProcessExecutor(workers={self.workers})"


class MemoryBudget:
    """Bytes that calls running at once may hold together: :meth:`reserve` waits for room.

    Parameters
    ----------
    total
        The budget, bytes; None: no limit.
    """

    def __init__(self, total: float | None):
        self.total = None if total is None else int(total)
        self.used = 0  # whole bytes: sums that come back exactly to 0
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, amount: float) -> Iterator[None]:
        """Hold ``amount`` bytes (at most the whole budget) while the block runs, once that many are free."""
        if self.total is None:
            yield
            return
        amount = min(max(int(amount), 0), self.total)
        with self._changed:
            self._changed.wait_for(lambda: self.used + amount <= self.total)
            self.used += amount
        try:
            yield
        finally:
            with self._changed:
                self.used -= amount
                self._changed.notify_all()


def _outcome(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """``function(*args)``, or the exception it raised as a :class:`TaskFailed` (so that a thread can hand it back)."""
    try:
        return function(*args)
    except Exception as exc:
        return TaskFailed(exc)


def _collect(
    outcomes: Iterable[tuple[int, Any]], total: int, *, description: str, progress: bool, collect_failures: bool
) -> list[Any]:
    """The results of ``(position, outcome)`` pairs, in position order, as :meth:`Executor.run` returns them."""
    results: dict[int, Any] = {}
    for position, outcome in progress_of(outcomes, description, total, progress):
        if isinstance(outcome, TaskFailed) and not collect_failures:
            raise outcome.error
        results[position] = outcome
    return [results[i] for i in range(total)]


def _warned_call(function: Callable[..., Any], *args: Any) -> tuple[Any, list[tuple[type[Warning], str]]]:
    """``function(*args)`` on a worker, and the warnings it gave, as (category, message) (a worker's own
    stderr is not the user's: :class:`DaskExecutor` warns them again in the client)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = function(*args)
    return result, [(warning.category, str(warning.message)) for warning in caught]


class DaskExecutor(Executor):
    """Runs the calls on the workers of a ``dask.distributed`` client.

    Workers must see the inputs, the model folder and the output folder at
    the same paths as this process (a shared file system).
    """

    def __init__(self, client: Client):
        self.client = client

    def share_model(self, model: Model) -> Any:
        from nucseg.inference.classical import ClassicalModel
        from nucseg.inference.model import NetworkModel

        if isinstance(model, ClassicalModel):
            return "classical"
        if isinstance(model, NetworkModel):
            return str(Path(model.path).resolve())
        return self.client.scatter(model, broadcast=True, hash=False)

    def run(self, function, arguments, *, description, progress=False, collect_failures=False, memory=None):
        from dask.distributed import as_completed

        token = secrets.token_hex(4)
        prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", description)[:40]
        futures = [
            self.client.submit(_warned_call, function, *args, key=f"nucseg-{prefix}-{i}-{token}", pure=False)
            for i, args in enumerate(arguments)
        ]
        index = {future.key: i for i, future in enumerate(futures)}

        def outcomes() -> Iterator[tuple[int, Any]]:
            for future in as_completed(futures):
                try:
                    result, messages = future.result()
                except Exception as exc:  # the task raised, or died with its worker
                    yield index[future.key], TaskFailed(exc)
                    continue
                for category, message in messages:  # said here, where the user reads them
                    warnings.warn(message, category, stacklevel=1)
                yield index[future.key], result

        try:
            return _collect(
                outcomes(), len(futures), description=description, progress=progress, collect_failures=collect_failures
            )
        finally:
            self.client.cancel([future for future in futures if not future.done()])

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client!r})"


#: Seconds between two progress lines when stderr is not a terminal.
LOG_INTERVAL = 30.0


def progress_of(items: Iterable, description: str, total: int, enabled: bool) -> Iterator:
    """``items``, with progress on stderr: a tqdm bar on a terminal, else a line every :data:`LOG_INTERVAL` s."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=description, total=total, unit="task", leave=False)
        return
    started = last = time.monotonic()
    for done, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last >= LOG_INTERVAL and done < total:
            print(f"nucseg: {description}: {done} of {total} done ({now - started:.0f} s)", file=sys.stderr, flush=True)
            last = now


#: Images that one pass covers in fewer network tiles than this get no tile progress (seconds each).
TILE_PROGRESS_MIN_TILES = 4


class TileProgress:
    """Progress of the tiles of one large image on stderr: an ``on_tile`` callback of ``Model.segment``.

    A tqdm bar on a terminal, else a line every :data:`LOG_INTERVAL` s and
    one when a pass ends; silent for passes of fewer than
    :data:`TILE_PROGRESS_MIN_TILES` tiles. Automatic sizing runs two passes,
    counted separately.
    """

    def __init__(self, description: str):
        self.description = description
        self.passes = 0
        self._last_done = None
        self._bar = None
        self._started = self._last_line = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self._last_done is None or done <= self._last_done:  # a new pass
            self.passes += 1
            self._close_bar()
            self._started = self._last_line = time.monotonic()
        self._last_done = done
        if total < TILE_PROGRESS_MIN_TILES:
            return
        label = f"{self.description}, pass {self.passes}"
        if sys.stderr.isatty():
            from tqdm import tqdm

            if self._bar is None:
                self._bar = tqdm(desc=label, total=total, unit="tile", leave=False)
            self._bar.update(done - self._bar.n)
            if done == total:
                self._close_bar()
            return
        now = time.monotonic()
        if done == total or now - self._last_line >= LOG_INTERVAL:
            print(
                f"nucseg: {label}: {done} of {total} tiles ({now - self._started:.0f} s)", file=sys.stderr, flush=True
            )
            self._last_line = now

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@functools.lru_cache(maxsize=4)
def worker_model(reference: str) -> Model:
    """The model ``reference`` (a registered name or a model folder), loaded once per process.

    Tasks call this on the worker, so a worker loads each model once however
    many images it segments. Its network calls use :func:`worker_threads` threads.
    """
    from nucseg.inference.model import load_model

    return load_model(reference, threads=worker_threads())


def worker_threads() -> int | None:
    """CPU threads of each network call in a Dask worker process: its ``OMP_NUM_THREADS``, else every core.

    Dask's nanny starts workers with ``OMP_NUM_THREADS=1`` (its setting
    ``distributed.nanny.pre-spawn-environ``), sizing its workers and their
    threads to the cores so that tasks do not each use every core. ONNX
    Runtime does not read that variable, so nucseg does: without it, two
    local workers on two cores ran two threads each and competed for them.
    Set it higher in that Dask setting for workers that run one task at a
    time on many cores.
    """
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def resolve_model(shared: Any) -> Any:
    """The model a task was given: a name or folder is loaded once per process (:func:`worker_model`)."""
    return worker_model(shared) if isinstance(shared, str) else shared

"""Dask clusters: connect to a scheduler, or start a local cluster.

::

    from nucseg.batch.driver import segment_files
    from nucseg.scale.dask import connect
    from nucseg.scale.executors import DaskExecutor

    with connect("local:4") as client:              # or "tcp://scheduler:8786"
        report = segment_files(["images/"], "out/", executor=DaskExecutor(client))

The batch driver (:func:`nucseg.batch.driver.segment_files`) sends one task
per image, or the block tasks of a large image, to the cluster's workers.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nucseg.errors import first_line, NucsegError

if TYPE_CHECKING:
    from dask.distributed import Client

#: Seconds to wait for a scheduler to answer.
CONNECT_TIMEOUT = 10
# Dask's nanny starts workers with glibc's MALLOC_TRIM_THRESHOLD_ at 64 KiB, to hand memory back to the system
# sooner. Setting it also turns off glibc's adaptive mmap threshold, so every large temporary array is mapped and
# zero-filled anew: the classical segmentation ran 1.55 times slower. Local clusters are started without it.
_MALLOC_TRIM_SETTING = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


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
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=dashboard_address
            )
        try:
            with Client(cluster) as client:
                if not quiet:
                    print(
                        f"nucseg: local Dask cluster of {workers} worker process(es); dashboard {_dashboard(client)}",
                        file=sys.stderr,
                    )
                yield client
        finally:
            cluster.close()
        return
    if address.startswith("local"):
        raise NucsegError(f"--dask {address}: write 'local' or 'local:N' (N worker processes)")
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise NucsegError(f"cannot connect to the Dask scheduler at {address} ({first_line(exc)})") from None
    with client:
        yield client


def _dashboard(client: Client) -> str:
    import importlib.util

    link = client.dashboard_link if client.dashboard_link else "off"
    if link != "off" and importlib.util.find_spec("bokeh") is None:
        return f"{link} (needs the bokeh package: pip install bokeh)"
    return link

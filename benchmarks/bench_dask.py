"""Throughput of batch segmentation on Dask, and memory of block-wise segmentation of a large image.

1. Batch: ``--images`` real DSB2018 images (from ``--data``, default the
   full training set in ``../shared``, else the 4 test fixtures repeated)
   are segmented by the single-process path (:func:`nucseg.batch.driver.segment_files`)
   and by :func:`nucseg.segment_files` with a Dask executor on local clusters of 1 and 2
   single-threaded worker processes. Images per second exclude the cluster's
   start-up, which is reported on its own, and a warm-up (every process
   first segments 2 images untimed: imports and model loading).
2. Large image: a ``--size`` x ``--size`` RGB tiled TIFF is written tile by
   tile (never held in memory) from a checkerboard of the two fluorescence
   fixtures, and segmented block-wise (:func:`nucseg.batch.blockwise.segment_large`)
   on a local cluster of 2 workers. Reported: total time, nuclei, and the
   peak resident memory (``ru_maxrss``) of every worker process and of the
   driver. With ``--in-memory`` the same image is also segmented whole in a
   subprocess, for its peak memory.

The model is ``--model`` (default ``classical``: no trained weights needed).

Usage::

    nice python benchmarks/bench_dask.py [--images 32] [--size 8000] [--block-size 2048] [--margin 128]
                                         [--model classical] [--in-memory] [--skip-batch] [--skip-large]

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nucseg.datasets.locations import dataset_path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data" / "dsb2018"
FULL_DATA = dataset_path("dsb2018/stage1_train")  # ../shared/data, or $NUCSEG_DATA_DIR


def batch_images(data: Path | None, count: int, folder: Path) -> tuple[list[Path], str]:
    """``count`` image files in ``folder`` (links to real DSB2018 images), and where they came from."""
    source = data if data is not None else (FULL_DATA if FULL_DATA.is_dir() else FIXTURES)
    samples = sorted(p for p in source.iterdir() if (p / "images").is_dir())
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        sample = samples[i % len(samples)]
        image = next((sample / "images").iterdir())
        link = folder / f"{i:03d}_{sample.name[:8]}{image.suffix}"
        link.symlink_to(image.resolve())
        paths.append(link)
    return paths, f"{count} images from {source} ({len(set(p.name[4:] for p in paths))} distinct)"


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (Linux: ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_batch(images: list[Path], work: Path, model: str, workers_list: list[int]) -> list[tuple]:
    from nucseg.batch.driver import segment_files
    from nucseg.scale.dask import connect
    from nucseg.scale.executors import DaskExecutor

    # Each path first segments 2 images untimed, so that imports and model loading (once per process) are
    # not counted: the rates are those of a long batch.
    rows = []
    segment_files(images[:2], work / "warmup_single", model=model)
    started = time.perf_counter()
    report = segment_files(images, work / "single", model=model)
    seconds = time.perf_counter() - started
    rows.append(
        ("single process (`segment_files`, in-process executor)", "-", seconds, len(images) / seconds, report.n_ok)
    )
    for workers in workers_list:
        started = time.perf_counter()
        with connect(f"local:{workers}", dashboard_address=None, quiet=True) as client:
            client.wait_for_workers(workers)
            startup = time.perf_counter() - started
            client.run(lambda: None)
            segment_files(images[: workers * 2], work / f"warmup{workers}", executor=DaskExecutor(client), model=model)
            started = time.perf_counter()
            report = segment_files(images, work / f"dask{workers}", executor=DaskExecutor(client), model=model)
            seconds = time.perf_counter() - started
        rows.append(
            (
                f"`segment_files` on Dask, {workers} worker(s)",
                f"{startup:.1f}",
                seconds,
                len(images) / seconds,
                report.n_ok,
            )
        )
    return rows


def write_mosaic_tiff(path: Path, size: int) -> None:
    """A size x size RGB tiled TIFF: the two fluorescence fixtures in a checkerboard, written tile by tile."""
    import tifffile

    from nucseg.io.images import read_image

    a, b = (
        read_image(next((FIXTURES / name / "images").iterdir()))[..., :3]
        for name in sorted(p.name for p in FIXTURES.iterdir())
        if name.startswith(("00071198", "0280fa8f"))
    )
    tile = 256

    def tiles():
        for row in range(0, size, tile):
            for col in range(0, size, tile):
                yield a if (row // tile + col // tile) % 2 == 0 else b

    tifffile.imwrite(
        path,
        tiles(),
        shape=(size, size, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        photometric="rgb",
        compression="zlib",
        bigtiff=True,
    )


def run_large(image: Path, work: Path, model: str, block_size: int, margin: int, workers: int) -> dict:
    import resource

    from nucseg.batch.blockwise import segment_large
    from nucseg.scale.dask import connect
    from nucseg.scale.executors import DaskExecutor

    with connect(f"local:{workers}", dashboard_address=None, quiet=True) as client:
        client.wait_for_workers(workers)
        baseline = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        started = time.perf_counter()
        report = segment_large(
            image,
            work / "large_labels.tif",
            model=model,
            block_size=block_size,
            margin=margin,
            executor=DaskExecutor(client),
        )
        seconds = time.perf_counter() - started
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {
        "seconds": seconds,
        "report": report,
        "worker_peak_mib": sorted(peaks.values()),
        "worker_start_mib": sorted(baseline.values()),
        "driver_peak_mib": peak_rss_mib(),
    }


IN_MEMORY_SCRIPT = """
import json, resource, sys, time
from nucseg.inference.model import load_model
from nucseg.io.images import read_image
model = load_model(sys.argv[2])
started = time.perf_counter()
labels = model.segment(read_image(sys.argv[1]))
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "nuclei": int(labels.max()),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_in_memory(image: Path, model: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", IN_MEMORY_SCRIPT, str(image), model], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="DSB2018 layout folder for the batch (default: the full set)")
    parser.add_argument("--images", type=int, default=32, help="images in the batch (default 32)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts for the batch (default 1,2)")
    parser.add_argument("--size", type=int, default=8000, help="side of the large image in pixels (default 8000)")
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--margin", type=int, default=128)
    parser.add_argument("--model", default="classical", help="model name or folder (default: classical)")
    parser.add_argument("--in-memory", action="store_true", help="also segment the large image whole, for its memory")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPU cores; "
        f"model: {args.model}\n"
    )
    with tempfile.TemporaryDirectory(prefix="bench_dask_") as tmp:
        work = Path(tmp)
        if not args.skip_batch:
            images, note = batch_images(args.data, args.images, work / "images")
            rows = run_batch(images, work, args.model, [int(n) for n in args.workers.split(",")])
            print(f"Batch: {note}\n")
            print("| path | cluster start-up (s) | time (s) | images / s | segmented |")
            print("|---|---|---|---|---|")
            for name, startup, seconds, rate, ok in rows:
                print(f"| {name} | {startup} | {seconds:.1f} | {rate:.2f} | {ok} |")
            print()
        if not args.skip_large:
            image = work / "large.tif"
            started = time.perf_counter()
            write_mosaic_tiff(image, args.size)
            written = time.perf_counter() - started
            result = run_large(image, work, args.model, args.block_size, args.margin, workers=2)
            report = result["report"]
            megapixels = args.size**2 / 1e6
            print(
                f"Large image: {args.size} x {args.size} RGB tiled TIFF ({image.stat().st_size / 2**20:.0f} MiB "
                f"on disk, written in {written:.0f} s), blocks of {args.block_size} + margin {args.margin} "
                f"({report.grid_shape[0]} x {report.grid_shape[1]} blocks), 2 single-threaded workers\n"
            )
            print("| path | time (s) | Mpx / s | nuclei | peak RSS per worker (MiB) | driver peak RSS (MiB) |")
            print("|---|---|---|---|---|---|")
            print(
                f"| block-wise (`segment_large`) | {result['seconds']:.0f} | {megapixels / result['seconds']:.2f} "
                f"| {report.nuclei} | {', '.join(f'{v:.0f}' for v in result['worker_peak_mib'])} "
                f"(idle: {', '.join(f'{v:.0f}' for v in result['worker_start_mib'])}) "
                f"| {result['driver_peak_mib']:.0f} |"
            )
            if args.in_memory:
                whole = run_in_memory(image, args.model)
                print(
                    f"| whole image in one process (`Model.segment`) | {whole['seconds']:.0f} "
                    f"| {megapixels / whole['seconds']:.2f} | {whole['nuclei']} | {whole['peak_mib']:.0f} | - |"
                )
            print(
                f"\nstitching: {report.duplicates} duplicates removed, {report.cut} objects cut by the margin, "
                f"{report.conflicting_pixels} conflicting pixels"
            )


if __name__ == "__main__":
    main()

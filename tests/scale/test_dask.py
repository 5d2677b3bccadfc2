"""Segmenting batches on a Dask cluster: same outputs, failures, killed workers, resume, block-wise images."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from distributed import WorkerPlugin

from nucseg.batch.driver import segment_files
from nucseg.cli import main
from nucseg.scale.blocks import WHOLE_IMAGE_BYTES_PER_PIXEL
from nucseg.scale.executors import DaskExecutor
from nucseg.io.atomic import remove_stale_temporaries
from nucseg.scale.dask import connect
from nucseg.errors import NucsegError
from nucseg.io.images import read_labels

DSB_DIR = Path(__file__).parents[1] / "data" / "dsb2018"
NAMES = sorted(p.name for p in DSB_DIR.iterdir())


@pytest.fixture(scope="module")
def client():
    """A local cluster of 2 single-threaded worker processes, shared by the tests of this module."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def single_process_labels(tmp_path_factory):
    """Label images of the 4 fixtures from the single-process path (nucseg.batch.driver.segment_files)."""
    out = tmp_path_factory.mktemp("single")
    report = segment_files([DSB_DIR], out, model="classical")
    assert report.n_ok == 4
    return {name: read_labels(out / f"{name}_labels.tif") for name in NAMES}


def summary_rows(out_dir):
    with open(out_dir / "summary.csv", newline="", encoding="utf-8") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


@pytest.mark.slow  # a cluster of 2 processes takes seconds to start
def test_cluster_gives_the_labels_of_the_single_process_path(client, tmp_path, single_process_labels):
    report = segment_files([DSB_DIR], tmp_path, executor=DaskExecutor(client), model="classical")

    assert [image.status for image in report.images] == ["ok"] * 4 and report.exit_code == 0
    for name in NAMES:
        assert np.array_equal(read_labels(tmp_path / f"{name}_labels.tif"), single_process_labels[name])
    rows = summary_rows(tmp_path)
    assert sorted(rows) == NAMES
    assert all(int(rows[name]["nuclei"]) == single_process_labels[name].max() for name in NAMES)
    # every worker loaded the model at most once, whatever number of images it segmented
    loads = client.run(lambda: __import__("nucseg.scale.executors").scale.executors.worker_model.cache_info().misses)
    assert all(count <= 1 for count in loads.values())


class CrashWhileWritingOnce(WorkerPlugin):
    """Worker plugin: the first TIFF write on any worker writes half a file, then kills its process.

    A marker file, created atomically, makes the crash happen once per test,
    so that Dask's retry of the image (on a restarted or another worker) succeeds.
    """

    name = "crash-while-writing-once"

    def __init__(self, marker: str):
        self.marker = marker

    def setup(self, worker):
        import tifffile

        original = self.original = tifffile.imwrite
        marker = self.marker

        def imwrite(path, *args, **kwargs):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return original(path, *args, **kwargs)
            with open(path, "wb") as handle:
                handle.write(b"II*\x00 half a TIFF")
            os._exit(1)

        tifffile.imwrite = imwrite

    def teardown(self, worker):
        import tifffile

        tifffile.imwrite = self.original


@pytest.mark.slow  # a cluster of 2 processes takes seconds to start
def test_a_worker_killed_while_writing_leaves_no_partial_output(client, tmp_path, single_process_labels):
    marker = tmp_path / "crashed"
    out = tmp_path / "out"
    client.register_plugin(CrashWhileWritingOnce(str(marker)))
    try:
        report = segment_files([DSB_DIR], out, executor=DaskExecutor(client), model="classical")
    finally:
        client.unregister_worker_plugin(CrashWhileWritingOnce.name)

    assert marker.exists()  # a worker did die mid-write
    assert report.exit_code == 0 and report.n_ok == 4
    for name in NAMES:
        assert np.array_equal(read_labels(out / f"{name}_labels.tif"), single_process_labels[name])
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{name}_labels.tif" for name in NAMES] + ["summary.csv"])


@pytest.mark.slow  # a cluster of 2 processes takes seconds to start
def test_a_failed_image_is_reported_and_the_others_finish(client, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in NAMES[:2]:
        shutil.copy(DSB_DIR / name / "images" / f"{name}.png", folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    report = segment_files([folder], tmp_path / "out", executor=DaskExecutor(client), model="classical")

    statuses = {image.name: image.status for image in report.images}
    assert statuses == {"broken": "failed", NAMES[0]: "ok", NAMES[1]: "ok"}
    assert report.exit_code == 1
    rows = summary_rows(tmp_path / "out")
    assert rows["broken"]["status"] == "failed" and "broken.png" in rows["broken"]["error"]
    assert all((tmp_path / "out" / f"{name}_labels.tif").is_file() for name in NAMES[:2])


@pytest.mark.slow  # a cluster of 2 processes takes seconds to start
def test_warnings_of_worker_tasks_are_given_in_the_client(client):
    import warnings

    executor = DaskExecutor(client)
    with pytest.warns(UserWarning, match="a.tif: nuclei measured about 60 px across") as caught:
        results = executor.run(
            warnings.warn, [("a.tif: nuclei measured about 60 px across",), ("b.tif: other",)], description="warning"
        )
    assert results == [None, None] and sorted(str(w.message) for w in caught)[1] == "b.tif: other"


@pytest.mark.slow  # a cluster of 2 processes takes seconds to start
def test_a_second_run_does_only_what_is_missing_and_overwrite_redoes_all(client, tmp_path):
    out = tmp_path / "out"
    command = ["segment", str(DSB_DIR), "--out", str(out), "--model", "classical", "--dask", client.scheduler.address]
    assert main(command) == 0
    outputs = {name: out / f"{name}_labels.tif" for name in NAMES}
    outputs[NAMES[0]].unlink()  # as if the first run had crashed before this image
    before = {name: path.stat().st_mtime_ns for name, path in outputs.items() if path.exists()}

    assert main(command) == 0
    rows = summary_rows(out)
    assert rows[NAMES[0]]["status"] == "ok" and outputs[NAMES[0]].is_file()
    assert all(rows[name]["status"] == "skipped" for name in NAMES[1:])
    assert all(outputs[name].stat().st_mtime_ns == mtime for name, mtime in before.items())

    assert main([*command, "--overwrite"]) == 0
    assert all(row["status"] == "ok" for row in summary_rows(out).values())
    assert all(outputs[name].stat().st_mtime_ns != mtime for name, mtime in before.items())


@pytest.mark.slow  # a cluster of 2 processes takes seconds to start
def test_large_images_are_segmented_blockwise_on_the_cluster(client, tmp_path, dsb_samples):
    mosaic = np.tile(dsb_samples["00071198"].image[..., :3], (4, 5, 1))  # 1024 x 1280
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "mosaic.tif", mosaic, tile=(256, 256), photometric="rgb")
    shutil.copy(DSB_DIR / NAMES[0] / "images" / f"{NAMES[0]}.png", folder / "small.png")

    on_cluster = segment_files(
        [folder],
        tmp_path / "cluster",
        executor=DaskExecutor(client),
        model="classical",
        max_memory=512 * 512 * WHOLE_IMAGE_BYTES_PER_PIXEL,
        block_size=512,
        margin=64,
    )
    in_process = segment_files(
        [folder],
        tmp_path / "local",
        model="classical",
        max_memory=512 * 512 * WHOLE_IMAGE_BYTES_PER_PIXEL,
        block_size=512,
        margin=64,
    )

    assert on_cluster.exit_code == 0 and on_cluster.n_ok == 2
    assert in_process.exit_code == 0 and in_process.n_ok == 2
    with tifffile.TiffFile(tmp_path / "cluster" / "mosaic_labels.tif") as handle:
        assert handle.pages[0].is_tiled  # written block-wise
    for name in ("mosaic", "small"):
        labels = read_labels(tmp_path / "cluster" / f"{name}_labels.tif")
        assert np.array_equal(labels, read_labels(tmp_path / "local" / f"{name}_labels.tif"))
    mosaic_report = next(image for image in on_cluster.images if image.name == "mosaic")
    assert mosaic_report.nuclei == read_labels(tmp_path / "cluster" / "mosaic_labels.tif").max() > 0


@pytest.mark.slow
def test_connect_starts_single_threaded_local_workers_without_dasks_malloc_trim(capsys, monkeypatch):
    # A default LocalCluster (the module's fixture) sets the variable in this process too, as a fresh
    # nucseg process does not have it.
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with connect("local:2") as client:
        workers = client.scheduler_info()["workers"].values()
        assert [worker["nthreads"] for worker in workers] == [1, 1]
        assert set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {None}
        threads = client.run(
            lambda: (
                __import__("nucseg.scale.executors")
                .scale.executors.worker_model("dsb2018")
                .runner()
                .session.get_session_options()
                .intra_op_num_threads
            )
        )
        assert set(threads.values()) == {1}  # one core per worker, not every core for each
    assert "local Dask cluster of 2 worker process(es); dashboard" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_segments_on_a_local_cluster(tmp_path, single_process_labels):
    name = NAMES[1]
    assert (
        main(["segment", str(DSB_DIR / name), "--out", str(tmp_path), "--model", "classical", "--dask", "local:1"]) == 0
    )
    assert np.array_equal(read_labels(tmp_path / f"{name}_labels.tif"), single_process_labels[name])


def test_connect_rejects_bad_addresses(monkeypatch):
    import nucseg.scale.dask

    with pytest.raises(NucsegError, match="'local' or 'local:N'"):
        with connect("local:two"):
            pass
    monkeypatch.setattr(nucseg.scale.dask, "CONNECT_TIMEOUT", 1)
    with pytest.raises(NucsegError, match="cannot connect to the Dask scheduler at tcp://127.0.0.1:9"):
        with connect("tcp://127.0.0.1:9"):
            pass


def test_stale_temporaries_of_an_output_are_removed(tmp_path):
    output = tmp_path / "a_labels.tif"
    stale = [tmp_path / ".a_labels.tif.0123abcd.tmp.tif", tmp_path / ".a_labels.tif.ffffffff.tmp.tif"]
    kept = [
        tmp_path / ".b_labels.tif.0123abcd.tmp.tif",
        tmp_path / "a_labels.tif.0123abcd.tmp.tif",
        tmp_path / ".a_labels.tif.0123abcd.tmp.png",
    ]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert sorted(remove_stale_temporaries([output])) == sorted(stale)
    assert all(path.exists() for path in kept) and not any(path.exists() for path in stale)


@pytest.mark.parametrize("on_cluster", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_an_existing_rle_file_is_refused_before_anything_is_segmented(request, tmp_path, on_cluster):
    rle = tmp_path / "submission.csv"
    rle.write_text("the user's file\n")
    out = tmp_path / "out"
    executor = DaskExecutor(request.getfixturevalue("client")) if on_cluster else None
    with pytest.raises(NucsegError, match="exists"):
        segment_files([DSB_DIR], out, executor=executor, model="classical", rle_path=rle)
    assert rle.read_text() == "the user's file\n"
    assert not out.exists() or not any(out.iterdir())  # no labels, no summary: nothing was segmented


@pytest.mark.slow
def test_a_pyramid_is_segmented_at_the_level_asked_for_on_the_cluster(client, tmp_path, pyramid_tiff, dsb_samples):
    gray = dsb_samples["0280fa8f"].image[..., 0]
    pyramid_tiff(tmp_path / "slide.ome.tif", gray, 0.25)
    for blockwise in (False, True):  # the workers read the pixels of level 1, whole or block by block
        runs = {
            where: segment_files(
                [tmp_path / "slide.ome.tif"],
                tmp_path / f"{where}_{blockwise}",
                executor=executor,
                model="classical",
                blockwise=blockwise,
                level=1,
            )
            for where, executor in (("cluster", DaskExecutor(client)), ("local", None))
        }
        labels = {where: read_labels(tmp_path / f"{where}_{blockwise}" / "slide_labels.tif") for where in runs}
        assert labels["cluster"].shape == gray.shape and np.array_equal(labels["cluster"], labels["local"])
        assert runs["cluster"].images[0].pixel_size == pytest.approx(0.5) and runs["cluster"].images[0].nuclei > 10

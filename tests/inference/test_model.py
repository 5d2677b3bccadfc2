import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
import pytest

from nucseg.models import registry

import nucseg
from nucseg.inference import sizing
from nucseg.batch.driver import segment_files
from nucseg.batch.inputs import find_images
from nucseg.batch.writers import output_paths
from nucseg.inference.classical import ClassicalModel
from nucseg.inference.model import load_model, NetworkModel, SegmentationResult
from nucseg.errors import InputError, ModelError
from nucseg.io.images import read_image, read_labels
from nucseg.postprocess.watershed import instances_from_probabilities

DSB_DIR = Path(__file__).parents[1] / "data" / "dsb2018"
SMALL_IDS = ("00071198", "00ae65c1", "0280fa8f")  # the three 256-pixel fixtures


def _sample_dir(prefix: str) -> Path:
    return next(p for p in DSB_DIR.iterdir() if p.name.startswith(prefix))


def _small_inputs() -> list[Path]:
    return [_sample_dir(prefix) for prefix in SMALL_IDS]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


class _ShapeRecorder:
    """Wraps a runner and records the batch shapes it is given."""

    def __init__(self, runner):
        self.runner, self.shapes = runner, []

    def __call__(self, batch):
        self.shapes.append(batch.shape)
        return self.runner(batch)


def _record_shapes(model: NetworkModel, monkeypatch) -> _ShapeRecorder:
    recorder = _ShapeRecorder(model.runner("torch"))
    monkeypatch.setattr(model, "runner", lambda backend=None: recorder)
    return recorder


# -------------------------------------------------------------------- load_model


def test_load_model_from_a_folder(model_dir):
    model = load_model(model_dir)
    assert isinstance(model, NetworkModel)
    assert model.path == model_dir and model.name == model_dir.name
    assert model.config.architecture == "unet" and model.device == "cpu"


def test_load_model_by_name_from_the_package_folder(monkeypatch, tmp_path, model_dir):
    for name in ("nuclei", "dsb2018"):
        shutil.copytree(model_dir, tmp_path / name)
    monkeypatch.setattr(registry, "package_models_dir", lambda: tmp_path)
    assert registry.DEFAULT_MODEL == "nuclei"
    for model, name in ((load_model(), "nuclei"), (load_model("nuclei"), "nuclei"), (load_model("dsb2018"), "dsb2018")):
        assert isinstance(model, NetworkModel)
        assert model.name == name and model.path == tmp_path / name


def test_missing_default_model_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "package_models_dir", lambda: tmp_path)
    for name, shown in ((None, "nuclei"), ("nuclei", "nuclei"), ("dsb2018", "dsb2018")):
        with pytest.raises(ModelError, match=f"'{shown}' is not installed"):
            load_model(name)


def test_corrupt_weights_are_rejected(tmp_path, model_dir):
    folder = shutil.copytree(model_dir, tmp_path / "m")
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        load_model(folder)


def test_foreign_and_missing_folders_are_rejected(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.pt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelError, match="config.json is missing"):
        load_model(foreign)
    (foreign / "config.json").write_text('{"some": "json"}')
    with pytest.raises(ModelError, match="not a nucseg model"):
        load_model(foreign)
    with pytest.raises(ModelError, match="no such model folder"):
        load_model(tmp_path / "nothing here")


def test_import_nucseg_is_light_and_exposes_load_model():
    code = (
        "import sys, nucseg, nucseg.inference.model\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert nucseg.load_model is nucseg.inference.model.load_model\n"
        "from nucseg import load_model\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ------------------------------------------------------------------------ segment


def test_segment_accepts_raw_images_of_any_dtype_and_channels(active_model_dir, dsb_samples):
    model = load_model(active_model_dir)
    rgba = dsb_samples["00071198"].image  # gray fluorescence stored as RGBA uint8
    labels = model.segment(rgba).labels
    assert labels.shape == rgba.shape[:2] and labels.dtype == np.int32 and labels.max() > 0
    assert np.array_equal(model.segment(rgba[:, :, 0]).labels, labels)  # gray is replicated to RGB
    as_uint16 = model.probabilities(rgba[:, :, 0].astype(np.uint16) * 257)
    as_float = model.probabilities(rgba[:, :, 0].astype(np.float32) / 255)
    reference = model.probabilities(rgba)
    assert np.abs(as_uint16 - reference).max() < 1e-4  # percentile normalization: scale does not matter
    assert np.abs(as_float - reference).max() < 1e-4


def test_segment_returns_probabilities_on_request(active_model_dir, dsb_samples):
    model = load_model(active_model_dir)
    result = model.segment(dsb_samples["00ae65c1"].image)
    assert isinstance(result, SegmentationResult)
    assert result.probabilities.shape == (3, 256, 320) and result.scale == 1.0
    assert np.array_equal(result.labels, instances_from_probabilities(result.probabilities, model.postprocess_config))


def test_torch_and_onnxruntime_backends_agree(active_model_dir, dsb_samples):
    model = load_model(active_model_dir)
    image = dsb_samples["00ae65c1"].image
    torch_result = model.segment(image, backend="torch", tile_size=256)
    onnx_result = model.segment(image, backend="onnxruntime", tile_size=256)
    assert np.abs(torch_result.probabilities - onnx_result.probabilities).max() < 1e-4
    assert np.mean(torch_result.labels == onnx_result.labels) > 0.999
    with pytest.raises(ValueError, match="unknown backend"):
        model.segment(image, backend="tensorflow").labels


def test_postprocess_overrides(active_model_dir, dsb_samples):
    model = load_model(active_model_dir)
    image = dsb_samples["00ae65c1"].image
    assert model.segment(image).labels.max() > 0
    assert model.segment(image, postprocess={"min_size": 10**6}).labels.max() == 0
    with pytest.raises(ValueError, match="unknown postprocess setting"):
        model.segment(image, postprocess={"min_sise": 3}).labels


def test_resize_to_model_runs_at_its_size_and_returns_full_size_labels(tmp_path, active_unet, dsb_samples, monkeypatch):
    from nucseg.models.folder import ModelConfig, save_model

    folder = save_model(
        active_unet, ModelConfig("unet", {"base_channels": 8, "depth": 4}, resize_to=128), tmp_path / "resized"
    )
    model = load_model(folder)
    recorder = _record_shapes(model, monkeypatch)
    labels = model.segment(dsb_samples["00ae65c1"].image).labels
    assert recorder.shapes == [(1, 3, 128, 128)]
    assert labels.shape == (256, 320)
    with pytest.raises(ValueError, match="resizes every image"):
        model.segment(dsb_samples["00ae65c1"].image, scale=0.5).labels


def test_scale_and_diameter(active_model_dir, dsb_samples, monkeypatch):
    model = load_model(active_model_dir)
    image = dsb_samples["00ae65c1"].image
    with pytest.raises(ModelError, match="records no nucleus diameter"):
        model.segment(image, diameter=40).labels
    monkeypatch.setattr(model.config, "median_diameter", 20.0, raising=False)
    recorder = _record_shapes(model, monkeypatch)
    by_diameter = model.segment(image, diameter=40)
    assert recorder.shapes == [(1, 3, 128, 160)]  # 256 x 320 halved
    assert by_diameter.scale == 0.5 and by_diameter.labels.shape == (256, 320)
    assert np.array_equal(by_diameter.labels, model.segment(image, scale=0.5).labels)
    with pytest.raises(ValueError, match="not both"):
        model.segment(image, scale=0.5, diameter=40).labels


def test_auto_sizing_runs_a_second_pass_only_when_the_nuclei_are_off_size(active_model_dir, dsb_samples, monkeypatch):
    from nucseg.postprocess.measure import median_nucleus_diameter

    model = load_model(active_model_dir)
    image = dsb_samples["00ae65c1"].image
    native = model.segment(image, diameter=None).labels
    found = median_nucleus_diameter([native])
    assert model.segment(image).scale == 1.0  # no training diameter: native size

    monkeypatch.setattr(model.config, "median_diameter", 0.6 * found, raising=False)
    recorder = _record_shapes(model, monkeypatch)
    result = model.segment(image)
    assert result.scale == pytest.approx(0.6) and model.scale_for_labels(native) == pytest.approx(0.6)
    assert len(recorder.shapes) == 2 and recorder.shapes[0] == (1, 3, 256, 320)
    assert np.array_equal(result.labels, model.segment(image, scale=result.scale).labels)
    assert model.estimate_scale(image) == pytest.approx(0.6)

    for explicit in ({"scale": 1.0}, {"diameter": None}):  # a fixed size replaces automatic sizing
        recorder.shapes.clear()
        assert np.array_equal(model.segment(image, **explicit).labels, native) and len(recorder.shapes) == 1

    monkeypatch.setattr(model.config, "median_diameter", 1.05 * found, raising=False)
    recorder.shapes.clear()
    assert np.array_equal(model.segment(image).labels, native) and len(recorder.shapes) == 1  # within the tolerance
    with pytest.raises(ValueError, match="number of pixels or 'auto'"):
        model.segment(image, diameter="large").labels


def test_scale_for_labels_sizes_to_the_training_diameter(active_model_dir, monkeypatch):
    from nucseg.postprocess.measure import median_nucleus_diameter

    model = load_model(active_model_dir)
    yy, xx = np.mgrid[:200, :200]
    discs = ((yy % 100 - 50) ** 2 + (xx % 100 - 50) ** 2 <= 64) * (1 + yy // 100 * 2 + xx // 100)
    assert model.scale_for_labels(discs) == 1.0  # the model records no training diameter
    monkeypatch.setattr(model.config, "median_diameter", 20.0, raising=False)
    assert model.scale_for_labels(discs) == pytest.approx(20 / median_nucleus_diameter([discs]))


@pytest.mark.slow
def test_auto_sizing_measures_large_images_on_their_centre_quarter(dsb_samples, monkeypatch):
    from nucseg.postprocess.measure import median_nucleus_diameter

    model = load_model("dsb2018")
    tile = dsb_samples["00ae65c1"].image  # 256 x 320, many nuclei
    image = np.tile(tile, (5, 4, 1))  # 1280 x 1280: above AUTO_SIZE_CROP_ABOVE
    assert image.shape[0] * image.shape[1] > sizing.AUTO_SIZE_CROP_ABOVE
    whole_image_factor = model.scale_for_labels(model.segment(image, diameter=None).labels)
    calls = []
    segment_at = model._segment_at
    monkeypatch.setattr(
        model,
        "_segment_at",
        lambda image, factor, post, run: (
            calls.append((image.shape[:2], factor, run.intensity_range is not None))
            or segment_at(image, factor, post, run)
        ),
    )

    result = model.segment(image)
    assert calls[0] == ((640, 640), 1.0, True)  # the centre quarter, normalized as the whole image
    assert calls[1][0] == (1280, 1280) and calls[1][1] == result.scale and len(calls) == 2
    assert calls[1][2]  # the second pass reuses the whole image's range instead of computing it again
    assert whole_image_factor < 0.9 and result.scale == pytest.approx(whole_image_factor, rel=0.03)
    low, high = model.intensity_range(image)
    assert low.shape == high.shape == (3,) and np.all(high > low)

    # A crop with too few nuclei: the whole image is measured, and its first pass is the result.
    found = median_nucleus_diameter([model.segment(tile, diameter=None).labels])
    monkeypatch.setattr(model.config, "median_diameter", found, raising=False)
    sparse = np.zeros_like(image)
    sparse[:256, :320] = tile
    calls.clear()
    labels = model.segment(sparse).labels
    assert [shape for shape, _, _ in calls] == [(640, 640), (1280, 1280)] and calls[1][1] == 1.0
    assert labels.max() > 0


def test_shipped_model_sizes_resized_images_back_to_the_training_size(dsb_samples):
    from skimage.transform import rescale

    model = load_model("dsb2018")
    small = rescale(dsb_samples["091944f1"].image[..., :3], 0.5, channel_axis=-1, preserve_range=True)
    large = rescale(dsb_samples["0280fa8f"].image[..., :3], 2.0, channel_axis=-1, preserve_range=True)
    assert model.estimate_scale(small.astype(np.uint8)) > 1.3  # nuclei of about 10 pixels are enlarged
    assert model.estimate_scale(large.astype(np.uint8)) < 0.8  # nuclei of about 31 pixels are shrunk


def test_bad_images_raise_value_errors(active_model_dir):
    model = load_model(active_model_dir)
    with pytest.raises(ValueError, match="shape"):
        model.segment(np.zeros(100)).labels
    with pytest.raises(ValueError, match="channels"):
        model.segment(np.zeros((64, 64, 2), np.uint8)).labels
    with pytest.raises(ValueError, match=r"shape \(3, 64, 80\) has 80 channels: channels go last"):
        model.segment(np.zeros((3, 64, 80), np.uint16)).labels


def test_a_multichannel_microscopy_array_needs_its_nuclear_channel(dsb_samples, active_model_dir):
    model = load_model(active_model_dir)
    gray = dsb_samples["00071198"].image[..., 0].astype(np.uint16) * 200
    noise = np.random.default_rng(0).integers(0, 60000, gray.shape + (3,), dtype=np.uint16)
    four = np.concatenate([noise, gray[..., None]], axis=-1)  # DAPI last, as a 4-channel ImageJ file
    for array in (four, four[..., 1:]):  # 16-bit 4 and 3 channels: never taken as RGB(A)
        with pytest.raises(ValueError, match=f"{array.shape[2]} channels .* channel=N"):
            model.segment(array)
    with pytest.raises(ValueError, match="channel=5 is out of range"):
        model.segment(four, channel=5)
    assert np.array_equal(model.segment(four, channel=4).labels, model.segment(gray).labels)
    assert load_model("classical").segment(four, channel=4).labels.max() > 5


def test_classical_model(dsb_samples):
    model = load_model("classical")
    assert isinstance(model, ClassicalModel)
    labels = model.segment(dsb_samples["00071198"].image, tile_size=256).labels  # tiling options are accepted
    assert labels.shape == (256, 256) and labels.max() > 5
    assert np.array_equal(model.segment(dsb_samples["00071198"].image, diameter="auto").labels, labels)
    with pytest.raises(ValueError, match="diameter"):
        model.segment(dsb_samples["00071198"].image, diameter=20).labels
    with pytest.raises(ValueError, match="tta"):
        model.segment(dsb_samples["00071198"].image, tta=True).labels
    assert model.segment(dsb_samples["00071198"].image).probabilities is None


# --------------------------------------------------------------------- find_images


def test_find_images_in_dsb_layout_uses_the_ids():
    images = find_images([DSB_DIR])
    assert [image.name for image in images] == sorted(p.name for p in DSB_DIR.iterdir())
    assert all(image.path.parent.name == "images" for image in images)
    single = find_images([_sample_dir("00ae65c1")])
    assert [image.name for image in single] == [_sample_dir("00ae65c1").name]


def test_find_images_in_folders_recursively(tmp_path):
    png = next((_sample_dir("00071198") / "images").iterdir()).read_bytes()
    for relative in ("data/a/x.png", "data/b/x.png", "data/y.png", "data/.hidden/z.png", "data/out/old.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(png)
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that are not images .*: notes.txt$"):
        images = find_images([tmp_path / "data"], exclude=tmp_path / "data" / "out")
    assert [image.name for image in images] == ["a/x", "b/x", "y"]


def test_find_images_names_ome_tiffs_without_ome(tmp_path):
    image = np.zeros((8, 8), np.uint8)
    for relative in ("data/cells.ome.tif", "data/b/more.OME.TIFF", "data/plain.tif"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(tmp_path / relative, image)
    assert [image.name for image in find_images([tmp_path / "data"])] == ["b/more", "cells", "plain"]
    assert [image.name for image in find_images([tmp_path / "data" / "cells.ome.tif"])] == ["cells"]
    Image.fromarray(image).save(tmp_path / "data" / "cells.png")  # the same name twice is refused
    with pytest.raises(InputError, match="same output name 'cells'"):
        find_images([tmp_path / "data"])


def test_find_images_in_paired_layout_takes_the_images_only(tmp_path):
    png = next((_sample_dir("00071198") / "images").iterdir()).read_bytes()
    for relative in ("images/one.png", "images/two.png", "masks/one.png", "masks/two.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(png)
    assert [image.name for image in find_images([tmp_path])] == ["one", "two"]


def test_find_images_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        find_images([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        find_images([tmp_path / "empty"])
    png = next((_sample_dir("00071198") / "images").iterdir()).read_bytes()
    (tmp_path / "x.png").write_bytes(png)
    (tmp_path / "x.tif").write_bytes(b"")
    with pytest.raises(InputError, match="same output name 'x'"):
        find_images([tmp_path / "x.png", tmp_path / "x.tif"])


# ------------------------------------------------------------------- segment_files


def test_segment_files_writes_labels_overlays_measurements_summary_and_rle(tmp_path, active_model_dir):
    from nucseg.io.rle import rle_decode

    model = load_model(active_model_dir)
    out = tmp_path / "out"
    report = segment_files(
        _small_inputs(),
        out,
        model=model,
        overlay=True,
        measure=True,
        pixel_size=0.5,
        rle_path=tmp_path / "submission.csv",
    )
    assert report.exit_code == 0 and report.n_ok == 3 and report.n_failed == 0
    summary = _read_csv(out / "summary.csv")
    assert [row["image"] for row in summary] == [p.name for p in _small_inputs()]
    submission = _read_csv(tmp_path / "submission.csv")
    for sample_dir, row in zip(_small_inputs(), summary):
        paths = output_paths(out, sample_dir.name, overlay=True, measure=True)
        image = read_image(next((sample_dir / "images").iterdir()))
        labels = read_labels(paths["labels"])
        assert np.array_equal(labels, model.segment(image).labels)
        n_nuclei = len(np.unique(labels)) - 1
        assert row["status"] == "ok" and int(row["nuclei"]) == n_nuclei > 0
        assert float(row["mean_area_px"]) == pytest.approx(np.count_nonzero(labels) / n_nuclei, abs=0.05)
        overlay = read_image(paths["overlay"])
        assert overlay.shape == image.shape[:2] + (3,) and overlay.dtype == np.uint8
        measurements = _read_csv(paths["nuclei"])
        assert len(measurements) == n_nuclei and "area_um2" in measurements[0]
        rles = [r["EncodedPixels"] for r in submission if r["ImageId"] == sample_dir.name]
        masks = [rle_decode(rle, labels.shape) for rle in rles]
        assert len(masks) == n_nuclei
        assert all(np.array_equal(mask, labels == label) for mask, label in zip(masks, np.unique(labels)[1:]))
    assert not [p for p in out.rglob(".*")]  # no temporary files


def test_unreadable_images_are_reported_and_the_others_still_run(tmp_path, active_model_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(next((_sample_dir("00071198") / "images").iterdir()), folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    (folder / "empty.tif").write_bytes(b"")
    report = segment_files([folder], tmp_path / "out", model=active_model_dir)
    status = {image.name: image for image in report.images}
    assert status["good"].status == "ok"
    assert status["broken"].status == "failed" and "broken.png" in status["broken"].error
    assert status["empty"].status == "failed" and "empty" in status["empty"].error
    assert report.exit_code == 1 and report.n_failed == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_labels.tif", "summary.csv"]
    summary = {row["image"]: row for row in _read_csv(tmp_path / "out" / "summary.csv")}
    assert summary["broken"]["status"] == "failed" and "broken.png" in summary["broken"]["error"]


def test_existing_outputs_are_never_overwritten_without_overwrite(tmp_path, active_model_dir):
    model = load_model(active_model_dir)
    out = tmp_path / "out"
    out.mkdir()
    first, second, third = (p.name for p in _small_inputs())
    (out / f"{first}_overlay.png").write_bytes(b"the user's file")
    report = segment_files(_small_inputs(), out, model=model, overlay=True)
    assert [image.status for image in report.images] == ["skipped", "ok", "ok"]
    assert "exists" in report.images[0].error
    assert (out / f"{first}_overlay.png").read_bytes() == b"the user's file"
    assert not (out / f"{first}_labels.tif").exists()

    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.name != "summary.csv"}
    report = segment_files(_small_inputs(), out, model=model, overlay=True)
    assert [image.status for image in report.images] == ["skipped"] * 3 and report.exit_code == 0
    summary = _read_csv(out / "summary.csv")
    assert all(row["status"] == "skipped" for row in summary) and len(summary) == 3
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.name != "summary.csv"} == before

    report = segment_files(_small_inputs(), out, model=model, overlay=True, overwrite=True)
    assert [image.status for image in report.images] == ["ok"] * 3
    assert (out / f"{first}_overlay.png").read_bytes() != b"the user's file"
    assert (out / f"{second}_labels.tif").exists() and (out / f"{third}_labels.tif").exists()


def test_a_failure_mid_write_leaves_no_partial_or_temporary_files(tmp_path, active_model_dir, monkeypatch):
    import tifffile

    import nucseg.batch.writers

    real_imwrite, real_overlay = tifffile.imwrite, nucseg.batch.writers.outline_overlay
    first, second, third = (p.name for p in _small_inputs())

    def failing_imwrite(path, data, **kwargs):  # the disk fills up halfway through one file
        if first in Path(path).name:
            Path(path).write_bytes(b"II*\x00 half a TIFF")
            raise OSError(28, "No space left on device")
        return real_imwrite(path, data, **kwargs)

    def failing_overlay(image, labels, **options):  # fails after the label image was written
        if image.shape[1] == 320:  # the H&E sample, 00ae65c1 (second)
            raise MemoryError()
        return real_overlay(image, labels, **options)

    monkeypatch.setattr(tifffile, "imwrite", failing_imwrite)
    monkeypatch.setattr(nucseg.batch.writers, "outline_overlay", failing_overlay)
    out = tmp_path / "out"
    report = segment_files(_small_inputs(), out, model=active_model_dir, overlay=True)
    assert [image.status for image in report.images] == ["failed", "failed", "ok"]
    assert "No space left on device" in report.images[0].error
    assert "out of memory" in report.images[1].error
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{third}_labels.tif", f"{third}_overlay.png", "summary.csv"]
    )  # no temporary, no partial outputs


def test_segment_files_runs_images_side_by_side_one_thread_each_with_the_serial_results(
    tmp_path, active_model_dir, monkeypatch
):
    import nucseg.batch.driver
    import nucseg.inference.runners
    from nucseg.scale.executors import InProcessExecutor

    created, real_init = [], nucseg.inference.runners.OnnxRunner.__init__

    def recording_init(self, graph, *, threads=None):
        created.append(threads)
        real_init(self, graph, threads=threads)

    monkeypatch.setattr(nucseg.inference.runners.OnnxRunner, "__init__", recording_init)
    monkeypatch.setattr(nucseg.batch.driver, "default_threads", lambda: 2)
    model = load_model(active_model_dir)
    side_by_side = segment_files(_small_inputs(), tmp_path / "threads", model=model)
    assert created == [1]  # two images at a time, each network call on one core
    serial = segment_files(_small_inputs(), tmp_path / "serial", model=model, executor=InProcessExecutor())
    assert created == [1, None]  # one at a time: every core, and the model is back to its default
    assert side_by_side.n_ok == serial.n_ok == 3
    for name in (p.name for p in _small_inputs()):
        assert np.array_equal(
            read_labels(tmp_path / "threads" / f"{name}_labels.tif"),
            read_labels(tmp_path / "serial" / f"{name}_labels.tif"),
        )
    assert not load_model(active_model_dir, device="cpu").segments_side_by_side(backend="torch")


def test_segment_files_with_the_classical_model_and_checks_options_first(tmp_path):
    report = segment_files(_small_inputs()[:1], tmp_path / "out", model="classical", measure=True)
    assert report.n_ok == 1 and report.images[0].nuclei > 5
    with pytest.raises(nucseg.NucsegError, match="tta"):
        segment_files(_small_inputs()[:1], tmp_path / "out2", model="classical", tta=True)
    assert not (tmp_path / "out2").exists()


def _with_settings_by_kind(source: Path, folder: Path, by_kind: dict) -> Path:
    import json

    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    config["postprocess_by_kind"] = by_kind
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_settings_by_image_kind_apply_to_images_of_that_kind(tmp_path, active_model_dir, dsb_samples):
    from nucseg.postprocess.watershed import PostprocessConfig

    nothing = PostprocessConfig(min_size=10**6).to_dict()
    model = load_model(_with_settings_by_kind(active_model_dir, tmp_path / "model", {"fluorescence": nothing}))
    fluorescence, histology = dsb_samples["00071198"].image, dsb_samples["00ae65c1"].image
    assert model.postprocess_for(fluorescence) == PostprocessConfig(min_size=10**6)
    assert model.postprocess_for(histology) == model.postprocess_config == model.postprocess_for(None)
    assert model.segment(fluorescence).labels.max() == 0
    assert model.segment(histology).labels.max() > 0
    assert model.segment(fluorescence, postprocess={"min_size": 0}).labels.max() > 0  # overrides go on top
    blue_only = np.zeros(fluorescence.shape[:2] + (3,), dtype=np.uint8)
    blue_only[..., 2] = fluorescence[..., 0]  # a DAPI export: gray fluorescence to the network, kind included
    assert model.postprocess_for(blue_only) == PostprocessConfig(min_size=10**6)


def test_settings_by_kind_must_name_known_kinds(tmp_path, active_model_dir):
    folder = _with_settings_by_kind(active_model_dir, tmp_path / "model", {"confocal": {}})
    with pytest.raises(ModelError, match="unknown image kinds confocal"):
        load_model(folder)

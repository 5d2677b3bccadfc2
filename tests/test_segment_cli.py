import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from nucseg.models import registry

from nucseg.datasets.locations import sample_image_paths
from nucseg.cli import main
from nucseg.io.images import read_image, read_labels
from nucseg.postprocess.measure import AUTO_SCALE_LIMITS, measure_nuclei

DSB_DIR = Path(__file__).parent / "data" / "dsb2018"


def _fixture_image(prefix: str) -> Path:
    sample_dir = next(p for p in DSB_DIR.iterdir() if p.name.startswith(prefix))
    return next((sample_dir / "images").iterdir())


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_sample_end_to_end(tmp_path, active_model_dir, capsys):
    out = tmp_path / "demo"
    code = main(["segment", "--sample", "--out", str(out), "--overlay", "--measure", "--model", str(active_model_dir)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    names = [p.stem for p in sample_image_paths()]
    assert len(names) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}_{suffix}" for n in names for suffix in ("labels.tif", "overlay.png", "nuclei.csv")] + ["summary.csv"]
    )
    for path in sample_image_paths():
        image = read_image(path)
        labels = read_labels(out / f"{path.stem}_labels.tif")
        assert labels.shape == image.shape[:2] and labels.max() > 0
        assert read_image(out / f"{path.stem}_overlay.png").shape == image.shape[:2] + (3,)
    assert [row["status"] for row in _summary(out)] == ["ok"] * 3
    assert "3 of 3 images segmented" in captured.out and "0 failed" in captured.out


def test_failed_image_gives_exit_code_1_and_others_are_written(tmp_path, active_model_dir, capsys):
    shutil.copy(_fixture_image("0280fa8f"), tmp_path / "good.png")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(tmp_path / "good.png"),
            str(tmp_path / "broken.tif"),
            "--out",
            str(out),
            "--model",
            str(active_model_dir),
            "--rle",
            str(out / "submission.csv"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "nucseg: failed:" in captured.err and "broken.tif" in captured.err
    assert (out / "good_labels.tif").is_file() and not (out / "broken_labels.tif").exists()
    with open(out / "submission.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["ImageId", "EncodedPixels"] and {row[0] for row in rows[1:]} == {"good"}


def test_second_run_does_not_overwrite_without_overwrite(tmp_path, active_model_dir, capsys):
    image = _fixture_image("00071198")
    out = tmp_path / "out"
    args = ["segment", str(image), "--out", str(out), "--model", str(active_model_dir)]
    assert main(args) == 0
    labels_file = out / f"{image.stem}_labels.tif"
    before = labels_file.read_bytes()
    capsys.readouterr()
    assert main(args + ["--tile-size", "128"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert labels_file.read_bytes() == before
    assert main(args + ["--overwrite"]) == 0


def test_missing_default_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(registry, "package_models_dir", lambda: tmp_path / "no models")
    code = main(["segment", str(_fixture_image("00071198")), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("nucseg: error: ") and "'nuclei' is not installed" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "summary.csv").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tile-size", "100"], "multiple of 32"),
        (["--diameter", "30"], "records no nucleus diameter"),
        (["--scale", "-1"], "positive"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, active_model_dir, capsys, extra, message):
    code = main(
        ["segment", str(_fixture_image("00071198")), "--out", str(tmp_path / "out"), "--model", str(active_model_dir)]
        + extra
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_usage_errors(tmp_path, capsys):
    assert main(["segment", "--out", str(tmp_path / "out"), "--model", "classical"]) == 2
    assert "--sample" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "--sample", "--out", str(tmp_path), "--scale", "2", "--diameter", "20"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "--sample", "--out", str(tmp_path), "--diameter", "large"])
    assert exit_info.value.code == 2 and "number of pixels, microns such as 8um, or 'auto'" in capsys.readouterr().err


def test_summary_reports_the_scale_each_image_ran_at(tmp_path, active_model_dir, capsys):
    image = _fixture_image("00ae65c1")
    for extra, expected in ((["--diameter", "auto"], "1.000"), (["--scale", "0.5"], "0.500")):
        out = tmp_path / extra[0].strip("-")
        assert main(["segment", str(image), "--out", str(out), "--model", str(active_model_dir)] + extra) == 0
        assert [row["scale"] for row in _summary(out)] == [expected]  # the test model records no diameter
    assert main(["segment", str(image), "--out", str(tmp_path / "classical"), "--model", "classical"]) == 0
    assert [row["scale"] for row in _summary(tmp_path / "classical")] == [""]


def test_export_onnx(tmp_path, active_model_dir, capsys, dsb_samples):
    import onnxruntime

    from nucseg.inference.model import load_model
    from nucseg.inference.runners import OnnxRunner
    from nucseg.inference.tiling import predict_tiled
    from nucseg.preprocess.normalize import prepare_image

    path = tmp_path / "model.onnx"
    assert main(["export", "--model", str(active_model_dir), "--format", "onnx", "--out", str(path)]) == 0
    assert "probabilities" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    model = load_model(active_model_dir)
    image = prepare_image(dsb_samples["0280fa8f"].image)
    exported = predict_tiled(OnnxRunner(path), image)
    assert np.abs(exported - model.probabilities(dsb_samples["0280fa8f"].image, backend="torch")).max() < 1e-4

    assert main(["export", "--model", str(active_model_dir), "--out", str(path)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--model", "classical", "--out", str(tmp_path / "c.onnx")]) == 2
    assert "no network" in capsys.readouterr().err


def test_blue_only_dapi_is_segmented_as_the_gray_image(tmp_path):
    gray = read_image(_fixture_image("0280fa8f"))[:, :, 0]
    blue = np.zeros(gray.shape + (3,), np.uint8)
    blue[:, :, 2] = gray
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(blue).save(tmp_path / "blue.png")
    inputs = [str(tmp_path / "gray.png"), str(tmp_path / "blue.png")]
    assert main(["segment", *inputs, "--out", str(tmp_path / "out")]) == 0
    gray_labels, blue_labels = (read_labels(tmp_path / "out" / f"{n}_labels.tif") for n in ("gray", "blue"))
    assert gray_labels.max() > 10 and np.array_equal(blue_labels, gray_labels)


def test_a_4_channel_imagej_tiff_needs_channel_and_segments_the_named_one(tmp_path, capsys):
    dapi = read_image(_fixture_image("0280fa8f"))[:, :, 0].astype(np.uint16) * 200
    rng = np.random.default_rng(0)
    stack = np.stack([rng.integers(0, 4000, dapi.shape, dtype=np.uint16) for _ in range(3)] + [dapi])
    tifffile.imwrite(
        tmp_path / "cells.tif",
        stack,
        imagej=True,
        metadata={"axes": "CYX", "Labels": ["actin", "GFP", "mito", "DAPI"]},
        compression="lzw",
    )
    tifffile.imwrite(tmp_path / "dapi.tif", dapi)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "cells.tif"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "4 channels (1 actin, 2 GFP, 3 mito, 4 DAPI)" in err and "--channel" in err
    assert not (out / "cells_labels.tif").exists()
    for choice in ("DAPI", "4"):
        assert (
            main(
                [
                    "segment",
                    str(tmp_path / "cells.tif"),
                    str(tmp_path / "dapi.tif"),
                    "--out",
                    str(out),
                    "--channel",
                    choice,
                    "--overwrite",
                    "--measure",
                ]
            )
            == 0
        )
        chosen, direct = read_labels(out / "cells_labels.tif"), read_labels(out / "dapi_labels.tif")
        assert chosen.max() > 10 and np.array_equal(chosen, direct)
        with open(out / "cells_nuclei.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        with open(out / "dapi_nuclei.csv", newline="") as f:
            direct_rows = list(csv.DictReader(f))  # a one-channel file: nothing chosen, its channel by position
        assert len(rows) == chosen.max() and "mean_intensity_0" not in rows[0]
        assert [row["mean_intensity_DAPI"] for row in rows] == [row["mean_intensity_0"] for row in direct_rows]
        expected = measure_nuclei(chosen, np.moveaxis(stack, 0, -1), channel_names=["actin", "GFP", "mito", "DAPI"])
        assert all(
            float(row[column]) == pytest.approx(want[column], rel=1e-5)
            for row, want in zip(rows, expected.rows)
            for column in expected.columns
            if "intensity" in column
        )  # every channel, by name


def test_a_folder_lists_skipped_files_once_and_a_bomb_header_fails_in_one_line(tmp_path, capsys, png_claiming_size):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(_fixture_image("0280fa8f"), folder / "cells.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.bmp")
    (folder / "notes.txt").write_text("imaging notes")
    png_claiming_size(folder / "bomb.png", 200_000, 200_000)
    assert main(["segment", str(folder), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("skipped 2 file(s) that are not images") == 1 and "a.bmp, notes.txt" in err
    bomb_lines = [line for line in err.splitlines() if "bomb.png" in line]
    assert len(bomb_lines) == 1 and "decompression bomb" in bomb_lines[0] and "Traceback" not in err
    assert (tmp_path / "out" / "cells_labels.tif").is_file()


def _summary_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def test_the_pixel_size_of_an_ome_tiff_gives_microns_and_diameters_in_microns(tmp_path, capsys):
    gray = read_image(_fixture_image("0280fa8f"))[:, :, 0]
    tifffile.imwrite(tmp_path / "cells.ome.tif", gray, ome=True, metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    Image.fromarray(gray).save(tmp_path / "cells.png")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "cells.ome.tif"), "--out", str(out), "--measure"]) == 0
    with open(out / "cells_nuclei.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert "area_um2" in rows[0] and "centroid_x_um" in rows[0] and "area_px" not in rows[0]
    summary = _summary_rows(out)["cells"]
    assert float(summary["pixel_size_um"]) == 0.5 and float(summary["median_diameter_px"]) > 3
    diameter_px = float(summary["median_diameter_px"])
    for name, options in (("um", ["--diameter", f"{diameter_px * 0.5}um"]), ("px", ["--diameter", str(diameter_px)])):
        assert main(["segment", str(tmp_path / "cells.ome.tif"), "--out", str(tmp_path / name), *options]) == 0
    assert _summary_rows(tmp_path / "um")["cells"]["scale"] == _summary_rows(tmp_path / "px")["cells"]["scale"]
    assert np.array_equal(
        read_labels(tmp_path / "um" / "cells_labels.tif"), read_labels(tmp_path / "px" / "cells_labels.tif")
    )
    capsys.readouterr()
    assert main(["segment", str(tmp_path / "cells.png"), "--out", str(tmp_path / "png"), "--diameter", "8um"]) == 1
    assert "states no pixel size; give --pixel-size" in capsys.readouterr().err


def test_a_zyx_stack_is_segmented_plane_by_plane_and_linked_into_3d_nuclei(tmp_path):
    gray = read_image(_fixture_image("0280fa8f"))[:, :, 0]
    stack = np.stack([gray, np.roll(gray, 1, axis=1), np.roll(gray, 2, axis=1)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "plane1.tif", stack[1])
    out, linked = tmp_path / "out", tmp_path / "linked"
    assert (
        main(["segment", str(tmp_path / "stack.tif"), str(tmp_path / "plane1.tif"), "--out", str(out), "--measure"])
        == 0
    )
    labels = tifffile.imread(out / "stack_labels.tif")
    assert labels.shape == stack.shape
    assert np.array_equal(labels[1], read_labels(out / "plane1_labels.tif"))  # each plane as the 2-D image
    rows = _summary_rows_list(out)
    assert [row["plane"] for row in rows if row["image"] == "stack"] == ["", "z=0", "z=1", "z=2"]
    per_plane = [int(row["nuclei"]) for row in rows if row["image"] == "stack" and row["plane"]]
    assert int(rows[0]["nuclei"]) == sum(per_plane) and min(per_plane) > 10
    with open(out / "stack_nuclei.csv", newline="") as handle:
        planes = [row["plane"] for row in csv.DictReader(handle)]
    assert sorted(set(planes)) == ["z=0", "z=1", "z=2"] and len(planes) == sum(per_plane)

    assert main(["segment", str(tmp_path / "stack.tif"), "--out", str(linked), "--stitch-threshold", "0.5"]) == 0
    three_d = tifffile.imread(linked / "stack_labels.tif")
    assert np.array_equal(three_d > 0, labels > 0)
    nucleus = three_d[0][three_d[0] > 0][0]
    assert np.count_nonzero(three_d[1] == nucleus) > 0  # the same nucleus, one pixel along, in the next plane
    assert int(_summary_rows_list(linked)[0]["nuclei"]) < sum(per_plane)  # 3-D nuclei, each counted once


def test_linked_nuclei_of_a_time_series_are_counted_at_every_time_point(tmp_path):
    gray = read_image(_fixture_image("0280fa8f"))[:, :, 0]
    z_stack = np.stack([gray, np.roll(gray, 1, axis=1)])
    tifffile.imwrite(tmp_path / "one.tif", z_stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "two.tif", np.stack([z_stack, z_stack]), imagej=True, metadata={"axes": "TZYX"})
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                str(tmp_path / "one.tif"),
                str(tmp_path / "two.tif"),
                "--out",
                str(out),
                "--stitch-threshold",
                "0.5",
            ]
        )
        == 0
    )
    counts = {row["image"]: int(row["nuclei"]) for row in _summary_rows_list(out) if not row["plane"]}
    assert counts["one"] > 10 and counts["two"] == 2 * counts["one"]  # the same 3-D nuclei at two time points


def test_a_stack_asked_to_run_block_wise_runs_plane_by_plane_and_says_so(tmp_path, capsys):
    gray = read_image(_fixture_image("0280fa8f"))[:, :, 0]
    tifffile.imwrite(
        tmp_path / "stack.tif", np.stack([gray, np.roll(gray, 1, axis=1)]), imagej=True, metadata={"axes": "ZYX"}
    )
    capsys.readouterr()
    assert (
        main(["segment", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "always"), "--blockwise", "always"]) == 0
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if "a stack of 2 planes" in line]
    assert len(lines) == 1 and "stack.tif" in lines[0] and "block-wise segmentation takes 2-D images" in lines[0]
    assert main(["segment", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "auto")]) == 0
    assert np.array_equal(
        tifffile.imread(tmp_path / "always" / "stack_labels.tif"),
        tifffile.imread(tmp_path / "auto" / "stack_labels.tif"),
    )


def _summary_rows_list(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_automatic_sizing_says_when_nuclei_are_beyond_its_range(tmp_path, capsys):
    gray = read_image(_fixture_image("0280fa8f"))[:, :, 0]
    # Enlarged 4 times, its nuclei are about 65 px across: shrinking them to the default model's 23 px needs a
    # factor of about 0.35, below the 0.5 automatic sizing stops at.
    Image.fromarray(gray).resize((1024, 1024), Image.BILINEAR).save(tmp_path / "large_nuclei.png")
    Image.fromarray(gray).save(tmp_path / "usual.png")
    assert (
        main(
            ["segment", str(tmp_path / "large_nuclei.png"), str(tmp_path / "usual.png"), "--out", str(tmp_path / "out")]
        )
        == 0
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "too far from the training size" in line]
    assert len(lines) == 1 and "large_nuclei.png" in lines[0] and "--diameter" in lines[0]
    rows = _summary_rows(tmp_path / "out")
    assert float(rows["large_nuclei"]["scale"]) == AUTO_SCALE_LIMITS[0]  # the limit it stopped at
    assert AUTO_SCALE_LIMITS[0] < float(rows["usual"]["scale"]) < AUTO_SCALE_LIMITS[1]


def test_block_wise_images_get_measurements_and_an_overview_too(tmp_path):
    image = np.tile(read_image(_fixture_image("0280fa8f"))[..., :3], (2, 2, 1))
    tifffile.imwrite(tmp_path / "mosaic.tif", image, photometric="rgb", tile=(256, 256))
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                str(tmp_path / "mosaic.tif"),
                "--out",
                str(out),
                "--blockwise",
                "always",
                "--block-size",
                "256",
                "--margin",
                "32",
                "--measure",
                "--overlay",
                "--pixel-size",
                "0.5",
            ]
        )
        == 0
    )
    labels = read_labels(out / "mosaic_labels.tif")
    with open(out / "mosaic_nuclei.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(np.unique(labels)) - 1 > 20 and "area_um2" in rows[0]
    assert np.asarray(Image.open(out / "mosaic_overlay.png")).shape == (512, 512, 3)
    assert _summary_rows(out)["mosaic"]["pixel_size_um"] == "0.5"


def test_a_large_image_reports_its_tiles(tmp_path, active_model_dir, capsys):
    from nucseg.io.images import write_png

    image = np.tile(read_image(sample_image_paths()[0]), (2, 2, 1))[:600, :600]
    write_png(tmp_path / "large.png", image)
    code = main(
        [
            "segment",
            str(tmp_path / "large.png"),
            "--out",
            str(tmp_path / "out"),
            "--model",
            str(active_model_dir),
            "--tile-size",
            "256",
            "--scale",
            "1",
        ]
    )
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "tiles" in line]
    assert lines and lines[-1].startswith("nucseg: large.png, pass 1: 9 of 9 tiles")


def test_a_plain_z_stack_segments_with_axes_into_qupath_fiji_and_ome_zarr_files(tmp_path, capsys):
    from skimage.draw import disk

    planes = np.zeros((3, 96, 96), np.uint8)
    for z, (row, col) in enumerate([(30, 30), (50, 60), (70, 40)]):
        planes[z][disk((row, col), 12)] = 200
    tifffile.imwrite(tmp_path / "stack.tif", planes, photometric="minisblack")  # pages; no axes metadata
    assert (
        main(["segment", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "refused"), "--model", "classical"]) == 1
    )
    assert "--axes" in capsys.readouterr().err
    code = main(
        [
            "segment",
            str(tmp_path / "stack.tif"),
            "--out",
            str(tmp_path / "out"),
            "--model",
            "classical",
            "--axes",
            "ZYX",
            "--geojson",
            "--imagej-rois",
            "--ome-zarr",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "stack.ome.zarr",
        "stack_labels.tif",
        "stack_nuclei.geojson",
        "stack_rois.zip",
        "summary.csv",
    ]
    assert [row["plane"] for row in _summary(tmp_path / "out")] == ["", "z=0", "z=1", "z=2"]
    assert tifffile.imread(tmp_path / "out" / "stack_labels.tif").shape == (3, 96, 96)


def test_outline_width_draws_wider_outlines_in_the_overlay(tmp_path, capsys):
    image = _fixture_image("0280fa8f")
    for width in (1, 3):
        assert (
            main(
                [
                    "segment",
                    str(image),
                    "--out",
                    str(tmp_path / f"w{width}"),
                    "--model",
                    "classical",
                    "--overlay",
                    "--outline-width",
                    str(width),
                ]
            )
            == 0
        )
    overlays = [read_image(next((tmp_path / f"w{width}").glob("*_overlay.png"))) for width in (1, 3)]
    vivid = [int(np.count_nonzero((overlay.max(axis=2) == 255) & (overlay.min(axis=2) == 0))) for overlay in overlays]
    assert vivid[1] > 2 * vivid[0] > 0
    assert (
        main(
            [
                "segment",
                str(image),
                "--out",
                str(tmp_path / "w0"),
                "--model",
                "classical",
                "--overlay",
                "--outline-width",
                "0",
            ]
        )
        == 2
    )
    assert "outline width must be a whole number of pixels, at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("blockwise", ["never", "always"])
def test_a_pyramid_is_segmented_at_the_level_asked_for_with_that_levels_pixel_size(tmp_path, pyramid_tiff, blockwise):
    from nucseg.inference.model import load_model

    gray = read_image(_fixture_image("0280fa8f"))[:, :, 0]
    pyramid_tiff(tmp_path / "slide.ome.tif", gray, 0.25)
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "slide.ome.tif"), "--out", str(out), "--model", "classical", "--measure"]
    assert main(args + ["--level", "1", "--blockwise", blockwise]) == 0
    labels = read_labels(out / "slide_labels.tif")
    expected = load_model("classical").segment(gray).labels  # the pixels of level 1, as they are
    assert labels.shape == gray.shape and len(np.unique(labels)) == len(np.unique(expected)) > 10
    assert np.array_equal(labels > 0, expected > 0)
    summary = _summary_rows(out)["slide"]
    assert float(summary["pixel_size_um"]) == pytest.approx(0.5) and int(summary["nuclei"]) == labels.max()
    with open(out / "slide_nuclei.csv", newline="") as handle:
        areas = [float(row["area_um2"]) for row in csv.DictReader(handle)]
    assert sum(areas) == pytest.approx(np.count_nonzero(labels) * 0.5**2)  # each pixel of level 1 is 0.5 x 0.5 um


def test_a_level_the_file_lacks_fails_the_image_and_a_negative_level_is_refused_in_one_line(
    tmp_path, capsys, pyramid_tiff
):
    gray = read_image(_fixture_image("0280fa8f"))[:, :, 0]
    pyramid_tiff(tmp_path / "slide.ome.tif", gray, 0.25)
    Image.fromarray(gray).save(tmp_path / "cells.png")
    for name, level, levels in (
        ("slide.ome.tif", 2, "2 resolution level(s), 0 to 1"),
        ("cells.png", 1, "1 resolution level(s), 0 to 0"),
    ):
        path = tmp_path / name
        out = tmp_path / f"out_{path.stem}"
        assert main(["segment", str(path), "--out", str(out), "--model", "classical", "--level", str(level)]) == 1
        err = capsys.readouterr().err.splitlines()
        assert err == [f"nucseg: failed: {path}: has {levels}; level {level} was asked for"]  # open_image's words
        assert _summary_rows(out)[path.name.split(".")[0]]["status"] == "failed"
    assert main(["segment", str(tmp_path / "cells.png"), "--out", str(tmp_path / "neg"), "--level", "-1"]) == 2
    err = capsys.readouterr().err
    assert "level must be a whole number, 0 (full resolution) or more, got -1" in err and len(err.splitlines()) == 1

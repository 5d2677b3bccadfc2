from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import zarr

import nucseg
from nucseg.batch.blockwise import segment_large
from nucseg.batch.driver import segment_files
from nucseg.errors import InputError
from nucseg.inference.model import load_model
from nucseg.inference.options import OptionsError, PostprocessOverrides, SegmentOptions
from nucseg.postprocess.watershed import PostprocessConfig


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"scale": 0}, "scale must be a positive number, got 0"),
        ({"scale": float("nan")}, "scale must be a positive number, got nan"),
        ({"scale": True}, "scale must be a positive number, got True"),
        ({"diameter": -3}, "diameter must be a positive number of pixels, got -3"),
        (
            {"diameter": "large"},
            "diameter must be a number of pixels or 'auto' (or, for files, microns such as '8um'), got 'large'",
        ),
        ({"scale": 0.5, "diameter": 20}, "give scale or diameter, not both"),
        ({"tile_size": 100}, "tile_size must be a positive multiple of 32, got 100"),
        ({"tile_size": 0}, "tile_size must be a positive multiple of 32, got 0"),
        ({"tile_size": 256.0}, "tile_size must be a whole number, got 256.0"),
        ({"tile_size": 256, "overlap": 200}, "overlap must be in [0, tile_size / 2] = [0, 128], got 200"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"tta": "yes"}, "tta must be true or false, got 'yes'"),
        (
            {"backend": "tensorflow"},
            "unknown backend 'tensorflow'; choose one of: torch, onnxruntime, onnxruntime-int8",
        ),
        ({"channel": 0}, "channel 0: channels are counted from 1"),
        ({"channel": "0"}, "channel '0': channels are counted from 1"),
        ({"channel": 1.5}, "channel must be a number counted from 1 or a channel name, got 1.5"),
        ({"channel": " "}, "channel must be a number counted from 1 or a channel name, got ' '"),
        ({"channel_axis": "0"}, "channel axis must be a whole number, got '0'"),
        ({"axes": "ZQX"}, "--axes 'ZQX': name each axis once with the letters TZCSYX, Y and X among them"),
        ({"axes": "ZYX", "channel_axis": 0}, "give the axes (--axes) or the channel axis (--channel-axis), not both"),
        ({"level": -1}, "level must be a whole number, 0 (full resolution) or more, got -1"),
        ({"level": 1.0}, "level must be a whole number, 0 (full resolution) or more, got 1.0"),
        ({"level": True}, "level must be a whole number, 0 (full resolution) or more, got True"),
        ({"postprocess": {"min_sise": 3}}, "unknown postprocess setting(s) 'min_sise'; known: foreground_threshold"),
        (
            {"postprocess": {"foreground_threshold": 1.5}},
            "postprocess foreground_threshold must be a probability in [0, 1), got 1.5",
        ),
        ({"postprocess": {"min_size": -1}}, "postprocess min_size must be a non-negative integer (pixels), got -1"),
        ({"postprocess": [("min_size", 3)]}, "postprocess settings must be a mapping, got list"),
    ],
)
def test_each_invalid_value_is_refused_in_one_line(values, message):
    with pytest.raises(OptionsError) as refused:
        SegmentOptions(**values)
    text = str(refused.value)
    assert text.startswith(message) and "\n" not in text
    assert isinstance(refused.value, InputError) and isinstance(refused.value, ValueError)  # CLI and Python alike


def test_valid_values_are_stored_as_plain_types():
    options = SegmentOptions(
        scale=np.float32(0.5),
        tile_size=np.int64(256),
        channel=np.int16(2),
        axes="zyx",
        level=np.uint8(1),
        tta=np.bool_(True),
        postprocess={"min_size": np.int64(30), "foreground_threshold": 0.4},
    )
    assert type(options.scale) is float and type(options.tile_size) is int and type(options.channel) is int
    assert options.level == 1 and type(options.level) is int and SegmentOptions().level == 0
    assert options.axes == "ZYX" and options.tta is True and options.layout == "ZYX"
    assert options.postprocess == PostprocessOverrides(min_size=30, foreground_threshold=0.4)
    assert type(options.postprocess.min_size) is int
    assert SegmentOptions(channel_axis=0).layout == 0 and SegmentOptions().layout is None
    assert SegmentOptions(diameter="8um").microns == 8.0 and SegmentOptions(channel="DAPI").channel == "DAPI"
    assert SegmentOptions(tile_size=512).tiling() == (512, 64, 1)


def test_round_trip_to_and_from_dict_and_json():
    options = SegmentOptions(
        diameter=12.5,
        tile_size=256,
        overlap=32,
        tta=True,
        backend="onnxruntime",
        channel="DAPI",
        axes="CYX",
        level=2,
        postprocess={"min_size": 30},
    )
    data = options.to_dict()
    assert data == {
        "diameter": 12.5,
        "tile_size": 256,
        "overlap": 32,
        "tta": True,
        "backend": "onnxruntime",
        "channel": "DAPI",
        "axes": "CYX",
        "level": 2,
        "postprocess": {"min_size": 30},
    }
    assert SegmentOptions.from_dict(json.loads(json.dumps(data))) == options
    assert SegmentOptions().to_dict() == {} and SegmentOptions.from_dict({}) == SegmentOptions()
    scaled = SegmentOptions(scale=0.5, diameter=None)
    assert SegmentOptions.from_dict(json.loads(json.dumps(scaled.to_dict()))) == scaled
    with pytest.raises(OptionsError, match="unknown segment option"):
        SegmentOptions.from_dict({"tile_sise": 256})
    with pytest.raises(OptionsError, match="tile_size must be a positive multiple of 32"):
        SegmentOptions.from_dict({"tile_size": 33})


def test_keywords_build_or_replace_options():
    base = SegmentOptions(tile_size=256, tta=True)
    assert SegmentOptions.from_keywords(None, tile_size=256, tta=True) == base
    assert SegmentOptions.from_keywords(base) is base
    assert base.replace(tta=False) == SegmentOptions(tile_size=256)
    with pytest.raises(TypeError, match="unexpected segment option"):
        SegmentOptions.from_keywords(base, tile_sise=3)
    with pytest.raises(OptionsError, match="multiple of 32"):
        base.replace(tile_size=100)
    with pytest.raises(OptionsError, match="describe files"):
        SegmentOptions.for_array(axes="ZYX")
    with pytest.raises(OptionsError, match="^level describe files"):
        SegmentOptions.for_array(SegmentOptions(level=1))
    assert SegmentOptions.for_array(level=0) == SegmentOptions()
    assert SegmentOptions(channel=2, axes="CYX", level=1, tta=True).for_planes() == SegmentOptions(tta=True)


def test_postprocess_overrides_mirror_the_config_and_apply_on_top():
    assert [item.name for item in dataclasses.fields(PostprocessOverrides)] == [
        item.name for item in dataclasses.fields(PostprocessConfig)
    ]
    base = PostprocessConfig(min_size=12, marker_threshold=0.6)
    applied = PostprocessOverrides(min_size=30).apply(base)
    assert applied == dataclasses.replace(base, min_size=30)
    assert PostprocessOverrides().apply(base) is base and not PostprocessOverrides()


def test_a_diameter_in_microns_becomes_pixels_with_the_pixel_size(tmp_path):
    options = SegmentOptions(diameter="8um", tile_size=256)
    assert options.in_pixels(0.5) == SegmentOptions(diameter=16.0, tile_size=256)
    assert SegmentOptions(diameter=10).in_pixels(None) == SegmentOptions(diameter=10)
    with pytest.raises(InputError, match=r"x.tif: --diameter 8um is in microns, but the image states no pixel size"):
        options.in_pixels(None, tmp_path / "x.tif")
    with pytest.raises(ValueError, match="in microns: give it in pixels"):
        load_model("nuclei").segment(np.zeros((64, 64), np.uint8), options=options)


def test_options_object_and_keywords_segment_alike(dsb_samples):
    model = load_model("classical")
    image = dsb_samples["00071198"].image
    by_keywords = model.segment(image, tile_size=256).labels
    assert np.array_equal(model.segment(image, options=SegmentOptions(tile_size=256)).labels, by_keywords)
    assert np.array_equal(model.segment(image, SegmentOptions(tile_size=512), tile_size=256).labels, by_keywords)
    with pytest.raises(ValueError, match="tta"):
        model.segment(image, options=SegmentOptions(tta=True))
    assert nucseg.SegmentOptions is SegmentOptions


def test_the_driver_refuses_bad_options_before_any_work(tmp_path, dsb_samples):
    image = tmp_path / "cells.png"
    from PIL import Image

    Image.fromarray(dsb_samples["00071198"].image[..., :3]).save(image)
    for bad in ({"tile_size": 100}, {"axes": "ZYX", "channel_axis": 0}, {"postprocess": {"min_sise": 1}}):
        with pytest.raises(OptionsError):
            segment_files([image], tmp_path / "out", model="classical", **bad)
    with pytest.raises(TypeError, match="unexpected segment option"):
        segment_files([image], tmp_path / "out", model="classical", tile_sise=256)
    with pytest.raises(nucseg.NucsegError, match="classical model has no network; tta"):
        segment_files([image], tmp_path / "out", model="classical", options=SegmentOptions(tta=True))
    assert not (tmp_path / "out").exists()
    report = segment_files([image], tmp_path / "out", model="classical", options=SegmentOptions(tile_size=256))
    assert report.n_ok == 1 and report.images[0].nuclei > 5


class _Crashing:
    """The classical model, crashing at its n-th block."""

    def __init__(self, crash_at):
        self.model, self.calls, self.crash_at = load_model("classical"), 0, crash_at

    def __call__(self, image, **options):
        self.calls += 1
        if self.calls == self.crash_at:
            raise RuntimeError("simulated crash")
        return self.model.segment(image, **options)


def test_a_block_wise_run_of_the_earlier_version_resumes(tmp_path, dsb_samples, monkeypatch):
    image = np.tile(dsb_samples["0280fa8f"].image[..., :3], (3, 3, 1))  # 3 x 3 blocks of 256
    model = load_model("classical")
    crashing = _Crashing(crash_at=5)
    monkeypatch.setattr(model, "segment", crashing)
    output = tmp_path / "labels.zarr"
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_large(image, output, model=model, block_size=256, margin=32, tile_size=256)
    scratch = zarr.open_group(str(tmp_path / ".labels.zarr.nucseg-blocks"), mode="r+")
    settings = dict(scratch.attrs["settings"])
    assert settings["options"] == {"tile_size": 256}  # what the earlier version stored: the options given
    crashing.calls, crashing.crash_at = 0, None
    report = segment_large(image, output, model=model, block_size=256, margin=32, options=SegmentOptions(tile_size=256))
    assert report.resumed_blocks == 4 and crashing.calls == 5
    with pytest.raises(InputError, match="channel, channel_axis, axes and level describe files"):  # never ignored
        segment_large(image, tmp_path / "other.zarr", model=model, channel=2)
    with pytest.raises(InputError, match="describe files"):
        segment_large(image, tmp_path / "other.zarr", model=model, level=1)

"""Tests of nucseg.io.opened: one opened image per file kind knows its axes, channels and pixel size, and reads
whole or by region."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from nucseg.errors import InputError
from nucseg.io.images import read_image, read_stack
from nucseg.io.ngff import create_ngff, NgffImage, write_region
from nucseg.io.opened import image_pixel_size, open_image

RNG = np.random.default_rng(7)


def _check_regions(opened, whole):
    """A region read is that slice of the whole image, wherever it lies."""
    height, width = opened.shape
    for rows, cols in [(slice(0, height), slice(0, width)), (slice(3, height // 2), slice(width // 3, width - 1))]:
        assert np.array_equal(opened.read(rows, cols), whole[rows, cols])


def test_a_png_opens_as_its_header_states_and_reads_as_read_image(tmp_path):
    rgb = RNG.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    opened = open_image(tmp_path / "a.png")
    assert (opened.shape, opened.channels, opened.dtype, opened.axes) == ((40, 50), 3, np.uint8, "YXC")
    assert opened.pixel_size is None and opened.stated_channel_names is None and not opened.lazy
    whole = opened.read()
    assert np.array_equal(whole, rgb) and np.array_equal(read_image(tmp_path / "a.png"), whole)
    _check_regions(opened, whole)
    gray = RNG.integers(0, 65535, (30, 20), dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    opened = open_image(tmp_path / "gray.png")
    assert (opened.channels, opened.dtype, opened.axes) == (0, np.uint16, "YX")
    assert np.array_equal(opened.read(), gray)


def test_an_imagej_tiff_knows_its_channel_names_and_pixel_size(tmp_path):
    stack = RNG.integers(0, 4000, (2, 32, 48), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "a.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"axes": "CYX", "Labels": ["GFP", "DAPI"], "unit": "micron"},
    )
    opened = open_image(tmp_path / "a.tif")  # opens to say what it holds; reading needs a channel
    assert opened.stated_channel_names == ("GFP", "DAPI") and opened.channels == 2
    assert opened.pixel_size == pytest.approx(0.5) and opened.lazy and opened.axes == "YXC"
    with pytest.raises(InputError, match=r"a.tif: image has 2 channels \(1 GFP, 2 DAPI\)"):
        opened.read()
    with pytest.raises(InputError, match=r"2 channels \(1 GFP, 2 DAPI\)"):
        opened.read(slice(0, 8), slice(0, 8))
    dapi = open_image(tmp_path / "a.tif", channel="dapi")
    assert dapi.channel_name == "DAPI" and dapi.channels == 0 and dapi.axes == "YX"
    whole = dapi.read()
    assert np.array_equal(whole, stack[1]) and np.array_equal(read_image(tmp_path / "a.tif", channel="DAPI"), whole)
    _check_regions(dapi, whole)
    assert np.array_equal(dapi.every_channel().read(), np.moveaxis(stack, 0, -1))


def test_an_ome_tiff_knows_its_channel_names_and_pixel_size_in_its_unit(tmp_path):
    stack = RNG.integers(0, 255, (3, 40, 24), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "a.ome.tif",
        stack,
        ome=True,
        tile=(16, 16),
        metadata={
            "axes": "CYX",
            "Channel": {"Name": ["actin", "DAPI", "tubulin"]},
            "PhysicalSizeX": 325.0,
            "PhysicalSizeXUnit": "nm",
        },
    )
    opened = open_image(tmp_path / "a.ome.tif", channel=2)
    assert opened.stated_channel_names == ("actin", "DAPI", "tubulin") and opened.channel_name == "DAPI"
    assert opened.pixel_size == pytest.approx(0.325) == image_pixel_size(tmp_path / "a.ome.tif")
    whole = opened.read()
    assert np.array_equal(whole, stack[1])
    _check_regions(opened, whole)
    stack_read = opened.read_stack()
    assert stack_read.channel_names == ("actin", "DAPI", "tubulin") and np.array_equal(stack_read.planes[0], whole)


def test_a_plain_z_stack_takes_its_axes_from_the_caller(tmp_path):
    planes = RNG.integers(0, 4000, (5, 24, 36), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", planes)  # pages, no axes metadata
    with pytest.raises(InputError, match="does not declare its channel axis"):
        open_image(tmp_path / "z.tif")
    opened = open_image(tmp_path / "z.tif", axes="ZYX")
    assert (opened.plane_axes, opened.plane_shape, opened.shape, opened.axes) == ("Z", (5,), (24, 36), "ZYX")
    stack = opened.read_stack()
    assert np.array_equal(stack.planes, planes) and stack.plane_names()[4] == "z=4"
    assert np.array_equal(read_stack(tmp_path / "z.tif", channel_axis="ZYX").planes, stack.planes)
    with pytest.raises(InputError, match="z.tif: image of shape .* is a Z-stack"):
        opened.read()
    with pytest.raises(InputError, match="is a Z-stack"):
        opened.read(slice(0, 8), slice(0, 8))
    channels = open_image(tmp_path / "z.tif", channel_axis="CYX", channel=4)  # the same pages as channels
    assert channels.channel_names == ("ch1", "ch2", "ch3", "ch4", "ch5")
    assert np.array_equal(channels.read(), planes[3])
    with pytest.raises(InputError, match="not both"):
        open_image(tmp_path / "z.tif", axes="ZYX", channel_axis=0)


def test_a_slide_opens_at_full_resolution_unless_a_level_is_asked_for(tmp_path):
    rgb = RNG.integers(0, 255, (512, 384, 3), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "slide.svs") as tif:  # a pyramid: level 0, then half size
        tif.write(rgb, photometric="rgb", tile=(256, 256), subifds=1)
        tif.write(rgb[::2, ::2], photometric="rgb", tile=(128, 128), subfiletype=1)
    opened = open_image(tmp_path / "slide.svs")
    assert (opened.shape, opened.channels, opened.axes) == ((512, 384), 3, "YXC")
    whole = opened.read()
    assert np.array_equal(whole, rgb)
    _check_regions(opened, whole)
    half = open_image(tmp_path / "slide.svs", level=1)
    assert half.shape == (256, 192) and np.array_equal(half.read(), rgb[::2, ::2])
    assert np.array_equal(half.read(slice(10, 50), slice(0, 192)), rgb[::2, ::2][10:50])
    with pytest.raises(InputError, match=r"slide.svs: has 2 resolution level\(s\), 0 to 1; level 2"):
        open_image(tmp_path / "slide.svs", level=2)


def test_an_ome_zarr_knows_its_axes_channel_names_and_pixel_size_at_each_level(tmp_path):
    image = RNG.integers(0, 4000, (2, 1100, 64), dtype=np.uint16)  # two levels: longer side above 1024
    factors = create_ngff(
        tmp_path / "cells.ome.zarr",
        NgffImage("cyx", image.shape, image.dtype, pixel_size=0.25, channel_names=("DAPI", "GFP")),
        labels_dtype=np.uint16,
        name="cells",
    )
    write_region(
        tmp_path / "cells.ome.zarr",
        factors,
        slice(0, 1100),
        slice(0, 64),
        image=image,
        labels=np.zeros(image.shape[1:], np.uint16),
    )
    opened = open_image(tmp_path / "cells.ome.zarr", channel="GFP")
    assert opened.stated_channel_names == ("DAPI", "GFP") and opened.channel_name == "GFP"
    assert (opened.shape, opened.axes, opened.lazy) == ((1100, 64), "YX", True)
    assert opened.pixel_size == pytest.approx(0.25) == image_pixel_size(tmp_path / "cells.ome.zarr")
    whole = opened.read()
    assert np.array_equal(whole, image[1])
    _check_regions(opened, whole)
    coarse = open_image(tmp_path / "cells.ome.zarr", channel="GFP", level=1)
    assert coarse.shape == (550, 32) and coarse.pixel_size == pytest.approx(0.5)
    assert np.array_equal(coarse.read(), image[1, ::2, ::2])


def test_an_ngff_0_5_image_states_its_metadata_under_ome(tmp_path):
    image = RNG.integers(0, 255, (2, 30, 40), dtype=np.uint8)
    group = zarr.open_group(tmp_path / "v05.zarr", mode="w", zarr_format=3)
    group.attrs["ome"] = {
        "version": "0.5",
        "omero": {"channels": [{"label": "Hoechst"}, {"label": "actin"}]},
        "multiscales": [
            {
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.4, 0.4]}]}],
            }
        ],
    }
    group.create_array("0", shape=image.shape, chunks=(1, 16, 16), dtype=image.dtype)[:] = image
    opened = open_image(tmp_path / "v05.zarr", channel="hoechst")
    assert opened.stated_channel_names == ("Hoechst", "actin") and opened.pixel_size == pytest.approx(0.4)
    assert np.array_equal(opened.read(), image[0]) and np.array_equal(opened.read_stack().planes[0], image[0])


def test_an_opened_image_pickles_and_reads_where_it_is_unpickled(tmp_path):
    import pickle

    gray = RNG.integers(0, 255, (64, 64), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", gray, tile=(32, 32))
    opened = pickle.loads(pickle.dumps(open_image(tmp_path / "a.tif")))
    assert np.array_equal(opened.read(slice(32, 64), slice(0, 32)), gray[32:, :32])


def test_a_slide_states_its_pixel_size_aperio_in_its_description_others_in_centimetre_resolution(tmp_path):
    rgb = RNG.integers(0, 255, (512, 384, 3), dtype=np.uint8)
    header = "Aperio Image Library v12.0.15\r\n384x512 [0,0 384x512] (256x256) JPEG/RGB Q=70"
    with tifffile.TiffWriter(tmp_path / "aperio.svs") as tif:  # Aperio's description, as scanners write it
        tif.write(rgb, photometric="rgb", tile=(256, 256), description=header + "|AppMag = 20|MPP = 0.4990")
        tif.write(rgb[::2, ::2], photometric="rgb", tile=(128, 128), subfiletype=1, description=header)
    assert open_image(tmp_path / "aperio.svs").pixel_size == pytest.approx(0.499)
    assert open_image(tmp_path / "aperio.svs", level=1).pixel_size == pytest.approx(0.998)
    tifffile.imwrite(
        tmp_path / "scanner.scn",
        rgb,
        photometric="rgb",
        resolution=(1e4 / 0.25, 1e4 / 0.25),
        resolutionunit="CENTIMETER",
    )
    assert open_image(tmp_path / "scanner.scn").pixel_size == pytest.approx(0.25)
    # a plain TIFF's resolution tags are not a statement: 72 dpi is many writers' default
    tifffile.imwrite(tmp_path / "plain.tif", rgb, photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    tifffile.imwrite(
        tmp_path / "plain_cm.tif",
        rgb,
        photometric="rgb",
        resolution=(1e4 / 0.25, 1e4 / 0.25),
        resolutionunit="CENTIMETER",
    )
    assert all(open_image(tmp_path / name).pixel_size is None for name in ("plain.tif", "plain_cm.tif"))

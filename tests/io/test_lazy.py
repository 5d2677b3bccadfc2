"""Tests of nucseg.io.lazy: OME-Zarr channel names and pixel size, TIFF-based slide files, and the
pyramid level of a labels shape."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
import zarr
from skimage.draw import disk

from nucseg.batch.driver import segment_files
from nucseg.batch.inputs import find_images
from nucseg.errors import InputError
from nucseg.io.images import read_image
from nucseg.io.lazy import image_pixel_size, open_image, open_level_of_shape


def _two_channel_ome_zarr(path, *, unit="micrometer"):
    """A CYX OME-Zarr (NGFF 0.4) whose omero metadata names its channels actin and DAPI, 0.5 um per pixel."""
    rng = np.random.default_rng(0)
    dapi = np.zeros((300, 300), np.uint16)
    for row, col in [(60, 60), (150, 200), (240, 90)]:
        dapi[disk((row, col), 18)] = 3000
    image = np.stack([rng.integers(0, 3000, dapi.shape, dtype=np.uint16), dapi])
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.attrs.update(
        {
            "multiscales": [
                {
                    "version": "0.4",
                    "axes": [
                        {"name": "c", "type": "channel"},
                        {"name": "y", "type": "space", "unit": unit},
                        {"name": "x", "type": "space", "unit": unit},
                    ],
                    "datasets": [
                        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.5, 0.5]}]}
                    ],
                }
            ],
            "omero": {"channels": [{"label": "actin"}, {"label": "DAPI"}]},
        }
    )
    group.create_array("0", shape=image.shape, chunks=(2, 128, 128), dtype=image.dtype)[:] = image
    return image


def test_ome_zarr_channels_are_chosen_by_name_and_its_pixel_size_is_read(tmp_path):
    image = _two_channel_ome_zarr(tmp_path / "cells.zarr")
    lazy = open_image(tmp_path / "cells.zarr", channel="DAPI")
    assert lazy.channel_names == ("actin", "DAPI") and lazy.channel_name == "DAPI"
    assert np.array_equal(lazy.read(slice(0, 300), slice(0, 300)), image[1])
    with pytest.raises(InputError, match="actin"):
        open_image(tmp_path / "cells.zarr", channel="GFP")
    assert image_pixel_size(tmp_path / "cells.zarr") == pytest.approx(0.5)
    _two_channel_ome_zarr(tmp_path / "pixels.zarr", unit="pixel")
    assert image_pixel_size(tmp_path / "pixels.zarr") is None


def test_an_ome_zarr_segments_on_its_named_channel_with_its_pixel_size(tmp_path):
    _two_channel_ome_zarr(tmp_path / "cells.zarr")
    report = segment_files(
        [tmp_path / "cells.zarr"],
        tmp_path / "out",
        model="classical",
        channel="DAPI",
        measure=True,
        block_size=256,
        margin=32,
    )
    assert report.images[0].status == "ok" and report.images[0].nuclei == 3
    assert report.images[0].pixel_size == pytest.approx(0.5)
    with open(tmp_path / "out" / "cells_nuclei.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(
        float(row["max_intensity_DAPI"]) == 3000 > float(row["max_intensity_actin"]) for row in rows
    )
    assert all(float(row["area_um2"]) == pytest.approx(np.pi * 18**2 * 0.25, rel=0.05) for row in rows)


def test_tiff_based_slide_files_are_read_at_full_resolution(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, (512, 384, 3), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "slide.svs") as tif:  # a pyramid: level 0, then half size
        tif.write(rgb, photometric="rgb", tile=(256, 256), subifds=1)
        tif.write(rgb[::2, ::2], photometric="rgb", tile=(128, 128), subfiletype=1)
    assert [image.name for image in find_images([tmp_path])] == ["slide"]
    assert np.array_equal(read_image(tmp_path / "slide.svs"), rgb)
    lazy = open_image(tmp_path / "slide.svs")
    assert lazy.shape == (512, 384) and np.array_equal(lazy.read(slice(100, 300), slice(0, 384)), rgb[100:300])


def test_the_level_of_a_labels_shape_is_found_by_headers_and_a_shape_no_level_has_is_refused(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 255, (512, 384, 3), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "slide.svs") as tif:
        tif.write(rgb, photometric="rgb", tile=(256, 256), subifds=1)
        tif.write(rgb[::2, ::2], photometric="rgb", tile=(128, 128), subfiletype=1)
    assert np.array_equal(open_level_of_shape(tmp_path / "slide.svs", (512, 384)).read(), rgb)
    assert np.array_equal(open_level_of_shape(tmp_path / "slide.svs", (256, 192, 3)).read(), rgb[::2, ::2])
    with pytest.raises(InputError, match=r"slide.svs: has no resolution level of 128 x 96 pixels"):
        open_level_of_shape(tmp_path / "slide.svs", (128, 96))
    Image.fromarray(rgb).save(tmp_path / "plain.png")  # no pyramid: one level
    assert open_level_of_shape(tmp_path / "plain.png", (512, 384)).shape == (512, 384)
    with pytest.raises(InputError, match=r"plain.png: has no resolution level of 256 x 192 pixels"):
        open_level_of_shape(tmp_path / "plain.png", (256, 192))
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 not a tiff")
    with pytest.raises(InputError, match="broken.tif") as refused:
        open_level_of_shape(tmp_path / "broken.tif", (512, 384))
    assert "resolution level" not in str(refused.value)  # a file that cannot be opened says so

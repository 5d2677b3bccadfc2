"""Tests of nucseg.io.ngff: OME-Zarr written as OME-NGFF 0.4 (checked by ome-zarr-models), and its metadata read."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from ome_zarr_models.v04 import Image, ImageLabel

from nucseg.io.ngff import create_ngff, ngff_metadata, NgffImage, pyramid_factors, write_region


def test_a_written_image_with_labels_is_valid_ngff_and_holds_every_level(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (2, 2500, 1100), dtype=np.uint16)
    labels = np.zeros((2500, 1100), np.uint32)
    labels[100:300, 50:90] = 7
    layout = NgffImage("cyx", image.shape, image.dtype, 0.25, ("DAPI", "GFP"))
    factors = create_ngff(tmp_path / "x.ome.zarr", layout, labels_dtype=np.uint32, name="x", block_size=512)
    assert factors == pyramid_factors(2500, 1100) == [1, 2, 4]
    for top in range(0, 2500, 512):  # block by block, as the block-wise path writes it
        for left in range(0, 1100, 512):
            rows, cols = slice(top, min(top + 512, 2500)), slice(left, min(left + 512, 1100))
            write_region(
                tmp_path / "x.ome.zarr", factors, rows, cols, image=image[:, rows, cols], labels=labels[rows, cols]
            )
    group = zarr.open_group(str(tmp_path / "x.ome.zarr"), mode="r")
    Image.from_zarr(group)
    ImageLabel.from_zarr(group["labels/nuclei"])
    assert all(
        np.array_equal(group[f"labels/nuclei/{level}"][:], labels[::f, ::f])
        and np.array_equal(group[str(level)][:], image[:, ::f, ::f])
        for level, f in enumerate(factors)
    )
    metadata = ngff_metadata(dict(group.attrs))
    assert metadata.channel_names == ("DAPI", "GFP") and metadata.pixel_size == pytest.approx(0.25)


def test_metadata_of_ngff_0_5_and_units():
    multiscale = {
        "axes": [
            {"name": "c", "type": "channel"},
            {"name": "y", "type": "space", "unit": "nanometer"},
            {"name": "x", "type": "space", "unit": "nanometer"},
        ],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 65, 65]}]}],
        "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 2]}],
    }
    attributes = {
        "ome": {
            "version": "0.5",
            "multiscales": [multiscale],
            "omero": {"channels": [{"label": "Hoechst"}, {"label": "actin"}]},
        }
    }
    metadata = ngff_metadata(attributes)
    assert metadata.channel_names == ("Hoechst", "actin") and metadata.pixel_size == pytest.approx(0.13)
    multiscale["axes"][2].pop("unit")  # no unit: not a length anyone can use
    assert ngff_metadata(attributes).pixel_size is None

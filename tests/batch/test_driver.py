"""Tests of nucseg.batch.driver: each image file is opened once for what it holds."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.draw import disk

from nucseg.batch.driver import segment_files


def _nuclei(shape=(128, 160)):
    image = np.full(shape, 200, np.uint16)
    for row, col in [(30, 30), (60, 110), (100, 50)]:
        image[disk((row, col), 12, shape=shape)] = 3000
    return image


def _counting(monkeypatch, owner, name):
    """Count the calls of ``owner.name`` (a file open) while segmenting."""
    calls = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_tiff_is_opened_once_for_its_metadata_and_once_for_its_pixels(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "cells.tif", _nuclei(), imagej=True, resolution=(2.0, 2.0), metadata={"unit": "micron"})
    opens = _counting(monkeypatch, tifffile.TiffFile, "__init__")
    report = segment_files([tmp_path / "cells.tif"], tmp_path / "out", model="classical", measure=True, overlay=True)
    assert report.images[0].status == "ok" and report.images[0].nuclei == 3
    assert report.images[0].pixel_size == pytest.approx(0.5)  # from the file
    # the plan opens it (shape, planes, channels, pixel size), the run decodes its pixels; nothing else reads it
    assert len(opens) == 2


def test_a_png_is_opened_once_for_its_header_and_once_for_its_pixels(tmp_path, monkeypatch):
    Image.fromarray((_nuclei() // 16).astype(np.uint8)).save(tmp_path / "cells.png")
    opens = _counting(monkeypatch, Image, "open")
    report = segment_files([tmp_path / "cells.png"], tmp_path / "out", model="classical", measure=True)
    assert report.images[0].status == "ok" and report.images[0].nuclei == 3
    assert len([args for args in opens if str(args[0]).endswith("cells.png")]) == 2

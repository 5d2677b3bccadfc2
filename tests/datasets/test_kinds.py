"""Image kinds from the pixels; fluorescence composites told from H&E and brightfield, and refused without a channel."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from nucseg.cli import main
from nucseg.datasets.kinds import composite_evidence, image_kind
from nucseg.datasets.locations import sample_image_paths
from nucseg.inference.base import CompositeImageError
from nucseg.inference.model import load_model
from nucseg.io.images import read_image, read_labels


def _filaments_around(nuclei: np.ndarray, *, seed: int) -> np.ndarray:
    """A mitochondria-like channel: thin ridges of smooth noise in a ring around the bright nuclei, uint8."""
    rng = np.random.default_rng(seed)
    ring = (ndi.distance_transform_edt(nuclei < 40) <= 18) & (nuclei < 40)
    noise = ndi.gaussian_filter(rng.standard_normal(nuclei.shape), 2)
    ridges = np.abs(noise / noise.std()) < 0.25
    return (ndi.gaussian_filter((ring & ridges).astype(np.float32), 0.8) * 400).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def hela_like(dsb_samples):
    """As Fiji's hela-cells_rgb.tif: 8-bit RGB, nuclei (a real DSB2018 fluorescence fixture) in blue,
    mitochondria-like filaments in red and green."""
    nuclei = np.ascontiguousarray(dsb_samples["0280fa8f"].image[..., 0])
    return np.dstack([_filaments_around(nuclei, seed=1), _filaments_around(nuclei, seed=2), nuclei])


def test_a_fluorescence_merge_is_a_composite_and_its_blue_channel_looks_nuclear(hela_like):
    evidence = composite_evidence(hela_like)
    assert evidence.composite and evidence.nuclear_channel == 2
    assert evidence.background < 0.1 and evidence.correlation < 0.5


def test_h_and_e_brightfield_and_gray_fluorescence_are_not_composites(dsb_samples):
    samples = {path.stem.split("_")[0]: read_image(path) for path in sample_image_paths()}
    evidence = composite_evidence(samples["histology"])
    assert evidence is not None and not evidence.composite and evidence.background > 0.4
    # the brightfield sample and gray fluorescence are gray stored as colour: three equal channels, no composite
    gray = dsb_samples["0280fa8f"].image  # gray fluorescence stored as RGBA
    assert all(composite_evidence(image) is None for image in (samples["brightfield"], gray[..., :3]))
    tinted = gray[..., :3].copy()
    tinted[..., 0] = tinted[..., 0] // 2  # the same gray with a red cast: measured, and not a composite
    assert composite_evidence(tinted).composite is False
    blue_only = np.zeros(gray.shape[:2] + (3,), dtype=np.uint8)
    blue_only[..., 2] = gray[..., 0]
    assert composite_evidence(blue_only) is None and image_kind(samples["histology"]) == "histology"


def test_the_model_refuses_a_composite_without_a_channel_and_segments_the_channel_given(hela_like):
    model = load_model("classical")
    with pytest.raises(ValueError, match=r"fluorescence composite .* --channel N .* channel 3 \(blue\) looks the most"):
        model.segment(hela_like)
    assert np.array_equal(model.segment(hela_like, channel=3).labels, model.segment(hela_like[..., 2]).labels)


def test_the_command_line_names_the_file_and_the_channel_and_then_segments_it(tmp_path, hela_like, capsys):
    Image.fromarray(hela_like).save(tmp_path / "hela.png")
    out = tmp_path / "out"
    code = main(["segment", str(tmp_path / "hela.png"), "--out", str(out), "--model", "classical"])
    err = capsys.readouterr().err
    assert code == 1 and not (out / "hela_labels.tif").exists()
    line = next(line for line in err.splitlines() if "hela.png" in line)
    assert "fluorescence composite" in line and "--channel N" in line and "channel 3 (blue)" in line
    assert "Traceback" not in err and "ValueError" not in line
    assert (
        main(["segment", str(tmp_path / "hela.png"), "--out", str(out), "--model", "classical", "--channel", "3"]) == 0
    )
    labels = read_labels(out / "hela_labels.tif")
    expected = load_model("classical").segment(hela_like[..., 2]).labels
    assert labels.max() == expected.max() > 10
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["ok"]


def test_a_composite_is_refused_block_wise_too(tmp_path, hela_like):
    from nucseg.batch.blockwise import segment_large

    with pytest.raises(CompositeImageError, match="--channel N"):
        segment_large(
            np.tile(hela_like, (2, 2, 1)),
            tmp_path / "labels.tif",
            model=load_model("classical"),
            block_size=256,
            margin=32,
        )


def test_a_nearly_black_colour_image_is_no_composite():
    # An RGBA tile of a slide's empty margin, with a few bright pixels in two channels (found on a 640 px RGBA
    # sizing test: min() of no channel raised ValueError deep inside segment).
    image = np.zeros((640, 640, 4), np.uint8)
    image[..., 3] = 255
    image[10:12, 10:12, 0] = 200
    image[20:22, 20:22, 1] = 180
    assert composite_evidence(image) is None
    assert composite_evidence(np.zeros((64, 64, 3), np.uint8)) is None

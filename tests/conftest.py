"""Shared fixtures: the DSB2018 test samples and small model folders that need no training."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

DATA_DIR = Path(__file__).parent / "data"
DSB_DIR = DATA_DIR / "dsb2018"
UNET_OPTIONS = {"base_channels": 8, "depth": 4}


@pytest.fixture(scope="session")
def dsb_samples():
    """The 4 real DSB2018 test samples, by name prefix (first 8 characters of the id)."""
    from nucseg.datasets.layouts import load_dataset

    return {sample.name[:8]: sample for sample in load_dataset(DSB_DIR, cache_dir=False)}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A model folder holding a freshly initialized (untrained) default-architecture U-Net.

    Its output hardly depends on the input: use it where only the plumbing matters.
    """
    import torch

    from nucseg.models.folder import ModelConfig, save_model
    from nucseg.models.networks import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "random_unet"
    return save_model(build_model("unet", **UNET_OPTIONS), ModelConfig("unet", dict(UNET_OPTIONS)), path)


@pytest.fixture(scope="session")
def _active_unet(dsb_samples):
    import torch

    from nucseg.models.networks import build_model
    from nucseg.preprocess.normalize import prepare_image

    torch.manual_seed(0)
    network = build_model("unet", **UNET_OPTIONS)
    # Batch-norm statistics measured on real images (instead of the initial
    # 0 mean / unit variance) keep the activations at unit scale through the
    # depth of the network, so the random network's output varies strongly
    # and smoothly with the input.
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration passes
    network.train()
    with torch.no_grad():
        for key in ("091944f1", "00071198"):
            crop = prepare_image(dsb_samples[key].image)[:256, :256]
            network(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None])
        network.head.weight *= 4.0
        network.head.bias += torch.tensor([1.0, 0.0, -1.0])
    return network.eval()


@pytest.fixture
def active_unet(_active_unet):
    """A random default-architecture U-Net whose output varies strongly with the input (a fresh copy)."""
    return copy.deepcopy(_active_unet)


@pytest.fixture(scope="session")
def active_model_dir(tmp_path_factory, _active_unet) -> Path:
    """A model folder with :func:`active_unet`: it finds (meaningless) objects in every image."""
    from nucseg.models.folder import ModelConfig, save_model

    path = tmp_path_factory.mktemp("models") / "active_unet"
    return save_model(_active_unet, ModelConfig("unet", dict(UNET_OPTIONS), name="active"), path)


@pytest.fixture(scope="module")
def training_environment(tmp_path_factory):
    """For training tests: one CPU thread (the cores are shared; it is also faster here) and
    a decode cache shared by the test session."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NUCSEG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "nucseg-cache"))
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def png_claiming_size():
    """A writer of real 4 x 4 PNGs whose header (with a valid checksum) claims other dimensions.

    Called as ``png_claiming_size(path, width, height)``: the corrupt or
    decompression-bomb files that readers must refuse in one line.
    """
    import struct
    import zlib

    from PIL import Image

    def write(path: Path, width: int, height: int) -> Path:
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
        data = bytearray(path.read_bytes())
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        path.write_bytes(bytes(data))
        return path

    return write


@pytest.fixture
def pyramid_tiff():
    """A writer of two-level pyramidal OME-TIFFs, as a 40x scan stores one.

    Called as ``pyramid_tiff(path, image, pixel_size)``: ``image`` (H, W)
    twice the size at level 0, of ``pixel_size`` microns, and ``image``
    itself at level 1 (of twice that pixel size).
    """
    import tifffile

    def write(path: Path, image: np.ndarray, pixel_size: float) -> Path:
        full = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
        with tifffile.TiffWriter(path, ome=True) as tif:
            metadata = {"axes": "YX", "PhysicalSizeX": pixel_size, "PhysicalSizeY": pixel_size}
            tif.write(full, subifds=1, tile=(128, 128), metadata=metadata)
            tif.write(image, subfiletype=1, tile=(128, 128))
        return path

    return write

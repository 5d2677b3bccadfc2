"""Tests of nucseg.models.outputs: what output channels mean, the same in torch and in the ONNX graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nucseg.inference.runners import OnnxRunner, TorchRunner
from nucseg.models.networks import build_model
from nucseg.models.onnx import onnx_bytes
from nucseg.models.outputs import output_layout, output_maps, TARGETS


def test_every_target_has_a_layout():
    assert all(output_layout(name) is layout for name, layout in TARGETS.items())
    assert [output_layout(t).channels for t in ("binary", "three_class", "three_class_distance")] == [2, 3, 4]
    assert output_layout("three_class").split_at is None and output_layout("three_class_distance").split_at == 3
    with pytest.raises(ValueError, match="unknown target 'stars'"):
        output_layout("stars")


def test_output_maps_are_class_probabilities_then_sigmoid_maps():
    outputs = torch.randn(2, 4, 5, 6) * 5
    maps = output_maps(outputs, 3)
    assert torch.allclose(maps[:, :3].sum(dim=1), torch.ones(2, 5, 6))
    assert torch.allclose(maps[:, 3], torch.sigmoid(outputs[:, 3]))
    assert torch.allclose(output_maps(outputs, None), torch.softmax(outputs, dim=1))


def test_onnx_graph_and_torch_runner_give_the_same_distance_maps():
    torch.manual_seed(0)
    network = build_model("unet", out_channels=4, base_channels=4, depth=2).eval()
    batch = np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32)
    from_torch = TorchRunner(network, channels_last=False, classes=3)(batch)
    from_onnx = OnnxRunner(onnx_bytes(network, classes=3))(batch)
    assert from_torch.shape == (1, 4, 64, 96)
    assert np.abs(from_torch - from_onnx).max() < 1e-4
    assert np.allclose(from_onnx[:, :3].sum(axis=1), 1.0, atol=1e-5)
    # The fourth channel is a sigmoid, not a share of the softmax.
    assert not np.allclose(from_onnx.sum(axis=1), 1.0, atol=1e-3)

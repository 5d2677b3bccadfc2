"""Exporting a network to ONNX, with its output activations, so that the graph outputs probabilities and maps."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from nucseg.io.atomic import atomic_write
from nucseg.models import SIZE_DIVISOR
from nucseg.models.networks import eval_mode
from nucseg.models.outputs import output_maps


#: ONNX opset of :func:`export_onnx`.
ONNX_OPSET = 17


class WithOutputMaps(torch.nn.Module):
    """A network followed by :func:`nucseg.models.outputs.output_maps`."""

    def __init__(self, network: torch.nn.Module, classes: int | None):
        super().__init__()
        self.network = network
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return output_maps(self.network(x), self.classes)


def export_onnx(
    network: torch.nn.Module,
    path: str | Path,
    *,
    in_channels: int = 3,
    classes: int | None = None,
    overwrite: bool = True,
) -> Path:
    """Export a network to ONNX, with a softmax, so that the file outputs probabilities.

    The graph has one input ``image``, float32 ``(N, C_in, H, W)`` holding
    images normalized as in training (see
    :func:`nucseg.preprocess.normalize.prepare_image`), and one output
    ``probabilities``, float32 ``(N, C, H, W)``. N, H and W are dynamic; H and
    W must be multiples of :data:`nucseg.models.SIZE_DIVISOR`. Opset
    :data:`ONNX_OPSET`. The file is written atomically.

    Parameters
    ----------
    network
        A network from :mod:`nucseg.models.networks`.
    path
        Output ``.onnx`` file.
    in_channels
        Input channels of the network.
    classes
        Leading output channels that are classes (softmax); the others get a
        sigmoid (:func:`nucseg.models.outputs.output_maps`). None: all are classes.
    overwrite
        If False, refuse to replace an existing file (``FileExistsError``).
    """
    with atomic_write(path, overwrite=overwrite) as tmp:
        _export(network, tmp, in_channels=in_channels, classes=classes)
    return Path(path)


def onnx_bytes(network: torch.nn.Module, *, in_channels: int = 3, classes: int | None = None) -> bytes:
    """The ONNX graph of :func:`export_onnx`, serialized in memory."""
    buffer = io.BytesIO()
    _export(network, buffer, in_channels=in_channels, classes=classes)
    return buffer.getvalue()


def _export(
    network: torch.nn.Module, target: str | Path | io.BytesIO, *, in_channels: int, classes: int | None
) -> None:
    # torch >= 2.9 defaults to the torch.export-based exporter, which needs the
    # onnxscript package; the TorchScript exporter needs nothing beyond torch
    # and handles these plain convolutional networks exactly.
    device = next(network.parameters()).device
    example = torch.zeros(1, in_channels, 2 * SIZE_DIVISOR, 2 * SIZE_DIVISOR, device=device)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), eval_mode(network), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            WithOutputMaps(network, classes),
            (example,),
            target if isinstance(target, io.BytesIO) else str(target),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_axes={"image": axes, "probabilities": axes},
        )

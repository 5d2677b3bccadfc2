"""Backends that run a network on a batch of tiles.

Both have one interface, :data:`Runner`: a float32 batch ``(N, C_in, h, w)``
of normalized tiles in, output maps ``(N, C, h, w)`` out: class probabilities, then
any distance map (:mod:`nucseg.models.outputs`).

:class:`OnnxRunner`
    ONNX Runtime (``CPUExecutionProvider``) on the model folder's ONNX graph
    (:func:`nucseg.models.onnx.export_onnx`); needs no torch.
:class:`TorchRunner`
    PyTorch, on the network's device, channels-last on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: A backend: float32 batch (N, C_in, h, w) -> float32 probabilities (N, C, h, w).
Runner = Callable[[np.ndarray], np.ndarray]


def default_threads() -> int:
    """CPU threads a runner uses by default: the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class TorchRunner:
    """Run a PyTorch network on batches of tiles.

    Parameters
    ----------
    network
        A network from :mod:`nucseg.models.networks`; it runs on the device of its
        parameters, in eval mode (its training flag is restored after each call).
    channels_last
        Run in channels-last memory format: the network's weights are
        converted in place, and inputs are fed channels-last (False leaves
        the network as it is). Several times faster for these convolutional
        networks on CPU; results are the same up to float rounding. None: on
        CPU only.
    classes
        Leading output channels that are classes (softmax); the others get a
        sigmoid. None: all are classes.
    """

    def __init__(self, network: Any, *, channels_last: bool | None = None, classes: int | None = None):
        import torch

        self.network = network
        self.classes = classes
        self.device = next(network.parameters()).device
        if channels_last is None:
            channels_last = self.device.type == "cpu"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            network.to(memory_format=torch.channels_last)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        from nucseg.models.networks import eval_mode
        from nucseg.models.outputs import output_maps

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        x = x.contiguous(memory_format=self.memory_format)
        with torch.inference_mode(), eval_mode(self.network):
            probabilities = output_maps(self.network(x), self.classes)
        return probabilities.float().cpu().numpy()


class OnnxRunner:
    """Run an ONNX model (as written by :func:`nucseg.models.onnx.export_onnx`) with ONNX Runtime on CPU.

    Parameters
    ----------
    model
        Path of an ``.onnx`` file, or its serialized bytes.
    threads
        Intra-op threads; None: :func:`default_threads`.
    """

    def __init__(self, model: str | Path | bytes, *, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        source = model if isinstance(model, bytes) else str(model)
        self.session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self.input_name: batch})[0]

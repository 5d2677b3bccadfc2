"""Backends that run a network on a batch of tiles.

Both have one interface, :data:`Runner`: a float32 batch ``(N, C_in, h, w)``
of normalized tiles in, output maps ``(N, C, h, w)`` out: class probabilities, then
any distance map (:mod:`nucseg.models.outputs`).

:class:`OnnxRunner`
    ONNX Runtime (``CPUExecutionProvider``) on the model folder's ONNX graph
    (:func:`nucseg.models.onnx.export_onnx`); needs no torch.
:class:`TorchRunner`
    PyTorch, on the network's device, channels-last on CPU.

:class:`ModelRunners` opens them for a model folder, one per backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.errors import ModelError, NucsegError
from nucseg.inference import BACKENDS
from nucseg.models.folder import INT8_ONNX_FILE, load_model_folder, ModelConfig, onnx_path

#: Backend used on CPU when none is named (the faster one in ``benchmarks/bench_inference.py``); the int8 graph
#: instead when the model folder holds one.
DEFAULT_CPU_BACKEND = "onnxruntime"

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


class ModelRunners:
    """The runners of a model folder's network, opened on first use and kept: one per backend and thread count.

    ONNX Runtime opens the folder's ONNX graph (``onnxruntime-int8``: its
    int8 graph, which it must hold); a folder without a float graph has its
    network exported in memory (needs torch; about a second).

    Parameters
    ----------
    path
        The model folder.
    config
        Its configuration.
    device
        Where the torch network runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``);
        ONNX Runtime always runs on CPU.
    """

    def __init__(self, path: Path, config: ModelConfig, device: str):
        self.path = path
        self.config = config
        self.device = device
        self._network = None
        self._runners: dict[tuple[str, int | None], Runner] = {}

    @property
    def network(self):
        """The torch network (``torch.nn.Module``) in eval mode on :attr:`device`, loaded on first use."""
        if self._network is None:
            network = load_model_folder(self.path).network
            try:
                network.to(self.device)
            except (RuntimeError, AssertionError) as exc:
                raise ModelError(self.path, f"cannot move the network to device {self.device!r} ({exc})") from None
            self._network = network
        return self._network

    @property
    def has_int8_graph(self) -> bool:
        """Whether the model folder holds an int8 ONNX graph (``network.int8.onnx``)."""
        return (self.path / INT8_ONNX_FILE).is_file()

    def default_backend(self) -> str:
        """``"torch"`` on a GPU; on CPU ``"onnxruntime-int8"`` when the folder holds an int8 graph, else
        :data:`DEFAULT_CPU_BACKEND`."""
        if self.device != "cpu":
            return "torch"
        return "onnxruntime-int8" if self.has_int8_graph else DEFAULT_CPU_BACKEND

    def runner(self, backend: str | None = None, *, threads: int | None = None) -> Runner:
        """The runner of ``backend`` (None: :meth:`default_backend`); ``threads``: ONNX Runtime's intra-op threads."""
        backend = backend or self.default_backend()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        key = (backend, None if backend == "torch" else threads)
        if key not in self._runners:
            if backend == "torch":
                self._runners[key] = TorchRunner(self.network, classes=self.config.classes)
            else:
                if self.device != "cpu":
                    raise ValueError(f"the {backend} backend runs on CPU; load the model with device='cpu'")
                try:
                    graph = onnx_path(self.path, int8=backend == "onnxruntime-int8")
                    if graph is None and backend == "onnxruntime-int8":
                        raise ModelError(
                            self.path,
                            f"has no int8 graph ({INT8_ONNX_FILE}) for the onnxruntime-int8 "
                            "backend; use --backend onnxruntime, or make one with "
                            "nucseg quantize",
                        )
                    if graph is None:
                        from nucseg.models.onnx import onnx_bytes

                        graph = onnx_bytes(
                            self.network, in_channels=self.config.in_channels, classes=self.config.classes
                        )
                    self._runners[key] = OnnxRunner(graph, threads=threads)
                except ImportError as exc:
                    raise NucsegError(
                        f"the onnxruntime backend needs the onnxruntime package ({exc}); "
                        "install it, or use the torch backend"
                    ) from None
        return self._runners[key]

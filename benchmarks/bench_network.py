"""The network pass alone: ONNX Runtime on a 1024 x 1024 input, shipped models side by side.

The issue's speed target for a network is a float pass (ONNX Runtime, 2
threads, 1024 x 1024, idle machine) of at most 0.4 s per megapixel. This
times exactly that, and the int8 graph where a model has one, for each
``--model``, interleaved round by round so that the drift of a shared machine
hits every model alike; the table gives the best round of each.

Usage::

    python benchmarks/bench_network.py [--model nuclei --model nuclei_unet] [--rounds 5] [--threads 2]

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort

from nucseg.models.folder import onnx_path
from nucseg.models.registry import resolve_model_path

SIZE = 1024


def _session(graph, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="registered name or model folder (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    models = args.model or ["nuclei", "nuclei_unet"]

    sessions = {}
    for name in models:
        folder = resolve_model_path(name)
        for graph_kind, int8 in (("float", False), ("int8", True)):
            graph = onnx_path(folder, int8=int8)
            if graph is not None:
                sessions[(name, graph_kind)] = _session(graph, args.threads)
    x = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in sessions}
    for session in sessions.values():  # warm-up: the first call allocates
        session.run(None, {session.get_inputs()[0].name: x})
    for _ in range(args.rounds):
        for key, session in sessions.items():
            started = time.perf_counter()
            session.run(None, {session.get_inputs()[0].name: x})
            times[key].append(time.perf_counter() - started)

    megapixels = SIZE * SIZE / 1e6
    print(
        f"ONNX Runtime {ort.__version__}, {args.threads} threads, {SIZE} x {SIZE} input, best of {args.rounds} "
        "interleaved rounds\n"
    )
    print("| model | graph | seconds | s per megapixel |")
    print("|---|---|---:|---:|")
    for (name, graph_kind), values in times.items():
        print(f"| {name} | {graph_kind} | {min(values):.3f} | {min(values) / megapixels:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

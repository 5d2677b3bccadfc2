"""Speed and memory of ``Model.segment`` on CPU, per backend.

For each backend (torch with channels-last tensors, torch with plain
contiguous tensors for comparison, ONNX Runtime) this times, on the shipped
brightfield sample image (1024 x 1024, tiled 2 x 2 into 2048 x 2048 by
default), the network part (normalization + tiled inference) and the
post-processing (watershed) separately, and reports seconds per megapixel.
Then, in a fresh subprocess per backend, it segments a 4096 x 4096 image
and reports the peak resident memory of that process. These rows run the
network once, at native resolution (``scale=1``). Last, it times the default
call, ``model.segment(image)`` with automatic sizing (``diameter="auto"``):
one pass when the nuclei are about the training size, two when the image
is resized (the second costs ``factor ** 2`` times the first).

The model is ``--model`` (a folder or registered name), else the shipped
default model; if that is not installed, an untrained network of the
shipped architecture (``unet``, base_channels 8, depth 5) is used and the
output says so: its speed is that of the trained model, but its
post-processing time is not representative (it finds no real nuclei).

Usage::

    nice python benchmarks/bench_inference.py [--model PATH] [--size 2048] [--repeat 3] \\
        [--tile-size 768] [--batch-size 1]

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def load_benchmark_model(name_or_path: str | None, work_dir: Path):
    """The model to time, and a note saying which one it is."""
    from nucseg.inference.model import load_model
    from nucseg.errors import ModelError

    if name_or_path is not None:
        model = load_model(name_or_path)
        return model, f"model {model.name} ({model.path})"
    try:
        model = load_model(None)
        return model, f"default model {model.name} ({model.path})"
    except ModelError as exc:
        from nucseg.models.folder import ModelConfig, save_model
        from nucseg.models.networks import build_model

        path = work_dir / "untrained_unet"
        save_model(
            build_model("unet", base_channels=8, depth=5), ModelConfig("unet", {"base_channels": 8, "depth": 5}), path
        )
        note = (
            f"UNTRAINED unet (base_channels 8, depth 5) because the default model is missing ({exc}); "
            "network times are representative, post-processing times are not"
        )
        return load_model(path), note


def test_image(size: int) -> np.ndarray:
    """The brightfield sample tiled (reflected) to ``size`` x ``size``."""
    from nucseg.datasets.locations import sample_image_paths
    from nucseg.io.images import read_image

    path = next(p for p in sample_image_paths() if p.name.startswith("brightfield"))
    image = read_image(path)
    reps = (-(-size // image.shape[0]), -(-size // image.shape[1])) + (1,) * (image.ndim - 2)
    tiled = np.tile(image, reps)
    return np.ascontiguousarray(tiled[:size, :size])


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_runners(model) -> dict:
    """label -> (backend name for the peak-memory run or None, runner factory), in run order.

    The contiguous run comes first: the channels-last runner converts the
    network's weights in place.
    """
    from nucseg.inference.runners import OnnxRunner, TorchRunner
    from nucseg.models.folder import onnx_path
    from nucseg.models.onnx import onnx_bytes

    network = model.network
    return {
        "torch, contiguous": (None, lambda: TorchRunner(network, channels_last=False)),
        "torch, channels-last": ("torch", lambda: TorchRunner(network, channels_last=True)),
        "onnxruntime": (
            "onnxruntime",
            lambda: OnnxRunner(onnx_path(model.path) or onnx_bytes(network, in_channels=model.config.in_channels)),
        ),
        **(
            {"onnxruntime, int8 graph": ("onnxruntime-int8", lambda: OnnxRunner(onnx_path(model.path, int8=True)))}
            if model.has_int8_graph
            else {}
        ),
    }


def time_runner(model, make_runner, image: np.ndarray, *, tile_size: int, batch_size: int, repeat: int) -> dict:
    """Setup, network (normalization + tiled inference) and post-processing seconds."""
    from nucseg.postprocess.watershed import instances_from_probabilities
    from nucseg.inference.tiling import predict_rescaled
    from nucseg.preprocess.normalize import prepare_image

    start = time.perf_counter()
    runner = make_runner()
    setup = time.perf_counter() - start

    def network():
        prepared = prepare_image(image, model.config.normalization)
        return predict_rescaled(
            runner, prepared, resize_to=model.config.resize_to, tile_size=tile_size, batch_size=batch_size
        )

    probabilities = network()  # warm-up
    network_seconds = best_time(network, repeat)
    post_seconds = best_time(lambda: instances_from_probabilities(probabilities, model.postprocess_config), repeat)
    return {"setup": setup, "network": network_seconds, "post": post_seconds}


def time_automatic_sizing(model, image: np.ndarray, *, tile_size: int, batch_size: int, repeat: int) -> dict:
    """Seconds of the default ``model.segment`` call (automatic sizing), and the factor it chose."""
    backend = model.default_backend()
    model.prepare(backend=backend)  # opening the backend is set-up, not segmenting time

    def segment():
        return model.segment(image, tile_size=tile_size, batch_size=batch_size)

    scale = segment().scale
    return {"backend": backend, "scale": scale, "seconds": best_time(segment, repeat)}


_PEAK_SCRIPT = """
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {bench_dir!r})
from bench_inference import test_image
from nucseg.inference.model import load_model
model = load_model({model!r})
image = test_image({size})
start = time.perf_counter()
labels = model.segment(image, backend={backend!r}, tile_size={tile_size}, batch_size={batch_size}, scale=1.0)
seconds = time.perf_counter() - start
print(json.dumps({{"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": seconds, "nuclei": int(labels.max())}}))
"""


def peak_memory(model_path: str, backend: str, size: int, tile_size: int, batch_size: int) -> dict:
    """Peak RSS (MB) and wall time of a fresh process segmenting a ``size`` x ``size`` image."""
    script = _PEAK_SCRIPT.format(
        bench_dir=str(Path(__file__).parent),
        model=model_path,
        size=size,
        backend=backend,
        tile_size=tile_size,
        batch_size=batch_size,
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    import torch

    from nucseg.inference.tiling import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or registered name (default: the shipped model)")
    parser.add_argument("--size", type=int, default=2048, help="side of the timed image in pixels")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="tiles per network call")
    parser.add_argument("--peak-size", type=int, default=4096, help="side of the image for the peak-memory run")
    parser.add_argument("--no-peak", action="store_true", help="skip the peak-memory subprocesses")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        model, note = load_benchmark_model(args.model, Path(work))
        image = test_image(args.size)
        megapixels = image.shape[0] * image.shape[1] / 1e6
        rows = []
        for label, (backend, make_runner) in make_runners(model).items():
            timing = time_runner(
                model, make_runner, image, tile_size=args.tile_size, batch_size=args.batch_size, repeat=args.repeat
            )
            peak = {}
            if backend is not None and not args.no_peak:
                peak = peak_memory(str(model.path), backend, args.peak_size, args.tile_size, args.batch_size)
            rows.append((label, timing, peak))
        auto = time_automatic_sizing(
            model, image, tile_size=args.tile_size, batch_size=args.batch_size, repeat=args.repeat
        )

        print(f"{note}")
        print(
            f"image: brightfield sample tiled to {image.shape[1]} x {image.shape[0]} ({megapixels:.2f} MP); "
            f"tile {args.tile_size}, overlap {DEFAULT_OVERLAP}, {args.batch_size} tile(s) per call; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"best of {args.repeat}; peak RSS of a fresh process segmenting {args.peak_size} x {args.peak_size}"
        )
        print()
        print(
            "| backend | network s/MP | post-processing s/MP | end to end s/MP | one-off setup s "
            f"| {args.peak_size}² peak RSS MB | {args.peak_size}² wall s |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, timing, peak in rows:
            net, post = timing["network"] / megapixels, timing["post"] / megapixels
            peak_mb = f"{peak['peak_mb']:.0f}" if peak else "-"
            wall = f"{peak['seconds']:.1f}" if peak else "-"
            print(
                f"| {label} | {net:.3f} | {post:.3f} | {net + post:.3f} | {timing['setup']:.2f} | {peak_mb} | {wall} |"
            )
        print()
        print(
            f"default call with automatic sizing ({auto['backend']}): resize factor {auto['scale']:.2f}, "
            f"{auto['seconds'] / megapixels:.3f} s/MP end to end"
        )


if __name__ == "__main__":
    main()

"""An int8 copy of a model folder's ONNX graph, for faster CPU inference.

Static quantization (ONNX Runtime's ``quantize_static``, QDQ format, weights
per output channel): weights become int8, and each activation gets a fixed
int8 range measured on calibration tiles, crops of normalized images as the
network sees them. The quantized graph is written beside the float graph as
``network.int8.onnx``, with its checksum and the checksum of the float graph
it was made from recorded in ``config.json``; the ``onnxruntime-int8`` backend
(:mod:`nucseg.inference.model`) runs it. Quantizing needs the ``onnx``
package (the ``train`` extra); running the result needs only ONNX Runtime.

How much accuracy it costs is measured, not assumed:
``benchmarks/eval_validation.py --backend onnxruntime-int8`` beside
``--backend onnxruntime`` on the model's validation split.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg.errors import ModelError, require
from nucseg.io.atomic import atomic_write
from nucseg.models import SIZE_DIVISOR
from nucseg.models.folder import (
    CONFIG_FILE,
    file_sha256,
    INT8_ONNX_FILE,
    onnx_path,
    read_model_config,
    record_checksums,
)
from nucseg.preprocess.normalize import NormalizationConfig, prepare_image

#: Side of the calibration crops, pixels (a multiple of the network's size divisor).
CALIBRATION_TILE = 256


@dataclass(frozen=True)
class QuantizedGraph:
    """What :func:`add_int8_graph` wrote.

    Attributes
    ----------
    path
        The int8 graph, ``<model>/network.int8.onnx``.
    float_bytes, int8_bytes
        Sizes of the float graph and of the int8 graph, bytes.
    calibration_tiles
        Number of crops the activation ranges were measured on.
    """

    path: Path
    float_bytes: int
    int8_bytes: int
    calibration_tiles: int


def calibration_tiles(
    images: Sequence[np.ndarray],
    normalization: NormalizationConfig,
    *,
    tile: int = CALIBRATION_TILE,
    per_image: int = 1,
    seed: int = 0,
) -> list[np.ndarray]:
    """Random crops of normalized images, as network input.

    Parameters
    ----------
    images
        Raw images, any layout :func:`nucseg.preprocess.normalize.prepare_image` takes.
    normalization
        The model's normalization.
    tile
        Crop side, pixels; images smaller than that are padded by reflection,
        and crops are rounded down to a multiple of the size divisor.
    per_image
        Crops drawn from each image.
    seed
        Seed of the crop positions.

    Returns
    -------
    list of ndarray
        float32 ``(1, C, tile, tile)`` batches.
    """
    tile = max(SIZE_DIVISOR, tile // SIZE_DIVISOR * SIZE_DIVISOR)
    rng = np.random.default_rng(seed)
    tiles = []
    for image in images:
        prepared = prepare_image(image, normalization)
        pad = [(0, max(0, tile - prepared.shape[0])), (0, max(0, tile - prepared.shape[1])), (0, 0)]
        prepared = np.pad(prepared, pad, mode="reflect") if any(p[1] for p in pad[:2]) else prepared
        for _ in range(per_image):
            y = int(rng.integers(0, prepared.shape[0] - tile + 1))
            x = int(rng.integers(0, prepared.shape[1] - tile + 1))
            crop = prepared[y : y + tile, x : x + tile]
            tiles.append(np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32))
    return tiles


def quantize_graph(float_graph: str | Path, out: str | Path, tiles: Sequence[np.ndarray]) -> Path:
    """Quantize an ONNX graph statically to int8 (QDQ, per-channel weights), calibrated on ``tiles``.

    Parameters
    ----------
    float_graph
        The float32 graph (input ``image``, as :func:`nucseg.models.onnx.export_onnx` writes it).
    out
        The int8 graph to write (atomically).
    tiles
        Calibration batches, float32 ``(N, C, h, w)``.
    """
    require("onnx", purpose="quantizing a model's ONNX graph")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not tiles:
        raise ValueError("quantize_graph needs at least one calibration tile")

    class Tiles(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(tiles)

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"image": batch}

    with tempfile.TemporaryDirectory(prefix="nucseg-quantize-") as work:
        # Shape inference first, as ONNX Runtime advises for static quantization; the symbolic pass fails on
        # these dynamic-size graphs and is not needed for convolutions.
        inferred = Path(work) / "inferred.onnx"
        quant_pre_process(str(float_graph), str(inferred), skip_symbolic_shape=True)
        with atomic_write(out) as tmp:
            quantize_static(
                str(inferred),
                str(tmp),
                Tiles(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    return Path(out)


def add_int8_graph(
    model_dir: str | Path, images: Sequence[np.ndarray], *, per_image: int = 1, seed: int = 0
) -> QuantizedGraph:
    """Write ``network.int8.onnx`` into a model folder, calibrated on ``images``, and record its checksums.

    Parameters
    ----------
    model_dir
        A model folder with its float ONNX graph.
    images
        Raw calibration images: the model's training images (never its test images).
    per_image, seed
        As for :func:`calibration_tiles`.

    Raises
    ------
    ModelError
        The folder has no float graph, or one that does not match its checksum.
    """
    model_dir = Path(model_dir)
    config, _ = read_model_config(model_dir)
    graph = onnx_path(model_dir)
    if graph is None:
        raise ModelError(model_dir, "has no network.onnx to quantize (run it once with torch installed, or re-save it)")
    tiles = calibration_tiles(images, config.normalization, per_image=per_image, seed=seed)
    quantize_graph(graph, model_dir / INT8_ONNX_FILE, tiles)
    # onnx_path has just checked the float graph against its recorded checksum: that is the source.
    source = json.loads((model_dir / CONFIG_FILE).read_text())["onnx_sha256"]
    record_checksums(
        model_dir, onnx_int8_sha256=file_sha256(model_dir / INT8_ONNX_FILE), onnx_int8_source_sha256=source
    )
    return QuantizedGraph(
        model_dir / INT8_ONNX_FILE, graph.stat().st_size, (model_dir / INT8_ONNX_FILE).stat().st_size, len(tiles)
    )

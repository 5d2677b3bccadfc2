"""Copy a trained model folder into the package as a shipped model.

    python tools/package_default_model.py runs/lite0/model --name nuclei --half-weights
    python tools/package_default_model.py runs/dsb2018/model --name dsb2018 --data ../shared/data/dsb2018/stage1_train

Names the model and records the median nucleus diameter of its training
images when the folder lacks it (models trained before nucseg recorded it;
``--data`` is then the dataset it was trained on). The weights are copied byte for byte; their checksum is kept and
verified; with ``--half-weights`` they are stored as float16 instead (half the
bytes; the ONNX graphs keep the float32 weights and are what nucseg runs on CPU,
and torch casts the float16 tensors back to float32 on loading). Afterwards run
``nucseg tune --model src/nucseg/data/models/dsb2018
--data DATA --split-from-model`` to tune the post-processing thresholds.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil

from nucseg.models.registry import package_models_dir
from nucseg.datasets.layouts import load_dataset
from nucseg.io.atomic import atomic_directory
from nucseg.postprocess.measure import median_nucleus_diameter
from nucseg.models.folder import (
    FORMAT_NAME,
    WEIGHTS_FILE,
    add_onnx_graph,
    file_sha256,
    load_model_folder,
    onnx_path,
    read_model_config,
    record_checksums,
    rewrite_model_config,
)

from nucseg.models.registry import REGISTERED_MODELS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="trained model folder, e.g. runs/dsb2018/model")
    parser.add_argument(
        "--name",
        required=True,
        choices=[n for n in REGISTERED_MODELS if n != "classical"],
        help="the shipped model it becomes",
    )
    parser.add_argument(
        "--data",
        help="the dataset the model was trained on (only for a folder that records no median nucleus diameter)",
    )
    parser.add_argument(
        "--half-weights",
        action="store_true",
        help="store weights.safetensors as float16 (the ONNX graphs keep float32)",
    )
    args = parser.parse_args(argv)

    config, _ = read_model_config(args.model)
    if config.median_diameter is None:
        if args.data is None:
            parser.error("the model records no median nucleus diameter: give --data, the dataset it was trained on")
        train_samples = load_dataset(args.data, names=config.split["train"])
        config = dataclasses.replace(config, median_diameter=median_nucleus_diameter([s.labels for s in train_samples]))
    config = dataclasses.replace(config, name=args.name)

    target = package_models_dir() / args.name
    with atomic_directory(target) as staging:
        shutil.copytree(args.model, staging, dirs_exist_ok=True)
        rewrite_model_config(staging, config)
        if args.half_weights:
            _store_half_weights(staging)
        if onnx_path(staging) is None:  # a folder written before model folders carried their ONNX graph
            add_onnx_graph(staging)
        load_model_folder(staging)  # verifies checksum and architecture before it replaces anything
    print(f"packaged {args.model} as {target} (median nucleus diameter {config.median_diameter:.1f} px)")
    return 0


def _store_half_weights(folder) -> None:
    """Rewrite the folder's float32 weights as float16 and record their new checksum."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = folder / WEIGHTS_FILE
    state = load_file(str(weights))
    half = {name: tensor.half() if tensor.dtype == torch.float32 else tensor for name, tensor in state.items()}
    save_file(half, str(weights), metadata={"format": FORMAT_NAME})
    record_checksums(folder, weights_sha256=file_sha256(weights))


if __name__ == "__main__":
    raise SystemExit(main())

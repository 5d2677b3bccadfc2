"""``nucseg train``, ``tune``, ``quantize``, ``export`` and ``pack``: make, adjust and ship models."""

from __future__ import annotations

import argparse
import sys

from nucseg.cli.common import EXIT_OK
from nucseg.errors import NucsegError, require
from nucseg.evaluation import MIN_KIND_IMAGES
from nucseg.postprocess import SIZE_FRAMES

# -------------------------------------------------------------------------- train


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="training dataset folder (DSB2018 or paired layout)")
    parser.add_argument("--images", help="folder of training images (paired layout; needs --masks)")
    parser.add_argument("--masks", help="folder of masks matched to --images by file name")
    parser.add_argument("--val-data", help="explicit validation dataset (default: a seeded split of --data)")
    run = parser.add_mutually_exclusive_group(required=True)
    run.add_argument("--out", help="new run folder, e.g. runs/NAME (the model is saved in runs/NAME/model)")
    run.add_argument("--resume", metavar="RUN", help="continue the killed or stopped run in this folder")
    parser.add_argument("--config", help="YAML or JSON file of TrainConfig settings")
    parser.add_argument("--preset", help="named starting configuration: 'default' or 'seed' (the seed notebook)")
    settings = parser.add_argument_group("settings (override --preset and --config)")
    settings.add_argument("--model", help="network: unet, mobilenetv2_unet or efficientnet_lite0_unet")
    settings.add_argument(
        "--encoder-weights",
        choices=["imagenet", "none"],
        help="encoder start of mobilenetv2_unet, efficientnet_lite0_unet: ImageNet weights or random",
    )
    settings.add_argument(
        "--target",
        choices=["three_class", "three_class_distance", "binary"],
        help="training target (three_class_distance adds a distance map that seeds the watershed)",
    )
    settings.add_argument("--epochs", type=int, help="maximum number of epochs")
    settings.add_argument("--batch-size", type=int, help="crops per optimisation step")
    settings.add_argument("--crop-size", type=int, help="side of the square training crops (multiple of 32)")
    settings.add_argument("--resize-to", type=int, help="resize every image to this square size instead of cropping")
    settings.add_argument("--lr", type=float, help="learning rate")
    settings.add_argument("--samples-per-epoch", type=int, help="random crops per epoch (default: one per image)")
    settings.add_argument("--val-fraction", type=float, help="fraction of images held out for validation")
    settings.add_argument("--seed", type=int, help="seed of the split, initialization and augmentation")
    settings.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    settings.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train")
    settings.add_argument(
        "--init-from",
        metavar="MODEL",
        help="fine-tune: start from this model's weights (a model folder, or a shipped model: 'nuclei', 'dsb2018')",
    )
    settings.add_argument(
        "--time-limit", type=float, dest="time_limit_minutes", help="stop after the epoch that passes this many minutes"
    )


#: Settings that ``--resume`` may change: they lengthen a run without changing what it trains.
RESUME_EXTENSIONS = ("epochs", "time_limit_minutes")


def run_train(args: argparse.Namespace) -> int:
    require("torch", "torchvision", "tensorboard", "safetensors", "yaml", "onnx", purpose="nucseg train")
    from nucseg.training.config import resolve_config
    from nucseg.training.loop import train

    if (args.images is None) != (args.masks is None):
        raise NucsegError("--images and --masks go together")
    # encoder_weights stays the string "none" here (None would mean "flag not given"); TrainConfig maps it to None.
    overrides = {
        key: getattr(args, key)
        for key in (
            "model",
            "encoder_weights",
            "target",
            "epochs",
            "batch_size",
            "crop_size",
            "resize_to",
            "lr",
            "samples_per_epoch",
            "val_fraction",
            "seed",
            "num_workers",
            "device",
            "init_from",
            "time_limit_minutes",
        )
    }
    if args.resume:
        # A resumed run keeps its settings; only its length can grow.
        extend = {key: overrides.pop(key) for key in RESUME_EXTENSIONS if overrides[key] is not None}
        flag_of = {"time_limit_minutes": "--time-limit"}
        given = [
            flag_of.get(key, "--" + key.replace("_", "-")) for key, value in overrides.items() if value is not None
        ]
        given += [flag for flag, value in (("--config", args.config), ("--preset", args.preset)) if value]
        if given:
            raise NucsegError(
                f"--resume continues a run with its saved settings (only --epochs and --time-limit "
                f"may extend it); drop {', '.join(given)}"
            )
        config = None
    else:
        config = resolve_config(preset=args.preset, config_file=args.config, overrides=overrides)
        given_data = args.data is not None or args.images is not None
        if config.datasets and (given_data or args.val_data):
            raise NucsegError("the config lists its datasets (datasets:); drop --data/--images/--val-data")
        if not config.datasets and not given_data:
            raise NucsegError(
                "give the training data with --data DATASET or --images DIR --masks DIR "
                "(or a --config that lists datasets)"
            )
    result = train(
        config,
        args.resume or args.out,
        data=args.data,
        images_dir=args.images,
        masks_dir=args.masks,
        val_data=args.val_data,
        resume=bool(args.resume),
        extend=extend if args.resume else None,
    )
    print(
        f"best epoch {result.best_epoch} of {result.epochs_run}: "
        f"validation {config.monitor if config else 'metric'} {result.best_metric:.4f}; model in {result.model_dir}"
    )
    return EXIT_OK


# ------------------------------------------------------------------------- export


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", metavar="NAME_OR_PATH", help="model folder, or a shipped model ('nuclei', the default, or 'dsb2018')"
    )
    parser.add_argument(
        "--format",
        choices=["onnx", "bioimageio"],
        default="onnx",
        help="onnx: the network as one .onnx file (the default); bioimageio: a BioImage Model Zoo "
        "package (a folder, or a .zip)",
    )
    parser.add_argument(
        "--out", required=True, metavar="PATH", help="output file or folder, e.g. model.onnx, nuclei_bioimageio.zip"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run_export(args: argparse.Namespace) -> int:
    require("torch", "safetensors", "onnx", purpose="nucseg export")
    from pathlib import Path

    from nucseg.inference.model import load_model, NetworkModel
    from nucseg.io.atomic import OutputExistsError
    from nucseg.models.onnx import export_onnx, ONNX_OPSET

    if Path(args.out).exists() and not args.overwrite:
        raise OutputExistsError(args.out, "exists (use --overwrite to replace it)")
    if args.format == "bioimageio":
        return _export_bioimageio(args)
    model = load_model(args.model)
    if not isinstance(model, NetworkModel):
        raise NucsegError(f"model {model.name!r} has no network to export")
    path = export_onnx(
        model.network,
        args.out,
        in_channels=model.config.in_channels,
        classes=model.config.classes,
        overwrite=args.overwrite,
    )
    norm = model.config.normalization
    print(
        f"wrote {path}: ONNX opset {ONNX_OPSET}, input 'image' float32 (N, {model.config.in_channels}, H, W) "
        f"with H, W multiples of 32, each channel scaled so its {norm.low_percentile:g} and "
        f"{norm.high_percentile:g} percentiles are 0 and 1; output 'probabilities' float32 "
        f"(N, {model.config.out_channels}, H, W)"
    )
    return EXIT_OK


def _export_bioimageio(args: argparse.Namespace) -> int:
    require("bioimageio.spec", purpose="nucseg export --format bioimageio")
    from nucseg.export.bioimageio import export_bioimageio, model_licence
    from nucseg.models.folder import read_model_config
    from nucseg.models.registry import DEFAULT_MODEL, resolve_model_path

    model_dir = resolve_model_path(args.model or DEFAULT_MODEL)
    path = export_bioimageio(model_dir, args.out, overwrite=args.overwrite)
    config, _ = read_model_config(model_dir)
    print(
        f"wrote {path}: bioimage.io model package (spec 0.5; TorchScript, PyTorch state dict and ONNX weights; "
        f"licence {model_licence(config)}); check it with: bioimageio test {path}"
    )
    return EXIT_OK


# --------------------------------------------------------------------------- tune


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, metavar="PATH", help="model folder; its config.json gets the best thresholds"
    )
    data = parser.add_mutually_exclusive_group()
    data.add_argument(
        "--data",
        metavar="DATASET",
        help="annotated validation dataset (DSB2018 or paired layout); "
        "not needed with --split-from-model for a model trained "
        "on several datasets",
    )
    data.add_argument("--images", metavar="DIR", help="folder of validation images (paired layout; needs --masks)")
    parser.add_argument("--masks", metavar="DIR", help="folder of masks matched to --images by file name")
    parser.add_argument(
        "--split-from-model",
        action="store_true",
        help="tune only on the validation images named in the model's config.json "
        "(split.validation): --data is then the dataset the model was trained on",
    )
    parser.add_argument(
        "--by-kind",
        action="store_true",
        help="also give each image kind (fluorescence, brightfield, histology) with at least "
        f"{MIN_KIND_IMAGES} tuning images its own settings, used for images of that kind; "
        "without it, one setting for every image",
    )
    parser.add_argument(
        "--size-frame",
        choices=SIZE_FRAMES,
        default=None,
        help="count the minimum nucleus and seed sizes in the image's pixels or at the scale the "
        "network ran at (automatic sizing's factor), so that one value fits small and large "
        "nuclei (default: as the model does)",
    )
    parser.add_argument("--dry-run", action="store_true", help="search and print the result; write nothing")


def run_tune(args: argparse.Namespace) -> int:
    from nucseg.errors import ModelError
    from nucseg.evaluation.report import load_tuning_samples
    from nucseg.evaluation.tuning import save_tuning, tune_postprocess
    from nucseg.inference.model import load_model, NetworkModel
    from nucseg.models.folder import read_model_config

    if (args.images is None) != (args.masks is None):
        raise NucsegError("--images and --masks go together")
    if args.data is None and args.images is None and not args.split_from_model:
        raise NucsegError("give the validation images with --data or --images/--masks (or --split-from-model)")
    model = load_model(args.model)
    if not isinstance(model, NetworkModel):
        raise ModelError(None, f"model {model.name!r} has no network, so no post-processing thresholds to tune")
    _, weights_sha256 = read_model_config(model.path)
    progress = sys.stderr.isatty()
    tuning = load_tuning_samples(
        model.path,
        args.data,
        images_dir=args.images,
        masks_dir=args.masks,
        split_from_model=args.split_from_model,
        progress=progress,
    )
    samples, data = tuning.samples, tuning.description
    training = set(model.config.split.get("train", []))
    seen = [s.name for s in samples if s.name in training]
    if seen:
        print(
            f"nucseg: warning: {len(seen)} of the {len(samples)} tuning images are training images of this "
            "model, so the thresholds fit them too well; use --split-from-model",
            file=sys.stderr,
        )
    result = tune_postprocess(
        model, samples, weights=tuning.weights, by_kind=args.by_kind, size_frame=args.size_frame, progress=progress
    )
    print(
        f"tuned on {data}: DSB2018 score {result.initial_score:.4f} -> {result.final_score:.4f} "
        f"({len(result.trials)} settings scored in {result.seconds:.0f} s)"
    )
    for name, (before, after) in result.changed.items():
        print(f"  {name}: {before} -> {after}")
    if not result.changed:
        print("  the model's settings are the best found")
    for kind, found in result.by_kind.items():
        changes = ", ".join(f"{name} {after}" for name, (_, after) in found.changed.items()) or "no change"
        print(
            f"  {kind} images ({found.n_images}): DSB2018 score {found.initial_score:.4f} -> {found.score:.4f} "
            f"with their own settings ({changes})"
        )
    if model.postprocess_by_kind and not result.by_kind:
        print(
            f"  the model's settings per image kind ({', '.join(model.postprocess_by_kind)}) give way to the one "
            "setting for every image (use --by-kind to tune them)"
        )
    if args.dry_run:
        print(f"{model.path / 'config.json'} not written (--dry-run)")
    else:
        print(f"wrote {save_tuning(model.path, result, data=data, expected_weights_sha256=weights_sha256)}")
    return EXIT_OK


# ----------------------------------------------------------------------- quantize


def add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="PATH",
        help="model folder; gets network.int8.onnx, which nucseg then runs on CPU by default",
    )
    parser.add_argument(
        "--data",
        metavar="DATASET",
        help="the dataset the model was trained on (not needed for a model trained on several "
        "datasets): calibration takes images of the model's training split, never its "
        "validation or test images",
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=64,
        metavar="N",
        help="calibration images, drawn by seed evenly from each training dataset (default 64)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw and of the crops")


def run_quantize(args: argparse.Namespace) -> int:
    require("onnx", purpose="nucseg quantize")
    from nucseg.evaluation.report import draw_names, load_validation_samples
    from nucseg.models.quantize import add_int8_graph

    chosen = draw_names(args.model, args.calibration_images, part="train", seed=args.seed)
    samples = load_validation_samples(args.model, args.data, part="train", names=chosen, progress=sys.stderr.isatty())
    written = add_int8_graph(args.model, [sample.image for sample in samples], seed=args.seed)
    print(
        f"wrote {written.path}: {written.float_bytes / 1e6:.1f} MB -> {written.int8_bytes / 1e6:.1f} MB, "
        f"calibrated on {written.calibration_tiles} crops of {len(samples)} training images; compare its "
        "accuracy on the validation split: python benchmarks/eval_validation.py --split-from MODEL "
        "--model int8=MODEL --backend onnxruntime-int8, and the same with --backend onnxruntime"
    )
    return EXIT_OK


def add_pack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "datasets",
        nargs="*",
        metavar="DATASET",
        help="annotated datasets: folders, or paths under the data root (dsb2018/stage1_train)",
    )
    parser.add_argument("--config", metavar="FILE", help="also the datasets a training config lists")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="the packed data root; train on it with NUCSEG_DATA_DIR=DIR"
    )
    parser.add_argument(
        "--jpeg-quality",
        type=int,
        metavar="Q",
        help="store 8-bit images as JPEG of quality Q (1-100): lossy, several times smaller; "
        "labels stay exact (default: every image exact)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace packed datasets that exist")


def run_pack(args: argparse.Namespace) -> int:
    from nucseg.datasets.pack import pack_datasets
    from nucseg.errors import InputError

    paths = list(args.datasets)
    if args.config:
        require("yaml", purpose="nucseg pack --config")
        from nucseg.training.config import load_config_file, TrainConfig

        try:
            paths += [entry["path"] for entry in TrainConfig.from_dict(load_config_file(args.config)).datasets]
        except ValueError as exc:
            raise InputError(args.config, str(exc)) from None
    if not paths:
        raise InputError(None, "name the datasets to pack, or a --config that lists them")
    packed = pack_datasets(
        paths, args.out, jpeg_quality=args.jpeg_quality, overwrite=args.overwrite, progress=sys.stderr.isatty()
    )
    for item in packed:
        lossy = f", {item.lossy_images} of them JPEG" if item.lossy_images else ""
        print(f"{item.folder}: {item.images} images{lossy}, {item.bytes / 1e6:.1f} MB (from {item.source})")
    print(f"{sum(item.bytes for item in packed) / 1e6:.1f} MB in all; train on it with NUCSEG_DATA_DIR={args.out}")
    return EXIT_OK

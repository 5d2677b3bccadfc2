"""Command line interface: ``nucseg <command> [options]``.

A thin layer over the library: each command parses its arguments, then calls
one API function. Heavy modules (torch, skimage) are imported inside the
``_run_*`` functions, after parsing, so that ``nucseg --help`` is instant.

Every :class:`nucseg.errors.NucsegError` is printed as one line
(``nucseg: error: <file>: <problem>``) with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence

from nucseg.errors import NucsegError, require
from nucseg.evaluation import MIN_KIND_IMAGES
from nucseg.inference import BACKENDS
from nucseg.inference.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from nucseg.models import SIZE_DIVISOR
from nucseg.postprocess import SIZE_FRAMES
from nucseg.scale.blocks import BLOCK_SIZE_MULTIPLE, DEFAULT_BLOCK_SIZE, DEFAULT_MARGIN, WHOLE_IMAGE_BYTES_PER_PIXEL

EXIT_OK = 0
EXIT_FAILURES = 1  # the command ran, but some inputs failed
EXIT_USAGE = 2  # bad input: nothing (or nothing more) could be done


# --------------------------------------------------------------------------- show


def _add_show_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("dataset", nargs="?", help="dataset folder (DSB2018 or paired layout)")
    source.add_argument("--images", help="folder of images (paired layout; needs --masks)")
    parser.add_argument("--masks", help="folder of masks matched to --images by file name")
    parser.add_argument("--n", type=int, default=8, help="number of samples to show (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for choosing samples")
    parser.add_argument("--out", required=True, help="output PNG file")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _run_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nucseg.datasets.layouts import load_dataset
    from nucseg.errors import InputError
    from nucseg.visualize import save_sample_grid

    if (args.images is None) != (args.masks is None):
        raise NucsegError("--images and --masks go together")
    if args.n < 1:
        raise NucsegError(f"--n must be at least 1, got {args.n}")
    if Path(args.out).exists() and not args.overwrite:  # checked before a possibly long load
        raise InputError(args.out, "exists (use --overwrite to replace it)")
    samples = load_dataset(args.dataset, images_dir=args.images, masks_dir=args.masks, progress=sys.stderr.isatty())
    path = save_sample_grid(samples, args.out, n=args.n, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {path} ({min(args.n, len(samples))} of {len(samples)} samples)")
    return EXIT_OK


# ----------------------------------------------------------------------- evaluate


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, metavar="DIR",
                        help="folder of predicted label images (<name>_labels.tif, <name>.tif or <name>.png)")
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument("--gt", metavar="DATASET", help="ground-truth dataset folder (DSB2018 or paired layout)")
    truth.add_argument("--images", metavar="DIR", help="ground-truth images folder (paired layout; needs --masks)")
    parser.add_argument("--masks", metavar="DIR", help="ground-truth masks folder matched to --images by name")
    parser.add_argument("--csv", metavar="FILE", help="write one row of scores per image to this CSV file")
    parser.add_argument("--json", metavar="FILE", help="write the dataset scores to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --csv / --json files")
    parser.add_argument("--by-kind", action="store_true",
                        help="also print the scores per image kind (fluorescence, brightfield, histology)")


def _run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nucseg.errors import InputError
    from nucseg.evaluation.folder import evaluate_folder, format_summary, write_csv, write_json

    if (args.images is None) != (args.masks is None):
        raise NucsegError("--images and --masks go together")
    for output in (args.csv, args.json):
        if output is not None and Path(output).exists() and not args.overwrite:
            raise InputError(output, "exists (use --overwrite to replace it)")
    report = evaluate_folder(args.pred, args.gt, images_dir=args.images, masks_dir=args.masks,
                             progress=sys.stderr.isatty())
    print(format_summary(report))
    if args.by_kind:
        from nucseg.evaluation.report import format_evaluation_by_kind

        print("\n" + format_evaluation_by_kind(report, args.gt, images_dir=args.images, masks_dir=args.masks))
    if args.csv:
        print(f"wrote {write_csv(report, args.csv)}")
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    return EXIT_OK


# -------------------------------------------------------------------------- train


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
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
    settings.add_argument("--encoder-weights", choices=["imagenet", "none"],
                          help="mobilenetv2_unet encoder start: ImageNet weights or random")
    settings.add_argument("--target", choices=["three_class", "three_class_distance", "binary"],
                          help="training target (three_class_distance adds a distance map that seeds the watershed)")
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
    settings.add_argument("--init-from", metavar="MODEL",
                          help="fine-tune: start from this model's weights (a model folder, or a shipped model: "
                               "'nuclei', 'dsb2018')")
    settings.add_argument("--time-limit", type=float, dest="time_limit_minutes",
                          help="stop after the epoch that passes this many minutes")


#: Settings that ``--resume`` may change: they lengthen a run without changing what it trains.
RESUME_EXTENSIONS = ("epochs", "time_limit_minutes")


def _run_train(args: argparse.Namespace) -> int:
    require("torch", "torchvision", "tensorboard", "safetensors", "yaml", "onnx", purpose="nucseg train")
    from nucseg.training.config import resolve_config
    from nucseg.training.loop import train

    if (args.images is None) != (args.masks is None):
        raise NucsegError("--images and --masks go together")
    # encoder_weights stays the string "none" here (None would mean "flag not given"); TrainConfig maps it to None.
    overrides = {key: getattr(args, key) for key in (
        "model", "encoder_weights", "target", "epochs", "batch_size", "crop_size", "resize_to", "lr",
        "samples_per_epoch", "val_fraction", "seed", "num_workers", "device", "init_from", "time_limit_minutes")}
    if args.resume:
        # A resumed run keeps its settings; only its length can grow.
        extend = {key: overrides.pop(key) for key in RESUME_EXTENSIONS if overrides[key] is not None}
        flag_of = {"time_limit_minutes": "--time-limit"}
        given = [flag_of.get(key, "--" + key.replace("_", "-")) for key, value in overrides.items()
                 if value is not None]
        given += [flag for flag, value in (("--config", args.config), ("--preset", args.preset)) if value]
        if given:
            raise NucsegError(f"--resume continues a run with its saved settings (only --epochs and --time-limit "
                              f"may extend it); drop {', '.join(given)}")
        config = None
    else:
        config = resolve_config(preset=args.preset, config_file=args.config, overrides=overrides)
        given_data = args.data is not None or args.images is not None
        if config.datasets and (given_data or args.val_data):
            raise NucsegError("the config lists its datasets (datasets:); drop --data/--images/--val-data")
        if not config.datasets and not given_data:
            raise NucsegError("give the training data with --data DATASET or --images DIR --masks DIR "
                              "(or a --config that lists datasets)")
    result = train(config, args.resume or args.out, data=args.data, images_dir=args.images, masks_dir=args.masks,
                   val_data=args.val_data, resume=bool(args.resume), extend=extend if args.resume else None)
    print(f"best epoch {result.best_epoch} of {result.epochs_run}: "
          f"validation {config.monitor if config else 'metric'} {result.best_metric:.4f}; model in {result.model_dir}")
    return EXIT_OK


# ------------------------------------------------------------------------ segment


def _add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files, folders (searched recursively) or DSB2018 datasets")
    parser.add_argument("--sample", action="store_true",
                        help="also segment the 3 sample images shipped with nucseg (fluorescence, histology, "
                             "brightfield)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: X_labels.tif per image X, and summary.csv")
    parser.add_argument("--model", metavar="NAME_OR_PATH",
                        help="model folder or package, or a shipped model: 'nuclei' (the default), 'dsb2018' "
                             "(DSB2018 data only) or 'classical'")
    parser.add_argument("--overlay", action="store_true", help="also write X_overlay.png: outlines on the image")
    parser.add_argument("--report", action="store_true",
                        help="also write report.html: a quality-control page of the batch (flagged images first)")
    parser.add_argument("--measure", action="store_true",
                        help="also write X_nuclei.csv: one row of measurements per nucleus")
    parser.add_argument("--pixel-size", type=float, metavar="UM",
                        help="microns per pixel (default: what an OME or ImageJ TIFF states): measurements in um and "
                             "um2 instead of pixels")
    parser.add_argument("--rle", metavar="FILE", help="also write a Kaggle DSB2018 submission CSV (run-length encoded)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average over 4 flips (4x slower, slightly smoother)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--scale", type=float, metavar="F",
                      help="resize images by F before the network instead of sizing them automatically: "
                           "below 1 for nuclei larger than in training, 1 for native resolution")
    size.add_argument("--diameter", type=_diameter, metavar="PX|UM",
                      help="typical nucleus diameter in pixels, or in microns as 8um (with the pixel size of "
                           "--pixel-size or of the file's metadata), which sets the scale from the model's training "
                           "diameter; or 'auto' (default for network models): a first pass measures the nuclei, "
                           "and an image whose nuclei are clearly larger or smaller than in training runs again, "
                           "resized to match")
    parser.add_argument("--tile-size", type=int, metavar="N",
                        help=f"tile side in pixels, a multiple of {SIZE_DIVISOR} (default {DEFAULT_TILE_SIZE}); "
                             "smaller needs less memory")
    parser.add_argument("--overlap", type=int, metavar="N",
                        help=f"overlap of neighbouring tiles in pixels (default {DEFAULT_OVERLAP})")
    parser.add_argument("--device", default="cpu", metavar="DEVICE",
                        help="where the network runs: 'cpu' (default; ONNX Runtime, no torch needed), 'cuda', 'cuda:N' "
                             "or 'auto' (a GPU if there is one; needs torch: pip install \"nucseg[train]\")")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="what runs the network (default on CPU: onnxruntime-int8 when the model holds an int8 "
                             "graph, as the default model nuclei does, else onnxruntime; torch on a GPU)")
    parser.add_argument("--channel", metavar="N_OR_NAME",
                        help="the channel that shows the nuclei, of multi-channel images: a number counted from 1 "
                             "(as in Fiji) or a channel name stored in the file (OME/ImageJ); required for "
                             "multi-channel microscopy images, which are never guessed")
    parser.add_argument("--stitch-threshold", type=float, metavar="IOU",
                        help="Z-stacks are segmented plane by plane; with this, nuclei of consecutive planes that "
                             "overlap by at least this IoU (e.g. 0.5) are linked into 3-D nuclei")
    parser.add_argument("--channel-axis", type=int, metavar="N",
                        help="channel axis of multi-channel TIFFs that do not declare it, e.g. 0 for (C, H, W)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (default: skip images whose outputs exist)")
    _add_scale_out_arguments(parser)


def _diameter(text: str) -> float | str:
    """``--diameter`` value: ``auto``, a number of pixels, or microns (``8um``; checked by the model)."""
    from nucseg.batch.whole import microns_of

    if text == "auto" or microns_of(text) is not None:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, microns such as 8um, or 'auto', "
                                         f"got {text!r}") from None


def _add_scale_out_arguments(parser: argparse.ArgumentParser) -> None:
    scale_out = parser.add_argument_group("scale-out (see docs/scale-out.md)")
    scale_out.add_argument("--dask", metavar="ADDRESS",
                           help="run on a Dask cluster: a scheduler address (tcp://host:8786), or 'local' / "
                                "'local:N' for N single-threaded worker processes on this machine")
    scale_out.add_argument("--blockwise", choices=["auto", "always", "never"], default="auto",
                           help="segment images block by block with bounded memory: 'auto' (default) for Zarr inputs "
                                "and images whose whole-image run would need more than --max-memory; the labels of "
                                "such an image are a tiled X_labels.tif; --measure measures it block by block, "
                                "--overlay draws an overview of it")
    scale_out.add_argument("--max-memory", type=float, metavar="GB",
                           help=f"memory budget of a whole-image run in GB (estimated at "
                                f"{WHOLE_IMAGE_BYTES_PER_PIXEL} bytes per pixel; default: a quarter of this machine's "
                                "memory); larger images go block-wise")
    scale_out.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, metavar="N",
                           help=f"side of the blocks in pixels, a multiple of {BLOCK_SIZE_MULTIPLE} "
                                "(default %(default)s)")
    scale_out.add_argument("--margin", type=int, default=DEFAULT_MARGIN, metavar="N",
                           help="context read around every block in pixels (default %(default)s); more than the "
                                "largest nucleus")
    scale_out.add_argument("--zarr", action="store_true",
                           help="write the labels of block-wise images as X_labels.zarr instead of X_labels.tif")


def _run_segment(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from nucseg.batch.driver import segment_files
    from nucseg.datasets.locations import sample_image_paths
    from nucseg.inference.model import load_model
    from nucseg.scale.dask import connect
    from nucseg.scale.executors import DaskExecutor

    inputs = list(args.inputs) + (sample_image_paths() if args.sample else [])
    if not inputs:
        raise NucsegError("give the images to segment (INPUT ...) or --sample")
    options = {key: getattr(args, key) for key in ("scale", "diameter", "tile_size", "overlap", "backend")
               if getattr(args, key) is not None}
    if args.tta:
        options["tta"] = True
    blockwise = {"auto": None, "always": True, "never": False}[args.blockwise]
    with connect(args.dask) if args.dask else nullcontext() as client:
        model = args.model if args.device == "cpu" else load_model(args.model, device=args.device)
        report = segment_files(inputs, args.out, model=model,
                               executor=None if client is None else DaskExecutor(client), overlay=args.overlay,
                               measure=args.measure, pixel_size=args.pixel_size, rle_path=args.rle,
                               overwrite=args.overwrite, channel_axis=args.channel_axis, channel=args.channel,
                               stitch_threshold=args.stitch_threshold,
                               progress=True, blockwise=blockwise, block_size=args.block_size,
                               margin=args.margin, zarr_labels=args.zarr,
                               max_memory=None if args.max_memory is None else args.max_memory * 2**30, **options)
    for image in report.images:
        if image.status == "failed":
            print(f"nucseg: failed: {image.error}", file=sys.stderr)
    if report.n_skipped:
        print(f"nucseg: skipped {report.n_skipped} image(s) whose outputs exist (use --overwrite to replace them)",
              file=sys.stderr)
    print(report.format_summary())
    if args.report:
        from nucseg.batch.qc_report import write_qc_report

        print(f"wrote {write_qc_report(args.out)}")
    return EXIT_FAILURES if report.n_failed else EXIT_OK


# ------------------------------------------------------------------------- report


def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the --out folder of a nucseg segment run")


def _run_report(args: argparse.Namespace) -> int:
    from nucseg.batch.qc_report import write_qc_report

    print(f"wrote {write_qc_report(args.out_dir)}")
    return EXIT_OK


# ------------------------------------------------------------------------- export


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="NAME_OR_PATH",
                        help="model folder, or a shipped model ('nuclei', the default, or 'dsb2018')")
    parser.add_argument("--format", choices=["onnx", "bioimageio"], default="onnx",
                        help="onnx: the network as one .onnx file (the default); bioimageio: a BioImage Model Zoo "
                             "package (a folder, or a .zip)")
    parser.add_argument("--out", required=True, metavar="PATH", help="output file or folder, e.g. model.onnx, "
                                                                     "nuclei_bioimageio.zip")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _run_export(args: argparse.Namespace) -> int:
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
    path = export_onnx(model.network, args.out, in_channels=model.config.in_channels, classes=model.config.classes,
                       overwrite=args.overwrite)
    norm = model.config.normalization
    print(f"wrote {path}: ONNX opset {ONNX_OPSET}, input 'image' float32 (N, {model.config.in_channels}, H, W) "
          f"with H, W multiples of 32, each channel scaled so its {norm.low_percentile:g} and "
          f"{norm.high_percentile:g} percentiles are 0 and 1; output 'probabilities' float32 "
          f"(N, {model.config.out_channels}, H, W)")
    return EXIT_OK


def _export_bioimageio(args: argparse.Namespace) -> int:
    require("bioimageio.spec", purpose="nucseg export --format bioimageio")
    from nucseg.export.bioimageio import export_bioimageio, model_licence
    from nucseg.models.folder import read_model_config
    from nucseg.models.registry import DEFAULT_MODEL, resolve_model_path

    model_dir = resolve_model_path(args.model or DEFAULT_MODEL)
    path = export_bioimageio(model_dir, args.out, overwrite=args.overwrite)
    config, _ = read_model_config(model_dir)
    print(f"wrote {path}: bioimage.io model package (spec 0.5; TorchScript, PyTorch state dict and ONNX weights; "
          f"licence {model_licence(config)}); check it with: bioimageio test {path}")
    return EXIT_OK


# --------------------------------------------------------------------------- tune


def _add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="model folder; its config.json gets the best thresholds")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="DATASET", help="annotated validation dataset (DSB2018 or paired layout); "
                                                        "not needed with --split-from-model for a model trained "
                                                        "on several datasets")
    data.add_argument("--images", metavar="DIR", help="folder of validation images (paired layout; needs --masks)")
    parser.add_argument("--masks", metavar="DIR", help="folder of masks matched to --images by file name")
    parser.add_argument("--split-from-model", action="store_true",
                        help="tune only on the validation images named in the model's config.json "
                             "(split.validation): --data is then the dataset the model was trained on")
    parser.add_argument("--by-kind", action="store_true",
                        help="also give each image kind (fluorescence, brightfield, histology) with at least "
                             f"{MIN_KIND_IMAGES} tuning images its own settings, used for images of that kind; "
                             "without it, one setting for every image")
    parser.add_argument("--size-frame", choices=SIZE_FRAMES, default=None,
                        help="count the minimum nucleus and seed sizes in the image's pixels or at the scale the "
                             "network ran at (automatic sizing's factor), so that one value fits small and large "
                             "nuclei (default: as the model does)")
    parser.add_argument("--dry-run", action="store_true", help="search and print the result; write nothing")


def _run_tune(args: argparse.Namespace) -> int:
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
    tuning = load_tuning_samples(model.path, args.data, images_dir=args.images, masks_dir=args.masks,
                                 split_from_model=args.split_from_model, progress=progress)
    samples, data = tuning.samples, tuning.description
    training = set(model.config.split.get("train", []))
    seen = [s.name for s in samples if s.name in training]
    if seen:
        print(f"nucseg: warning: {len(seen)} of the {len(samples)} tuning images are training images of this "
              "model, so the thresholds fit them too well; use --split-from-model", file=sys.stderr)
    result = tune_postprocess(model, samples, weights=tuning.weights, by_kind=args.by_kind,
                              size_frame=args.size_frame, progress=progress)
    print(f"tuned on {data}: DSB2018 score {result.initial_score:.4f} -> {result.final_score:.4f} "
          f"({len(result.trials)} settings scored in {result.seconds:.0f} s)")
    for name, (before, after) in result.changed.items():
        print(f"  {name}: {before} -> {after}")
    if not result.changed:
        print("  the model's settings are the best found")
    for kind, found in result.by_kind.items():
        changes = ", ".join(f"{name} {after}" for name, (_, after) in found.changed.items()) or "no change"
        print(f"  {kind} images ({found.n_images}): DSB2018 score {found.initial_score:.4f} -> {found.score:.4f} "
              f"with their own settings ({changes})")
    if model.postprocess_by_kind and not result.by_kind:
        print(f"  the model's settings per image kind ({', '.join(model.postprocess_by_kind)}) give way to the one "
              "setting for every image (use --by-kind to tune them)")
    if args.dry_run:
        print(f"{model.path / 'config.json'} not written (--dry-run)")
    else:
        print(f"wrote {save_tuning(model.path, result, data=data, expected_weights_sha256=weights_sha256)}")
    return EXIT_OK


# ----------------------------------------------------------------------- quantize


def _add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="model folder; gets network.int8.onnx, which nucseg then runs on CPU by default")
    parser.add_argument("--data", metavar="DATASET",
                        help="the dataset the model was trained on (not needed for a model trained on several "
                             "datasets): calibration takes images of the model's training split, never its "
                             "validation or test images")
    parser.add_argument("--calibration-images", type=int, default=64, metavar="N",
                        help="calibration images, drawn by seed evenly from each training dataset (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw and of the crops")


def _run_quantize(args: argparse.Namespace) -> int:
    require("onnx", purpose="nucseg quantize")
    from nucseg.evaluation.report import draw_names, load_validation_samples
    from nucseg.models.quantize import add_int8_graph

    chosen = draw_names(args.model, args.calibration_images, part="train", seed=args.seed)
    samples = load_validation_samples(args.model, args.data, part="train", names=chosen,
                                      progress=sys.stderr.isatty())
    written = add_int8_graph(args.model, [sample.image for sample in samples], seed=args.seed)
    print(f"wrote {written.path}: {written.float_bytes / 1e6:.1f} MB -> {written.int8_bytes / 1e6:.1f} MB, "
          f"calibrated on {written.calibration_tiles} crops of {len(samples)} training images; compare its "
          "accuracy on the validation split: python benchmarks/eval_validation.py --split-from MODEL "
          "--model int8=MODEL --backend onnxruntime-int8, and the same with --backend onnxruntime")
    return EXIT_OK


def _add_pack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datasets", nargs="*", metavar="DATASET",
                        help="annotated datasets: folders, or paths under the data root (dsb2018/stage1_train)")
    parser.add_argument("--config", metavar="FILE", help="also the datasets a training config lists")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the packed data root; train on it with NUCSEG_DATA_DIR=DIR")
    parser.add_argument("--jpeg-quality", type=int, metavar="Q",
                        help="store 8-bit images as JPEG of quality Q (1-100): lossy, several times smaller; "
                             "labels stay exact (default: every image exact)")
    parser.add_argument("--overwrite", action="store_true", help="replace packed datasets that exist")


def _run_pack(args: argparse.Namespace) -> int:
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
    packed = pack_datasets(paths, args.out, jpeg_quality=args.jpeg_quality, overwrite=args.overwrite,
                           progress=sys.stderr.isatty())
    for item in packed:
        lossy = f", {item.lossy_images} of them JPEG" if item.lossy_images else ""
        print(f"{item.folder}: {item.images} images{lossy}, {item.bytes / 1e6:.1f} MB (from {item.source})")
    print(f"{sum(item.bytes for item in packed) / 1e6:.1f} MB in all; train on it with NUCSEG_DATA_DIR={args.out}")
    return EXIT_OK


# ----------------------------------------------------------------------- commands

#: name -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "show": ("draw sample images with their nucleus outlines into one PNG", _add_show_arguments, _run_show),
    "report": ("write report.html, a quality-control page, for a segment output folder", _add_report_arguments,
               _run_report),
    "evaluate": ("score predicted label images against a ground-truth dataset (DSB2018 metric, AP, F1, PQ)",
                 _add_evaluate_arguments, _run_evaluate),
    "train": ("train a segmentation model on an annotated dataset", _add_train_arguments, _run_train),
    "segment": ("find the nuclei in images: label images, overlays, measurements",
                _add_segment_arguments, _run_segment),
    "export": ("export a model's network to ONNX", _add_export_arguments, _run_export),
    "tune": ("tune a model's post-processing thresholds on validation images (best DSB2018 score)",
             _add_tune_arguments, _run_tune),
    "quantize": ("add an int8 copy of a model's network, faster on CPU, calibrated on its training images",
                 _add_quantize_arguments, _run_quantize),
    "pack": ("copy annotated datasets compactly into one folder that travels (to a GPU machine)",
             _add_pack_arguments, _run_pack),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the ``nucseg`` argument parser with one subparser per command."""
    from nucseg.version import __version__

    parser = argparse.ArgumentParser(
        prog="nucseg", description="Find and outline every cell nucleus in microscopy images."
    )
    parser.add_argument("--version", action="version", version=f"nucseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Print every warning as ``nucseg: warning: <message>``, one line, as it happens.

    "always": a dataset warns once per sample from the same line of code, and
    each of those must be seen.
    """

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"nucseg: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nucseg`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _one_line_warnings():
            return args.run(args)
    except NucsegError as exc:
        print(f"nucseg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nucseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

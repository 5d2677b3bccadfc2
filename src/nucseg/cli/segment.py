"""``nucseg segment`` and ``nucseg report``: images to label images, overlays, measurements; the QC page."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from nucseg.cli.common import EXIT_FAILURES, EXIT_OK
from nucseg.errors import NucsegError
from nucseg.inference import BACKENDS
from nucseg.inference.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from nucseg.models import SIZE_DIVISOR
from nucseg.scale.blocks import BLOCK_SIZE_MULTIPLE, DEFAULT_BLOCK_SIZE, DEFAULT_MARGIN, WHOLE_IMAGE_BYTES_PER_PIXEL

if TYPE_CHECKING:
    from nucseg.inference.options import SegmentOptions

# ------------------------------------------------------------------------ segment


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="image files, folders (searched recursively) or DSB2018 datasets"
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help="also segment the 3 sample images shipped with nucseg (fluorescence, histology, brightfield)",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder: X_labels.tif per image X, and summary.csv"
    )
    parser.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        help="model folder or package, or a shipped model: 'nuclei' (the default), 'dsb2018' "
        "(DSB2018 data only) or 'classical'",
    )
    parser.add_argument("--overlay", action="store_true", help="also write X_overlay.png: outlines on the image")
    parser.add_argument(
        "--outline-width",
        type=int,
        default=1,
        metavar="PX",
        help="width of the overlay's outlines in pixels (default 1; each edged in black)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write report.html: a quality-control page of the batch (flagged images first)",
    )
    parser.add_argument(
        "--measure", action="store_true", help="also write X_nuclei.csv: one row of measurements per nucleus"
    )
    parser.add_argument(
        "--geojson",
        action="store_true",
        help="also write X_nuclei.geojson: every nucleus' outline (holes kept) with its measurements, "
        "as QuPath's File > Import objects reads it (detections)",
    )
    parser.add_argument(
        "--imagej-rois",
        action="store_true",
        help="also write X_rois.zip: every nucleus as an ImageJ ROI, for Fiji's ROI Manager",
    )
    parser.add_argument(
        "--ome-zarr",
        action="store_true",
        help="also write X.ome.zarr: the image with its nuclei as a labels/nuclei group (OME-NGFF "
        "0.4), for napari and other OME-Zarr viewers",
    )
    parser.add_argument(
        "--pixel-size",
        type=float,
        metavar="UM",
        help="microns per pixel (default: what an OME or ImageJ TIFF states): measurements in um and "
        "um2 instead of pixels",
    )
    parser.add_argument("--rle", metavar="FILE", help="also write a Kaggle DSB2018 submission CSV (run-length encoded)")
    parser.add_argument(
        "--tta", action="store_true", help="test-time augmentation: average over 4 flips (4x slower, slightly smoother)"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--scale",
        type=float,
        metavar="F",
        help="resize images by F before the network instead of sizing them automatically: "
        "below 1 for nuclei larger than in training, 1 for native resolution",
    )
    size.add_argument(
        "--diameter",
        type=_diameter,
        metavar="PX|UM",
        help="typical nucleus diameter in pixels, or in microns as 8um (with the pixel size of "
        "--pixel-size or of the file's metadata), which sets the scale from the model's training "
        "diameter; or 'auto' (default for network models): a first pass measures the nuclei, "
        "and an image whose nuclei are clearly larger or smaller than in training runs again, "
        "resized to match",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        metavar="N",
        help=f"tile side in pixels, a multiple of {SIZE_DIVISOR} (default {DEFAULT_TILE_SIZE}); "
        "smaller needs less memory",
    )
    parser.add_argument(
        "--overlap", type=int, metavar="N", help=f"overlap of neighbouring tiles in pixels (default {DEFAULT_OVERLAP})"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        metavar="DEVICE",
        help="where the network runs: 'cpu' (default; ONNX Runtime, no torch needed), 'cuda', 'cuda:N' "
        "or 'auto' (a GPU if there is one; needs torch: pip install \"nucseg[train]\")",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="what runs the network (default on CPU: onnxruntime-int8 when the model holds an int8 "
        "graph, as the default model nuclei does, else onnxruntime; torch on a GPU)",
    )
    parser.add_argument(
        "--channel",
        metavar="N_OR_NAME",
        help="the channel that shows the nuclei, of multi-channel images: a number counted from 1 "
        "(as in Fiji) or a channel name stored in the file (OME/ImageJ); required for "
        "multi-channel microscopy images, which are never guessed",
    )
    parser.add_argument(
        "--stitch-threshold",
        type=float,
        metavar="IOU",
        help="Z-stacks are segmented plane by plane; with this, nuclei of consecutive planes that "
        "overlap by at least this IoU (e.g. 0.5) are linked into 3-D nuclei",
    )
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument(
        "--channel-axis",
        type=int,
        metavar="N",
        help="channel axis of multi-channel TIFFs that do not declare it, e.g. 0 for (C, H, W)",
    )
    layout.add_argument(
        "--axes",
        metavar="LETTERS",
        help="the axes of files that do not declare them, StarDist's way: e.g. ZYX for a plain "
        "multi-page TIFF of Z planes (segmented plane by plane), CYX or YXC for channels, TYX "
        "for a time series; it never overrides axes a file declares",
    )
    parser.add_argument(
        "--level",
        type=int,
        metavar="N",
        help="resolution level of a pyramid (slide, pyramidal OME-TIFF, OME-Zarr): 0 full resolution "
        "(default), 1 the next, ...; labels, measurements and pixel sizes are of that level",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: skip images whose outputs exist)"
    )
    _add_scale_out_arguments(parser)


def _diameter(text: str) -> float | str:
    """``--diameter`` value: ``auto``, a number of pixels, or microns (``8um``; checked by the model)."""
    from nucseg.inference.options import microns_of

    if text == "auto" or microns_of(text) is not None:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of pixels, microns such as 8um, or 'auto', got {text!r}"
        ) from None


def _add_scale_out_arguments(parser: argparse.ArgumentParser) -> None:
    scale_out = parser.add_argument_group("scale-out (see docs/scale-out.md)")
    scale_out.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run on a Dask cluster: a scheduler address (tcp://host:8786), or 'local' / "
        "'local:N' for N single-threaded worker processes on this machine",
    )
    scale_out.add_argument(
        "--blockwise",
        choices=["auto", "always", "never"],
        default="auto",
        help="segment images block by block with bounded memory: 'auto' (default) for Zarr inputs "
        "and images whose whole-image run would need more than --max-memory; the labels of "
        "such an image are a tiled X_labels.tif; --measure measures it block by block, "
        "--overlay draws an overview of it",
    )
    scale_out.add_argument(
        "--max-memory",
        type=float,
        metavar="GB",
        help=f"memory budget of a whole-image run in GB (estimated at "
        f"{WHOLE_IMAGE_BYTES_PER_PIXEL} bytes per pixel; default: a quarter of this machine's "
        "memory); larger images go block-wise",
    )
    scale_out.add_argument(
        "--block-size",
        type=int,
        default=DEFAULT_BLOCK_SIZE,
        metavar="N",
        help=f"side of the blocks in pixels, a multiple of {BLOCK_SIZE_MULTIPLE} (default %(default)s)",
    )
    scale_out.add_argument(
        "--margin",
        type=int,
        default=DEFAULT_MARGIN,
        metavar="N",
        help="context read around every block in pixels (default %(default)s); more than the largest nucleus",
    )
    scale_out.add_argument(
        "--zarr",
        action="store_true",
        help="write the labels of block-wise images as X_labels.zarr instead of X_labels.tif",
    )


def segment_options(args: argparse.Namespace) -> SegmentOptions:
    """The :class:`~nucseg.inference.options.SegmentOptions` of ``nucseg segment``'s arguments (checked once, here)."""
    from nucseg.inference.options import SegmentOptions

    given = {
        key: getattr(args, key)
        for key in ("scale", "diameter", "tile_size", "overlap", "backend", "channel", "channel_axis", "axes", "level")
        if getattr(args, key) is not None
    }
    return SegmentOptions(tta=args.tta, **given)


def run_segment(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from nucseg.batch.driver import segment_files
    from nucseg.datasets.locations import sample_image_paths
    from nucseg.inference.model import load_model
    from nucseg.scale.dask import connect
    from nucseg.scale.executors import DaskExecutor

    inputs = list(args.inputs) + (sample_image_paths() if args.sample else [])
    if not inputs:
        raise NucsegError("give the images to segment (INPUT ...) or --sample")
    options = segment_options(args)
    blockwise = {"auto": None, "always": True, "never": False}[args.blockwise]
    with connect(args.dask) if args.dask else nullcontext() as client:
        model = args.model if args.device == "cpu" else load_model(args.model, device=args.device)
        report = segment_files(
            inputs,
            args.out,
            model=model,
            executor=None if client is None else DaskExecutor(client),
            overlay=args.overlay,
            outline_width=args.outline_width,
            measure=args.measure,
            pixel_size=args.pixel_size,
            rle_path=args.rle,
            outputs=[
                key
                for key, asked in (("geojson", args.geojson), ("rois", args.imagej_rois), ("ome_zarr", args.ome_zarr))
                if asked
            ],
            overwrite=args.overwrite,
            stitch_threshold=args.stitch_threshold,
            progress=True,
            blockwise=blockwise,
            block_size=args.block_size,
            margin=args.margin,
            zarr_labels=args.zarr,
            max_memory=None if args.max_memory is None else args.max_memory * 2**30,
            options=options,
        )
    for image in report.images:
        if image.status == "failed":
            print(f"nucseg: failed: {image.error}", file=sys.stderr)
    if report.n_skipped:
        print(
            f"nucseg: skipped {report.n_skipped} image(s) whose outputs exist (use --overwrite to replace them)",
            file=sys.stderr,
        )
    print(report.format_summary())
    if args.report:
        from nucseg.batch.qc_report import write_qc_report

        print(f"wrote {write_qc_report(args.out)}")
    return EXIT_FAILURES if report.n_failed else EXIT_OK


# ------------------------------------------------------------------------- report


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the --out folder of a nucseg segment run")


def run_report(args: argparse.Namespace) -> int:
    from nucseg.batch.qc_report import write_qc_report

    print(f"wrote {write_qc_report(args.out_dir)}")
    return EXIT_OK

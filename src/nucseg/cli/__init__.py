"""Command line interface: ``nucseg <command> [options]``.

A thin layer over the library: each command parses its arguments, then calls
one API function. Heavy modules (torch, skimage) are imported inside the
``run_*`` functions of the command modules (``segment``,
``evaluate``, ``training``), after parsing, so that ``nucseg --help`` is instant.

Every :class:`nucseg.errors.NucsegError` is printed as one line
(``nucseg: error: <file>: <problem>``) with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence

from nucseg.cli import evaluate, segment, training
from nucseg.cli.common import EXIT_OK, EXIT_FAILURES, EXIT_USAGE
from nucseg.errors import NucsegError

__all__ = ["EXIT_FAILURES", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

#: name -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "show": (
        "draw sample images with their nucleus outlines into one PNG",
        evaluate.add_show_arguments,
        evaluate.run_show,
    ),
    "report": (
        "write report.html, a quality-control page, for a segment output folder",
        segment.add_report_arguments,
        segment.run_report,
    ),
    "evaluate": (
        "score predicted label images against a ground-truth dataset (DSB2018 metric, AP, F1, PQ)",
        evaluate.add_evaluate_arguments,
        evaluate.run_evaluate,
    ),
    "train": ("train a segmentation model on an annotated dataset", training.add_train_arguments, training.run_train),
    "segment": (
        "find the nuclei in images: label images, overlays, measurements",
        segment.add_segment_arguments,
        segment.run_segment,
    ),
    "export": ("export a model's network to ONNX", training.add_export_arguments, training.run_export),
    "tune": (
        "tune a model's post-processing thresholds on validation images (best DSB2018 score)",
        training.add_tune_arguments,
        training.run_tune,
    ),
    "quantize": (
        "add an int8 copy of a model's network, faster on CPU, calibrated on its training images",
        training.add_quantize_arguments,
        training.run_quantize,
    ),
    "pack": (
        "copy annotated datasets compactly into one folder that travels (to a GPU machine)",
        training.add_pack_arguments,
        training.run_pack,
    ),
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

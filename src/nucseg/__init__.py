"""nucseg: find and outline every cell nucleus in microscopy images.

The subpackages are the stages of the pipeline, each depending only on the
ones before it: ``io`` -> ``preprocess`` -> ``datasets`` -> ``models`` ->
``postprocess`` -> ``inference`` -> ``evaluation`` / ``training`` ->
``scale`` -> ``batch`` -> ``cli``. See docs/architecture.md.
"""

from __future__ import annotations

from nucseg.errors import InputError, ModelError, NucsegError
from nucseg.version import __version__

__all__ = ["__version__", "InputError", "ModelError", "NucsegError", "SegmentOptions", "load_model", "segment_files"]


def __getattr__(name: str):
    # The entry points import their modules on first use only, so that ``import nucseg`` stays light.
    if name == "load_model":
        from nucseg.inference.model import load_model

        return load_model
    if name == "segment_files":
        from nucseg.batch.driver import segment_files

        return segment_files
    if name == "SegmentOptions":
        from nucseg.inference.options import SegmentOptions

        return SegmentOptions
    raise AttributeError(f"module 'nucseg' has no attribute {name!r}")

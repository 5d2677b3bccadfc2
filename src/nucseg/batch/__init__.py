"""Batches of image files: input discovery, one driver for whole and block-wise images, reports.

::

    from nucseg.batch.driver import segment_files
"""

from nucseg.batch.driver import segment_files

__all__ = ["segment_files"]

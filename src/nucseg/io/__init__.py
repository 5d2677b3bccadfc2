"""Reading and writing images: the one reader, the one set of axis rules, atomic writes.

The everyday readers and writers are importable from here::

    from nucseg.io.images import read_image, read_labels, write_labels
    from nucseg.io.opened import open_image  # shape, axes, channel names, pixel size; whole or by region
"""

from nucseg.io.images import read_image, read_labels, write_labels
from nucseg.io.opened import open_image

__all__ = ["open_image", "read_image", "read_labels", "write_labels"]

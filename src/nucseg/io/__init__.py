"""Reading and writing images: readers, the one set of axis rules, lazy large-image readers, atomic writes.

The everyday readers and writers are importable from here::

    from nucseg.io.images import read_image, read_labels, write_labels
"""

from nucseg.io.images import read_image, read_labels, write_labels

__all__ = ["read_image", "read_labels", "write_labels"]

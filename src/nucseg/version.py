"""The installed nucseg version (``nucseg.__version__``), readable without importing the package's entry points."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nucseg")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

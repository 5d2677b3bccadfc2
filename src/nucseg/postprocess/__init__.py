"""Network output to nuclei: marker-controlled watershed, and per-nucleus measurements.

This package's own namespace holds only constants that need no imports
(the command-line parser reads them).
"""

#: Values of :attr:`nucseg.postprocess.watershed.PostprocessConfig.size_frame`: where minimum sizes are counted.
SIZE_FRAMES = ("image", "network")

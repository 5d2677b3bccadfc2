"""Scores: metrics, folder evaluation, per-kind reports, post-processing threshold tuning.

This package's own namespace holds only constants that need no imports
(the command-line parser reads them).
"""

#: Per-kind tuning (:func:`nucseg.evaluation.tuning.tune_postprocess`) gives a kind its own settings only with
#: at least this many tuning images of it.
MIN_KIND_IMAGES = 8

"""Fitting and measuring the quality estimate of :mod:`nucseg.inference.quality` against real accuracy.

:func:`fit_calibration` fits the estimate's weights to per-image AP@0.5 of
annotated images (a model's validation images); :func:`quality_relation`
measures, on other images, how well the score ranks images by their accuracy
and how much worse the flagged ones are. ``benchmarks/calibrate_quality.py``
drives both and writes the calibration into a model folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nucseg.inference.quality import (
    assess,
    FLAG_CHECK,
    LIMIT_MARGIN,
    NOT_NUCLEI_FEATURES,
    QUALITY_FEATURES,
    QualityCalibration,
)

#: Images whose estimated AP@0.5 is below this are flagged ``check``.
DEFAULT_THRESHOLD = 0.5
#: Ridge penalty of the fit, on standardized features: few images, correlated features.
RIDGE = 1.0


def fit_calibration(
    features: Sequence[Mapping[str, float]],
    ap50: Sequence[float],
    *,
    training_kinds: Sequence[str] = (),
    threshold: float = DEFAULT_THRESHOLD,
    fitted_on: str = "",
    kinds: Sequence[str] | None = None,
) -> QualityCalibration:
    """Least-squares (ridge) weights that predict each image's AP@0.5 from its quality features.

    The limits of :data:`nucseg.inference.quality.NOT_NUCLEI_FEATURES` are,
    per image kind (``kinds``), :data:`~nucseg.inference.quality.LIMIT_MARGIN`
    times the largest values reached by the images the model segmented well
    (AP@0.5 at least ``threshold``): none of them is flagged by a limit. Without ``kinds`` there are no limits.

    Parameters
    ----------
    features
        Per image, the values of :data:`nucseg.inference.quality.QUALITY_FEATURES`.
    ap50
        Per image, its AP@0.5 against the annotation.
    training_kinds
        Image kinds the model was trained on (the ``unseen_kind`` feature).

    Raises
    ------
    ValueError
        Fewer than 3 images, or lengths that differ.
    """
    if len(features) != len(ap50) or len(features) < 3:
        raise ValueError(f"need 3 or more images with features and AP@0.5, got {len(features)} and {len(ap50)}")
    x = np.array([[row[name] for name in QUALITY_FEATURES] for row in features], dtype=np.float64)
    y = np.asarray(ap50, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    varies = std > 1e-9  # a feature constant on the fit images gets no weight
    z = np.zeros_like(x)
    z[:, varies] = (x[:, varies] - mean[varies]) / std[varies]
    gram = z.T @ z + RIDGE * np.eye(z.shape[1])
    beta = np.linalg.solve(gram, z.T @ (y - y.mean()))
    weights = np.where(varies, beta / np.where(varies, std, 1.0), 0.0)
    intercept = float(y.mean() - weights @ mean)
    limits: dict[str, dict[str, float]] = {}
    for kind in sorted(set(kinds or ())):
        good = [
            row for row, k, a in zip(features, kinds, ap50) if k == kind and a >= threshold and not row["no_nuclei"]
        ]
        if good:
            limits[kind] = {name: LIMIT_MARGIN * float(max(row[name] for row in good)) for name in NOT_NUCLEI_FEATURES}
    return QualityCalibration(
        intercept,
        {name: float(w) for name, w in zip(QUALITY_FEATURES, weights)},
        float(threshold),
        sorted(training_kinds),
        fitted_on,
        limits,
    )


@dataclass(frozen=True)
class QualityRelation:
    """How a quality score relates to real accuracy on a set of images.

    Attributes
    ----------
    images, flagged
        Number of images, and of those flagged ``check``.
    spearman
        Spearman rank correlation of score and AP@0.5 over the scored images
        (nan when either is constant).
    mean_ap50_flagged, mean_ap50_ok
        Mean AP@0.5 of the flagged and of the other images (nan when there are none).
    """

    images: int
    flagged: int
    spearman: float
    mean_ap50_flagged: float
    mean_ap50_ok: float


def quality_relation(
    features: Sequence[Mapping[str, float]],
    ap50: Sequence[float],
    calibration: QualityCalibration,
    *,
    kinds: Sequence[str] | None = None,
) -> QualityRelation:
    """Score ``features`` (of images of ``kinds``) with ``calibration`` and compare the scores and flags
    with ``ap50``."""
    from scipy.stats import spearmanr

    kinds = kinds if kinds is not None else [None] * len(features)
    qualities = [assess(row, calibration, image_kind=kind) for row, kind in zip(features, kinds)]
    scores = np.array([np.nan if q.score is None else q.score for q in qualities], dtype=np.float64)
    y = np.asarray(ap50, dtype=np.float64)
    flagged = np.array([q.flag == FLAG_CHECK for q in qualities])
    scored = ~np.isnan(scores)  # images without nuclei are flagged but get no score to rank
    constant = scored.sum() < 2 or np.ptp(scores[scored]) == 0 or np.ptp(y[scored]) == 0
    rho = float("nan") if constant else float(spearmanr(scores[scored], y[scored]).statistic)
    return QualityRelation(
        len(y),
        int(flagged.sum()),
        rho,
        float(y[flagged].mean()) if flagged.any() else float("nan"),
        float(y[~flagged].mean()) if (~flagged).any() else float("nan"),
    )

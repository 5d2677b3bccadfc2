"""How far to trust one image's segmentation: a score in [0, 1] and a flag, with the reason in words.

The score is a linear model of signs that a segmentation went wrong, each
measured from the network's own output (no ground truth needed):

``ambiguous``
    share of the nucleus-like pixels (p(nucleus) > 0.25) whose most likely
    class has probability below 0.75: the network could not decide;
``entropy``
    mean class entropy (base ``C``, 0 to 1) inside the predicted nuclei;
``irregular``
    1 - the median fill of the nuclei's bounding boxes divided by an
    ellipse's (pi / 4): outlined texture is ragged, nuclei are round;
``size_offset``
    |log2| of the measured nucleus diameter over the training diameter;
``sizing_clipped``
    1 when automatic sizing stopped at a limit of its range;
``no_nuclei``
    1 when nothing was found; such an image gets no score and is flagged
    ``check`` (the other features describe the nuclei found: a calibrated
    score of none would be its intercept, a confident "ok");
``unseen_kind``
    1 when the image's kind (fluorescence, brightfield, histology) is not one
    the model was trained on;
``area_spread``
    coefficient of variation of the nuclei's areas;
``thin_strokes``
    share of the objects thinner than :data:`STROKE_RATIO` of their size
    (twice the largest distance inside to their edge over their
    equivalent diameter: 1 for a disc, 0.58 for a 3 : 1 ellipse): letters of
    burned-in text, fibres;
``faint``
    share of the objects whose nuclear signal (fluorescence: intensity;
    brightfield: darkness; histology: haematoxylin density) stands out from
    the ring of free pixels around them by less than :data:`FAINT_CONTRAST`
    of the image's range: texture, a whole-cell or cytoplasm stain.

The last two describe the objects against what nuclei look like, so they
also flag an image on their own: each calibration stores, per image kind and
such feature, :data:`LIMIT_MARGIN` times the largest value its well-segmented validation
images reached (``limits``); an image beyond it is flagged ``check`` with that feature's
reason, whatever its score.

The weights are fitted per model, on validation images, against the
per-image AP@0.5 (``benchmarks/calibrate_quality.py``), and stored in the
model folder's ``config.json`` (``quality``): :class:`QualityCalibration`.
A model without a calibration gives no score (flag ``unknown``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

#: The features, in the order of the calibration's weights.
QUALITY_FEATURES = (
    "ambiguous",
    "entropy",
    "irregular",
    "size_offset",
    "sizing_clipped",
    "no_nuclei",
    "unseen_kind",
    "area_spread",
    "thin_strokes",
    "faint",
)
#: The features that say the objects are not nuclei: each flags an image beyond its calibrated limit.
NOT_NUCLEI_FEATURES = ("thin_strokes", "faint")
#: A limit is this many times the largest value of the well-segmented validation images: a few dozen images
#: show little of the tail of what nuclei reach (at 1, well-segmented test images were flagged).
LIMIT_MARGIN = 2.0
#: Thickness over equivalent diameter below which an object is a stroke (a 6 : 1 ellipse's is 0.41).
STROKE_RATIO = 0.4
#: Contrast to the surrounding ring, as a share of the image's 1-99 percentile range, below which an object is faint.
FAINT_CONTRAST = 0.1
#: Shares and means over many pixels (``ambiguous``, ``entropy``, the image's range and the ring around each
#: object in ``faint``) are measured on every this many rows and columns: the same values within sampling, for a
#: fraction of the time.
_SAMPLE_STEP = 2
#: What each feature means, for the flag's reason.
REASONS = {
    "ambiguous": "many pixels of uncertain class",
    "entropy": "uncertain nuclei",
    "irregular": "ragged shapes (texture outlined as nuclei?)",
    "size_offset": "nuclei far from the training size",
    "sizing_clipped": "automatic sizing at its limit: give --diameter",
    "no_nuclei": "no nuclei found",
    "unseen_kind": "an image kind the model was not trained on",
    "area_spread": "very uneven nucleus sizes",
    "thin_strokes": "objects look like text, fibres or thin strokes, not nuclei",
    "faint": "objects hardly stand out from their surroundings (texture, or a whole-cell or cytoplasm stain?)",
}
FLAG_OK, FLAG_CHECK, FLAG_UNKNOWN = "ok", "check", "unknown"
#: Why an image in which nothing was found is flagged: an empty field and a failed one look alike.
NO_NUCLEI_REASON = "no nuclei found: an empty field, or nuclei the model missed?"


@dataclass(frozen=True)
class QualityCalibration:
    """The fitted quality model of one network (stored as ``quality`` in its ``config.json``).

    Attributes
    ----------
    intercept, weights
        score = clip(intercept + sum(weights[f] * feature[f]), 0, 1): an estimate of the image's AP@0.5.
    threshold
        Images scoring below it are flagged ``check``.
    training_kinds
        Image kinds of the model's training images.
    fitted_on
        What the weights were fitted on, for the record.
    limits
        Per image kind, per feature of :data:`NOT_NUCLEI_FEATURES`, the value
        above which an image is flagged ``check`` whatever its score (the
        largest its well-segmented validation images of that kind reached); a
        kind or feature without a limit flags nothing.
    """

    intercept: float
    weights: dict[str, float]
    threshold: float
    training_kinds: list[str] = field(default_factory=list)
    fitted_on: str = ""
    limits: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityCalibration:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown quality setting(s) {', '.join(unknown)}")
        calibration = cls(**data)
        limited = {name for kind_limits in calibration.limits.values() for name in kind_limits}
        strange = sorted((set(calibration.weights) - set(QUALITY_FEATURES)) | (limited - set(NOT_NUCLEI_FEATURES)))
        if strange:
            raise ValueError(f"unknown quality feature(s) {', '.join(strange)}")
        return calibration


@dataclass(frozen=True)
class Quality:
    """The quality estimate of one segmentation.

    Attributes
    ----------
    score
        Estimated AP@0.5 in [0, 1]; None without a calibration, or when no
        nucleus was found (flag ``check``).
    flag
        ``ok``, ``check`` (score below the model's threshold) or ``unknown``.
    reason
        Why an image is flagged: its two features that cost the most, in words ("" when ok).
    features
        Every feature's value (:data:`QUALITY_FEATURES`).
    """

    score: float | None
    flag: str
    reason: str
    features: dict[str, float]


def quality_features(
    labels: np.ndarray,
    probabilities: np.ndarray | None,
    *,
    image_kind: str,
    training_diameter: float | None,
    training_kinds: Sequence[str] = (),
    sizing_clipped: bool = False,
    classes: int = 3,
    image: np.ndarray | None = None,
) -> dict[str, float]:
    """The features of :data:`QUALITY_FEATURES` for one segmentation.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
    probabilities : ndarray of float, shape (C, H, W), or None
        The maps the labels were built from (class probabilities first).
    image : ndarray, shape (H, W) or (H, W, C), or None
        The image segmented (for ``faint``; None: ``faint`` is 0).
    image_kind
        :func:`nucseg.datasets.kinds.image_kind` of the image.
    training_diameter
        Median training nucleus diameter in pixels (None: no size feature).
    classes
        Leading class channels of ``probabilities``.
    """
    features = dict.fromkeys(QUALITY_FEATURES, 0.0)
    if labels.dtype == np.uint64:  # np.bincount takes no uint64 (a napari label layer may be)
        labels = labels.astype(np.int64)
    count = int(labels.max())
    features["no_nuclei"] = float(count == 0)
    features["sizing_clipped"] = float(sizing_clipped)
    features["unseen_kind"] = float(bool(training_kinds) and image_kind not in training_kinds)
    if probabilities is not None:
        classes_p = probabilities[:classes, ::_SAMPLE_STEP, ::_SAMPLE_STEP]
        nucleus = 1.0 - classes_p[0]
        candidates = nucleus > 0.25
        if candidates.any():
            features["ambiguous"] = float((classes_p.max(axis=0)[candidates] < 0.75).mean())
        inside = labels[::_SAMPLE_STEP, ::_SAMPLE_STEP] > 0
        if count and not inside.any():  # nuclei too small for the sampled grid: all their pixels
            classes_p, inside = probabilities[:classes], labels > 0
        if inside.any():
            p = np.clip(classes_p[:, inside], 1e-7, 1.0)
            features["entropy"] = float((-(p * np.log(p)).sum(axis=0) / np.log(classes)).mean())
    if count:
        areas = np.bincount(labels.ravel())[1:]
        present = areas > 0
        boxes = ndi.find_objects(labels)
        box_areas = np.array([(b[0].stop - b[0].start) * (b[1].stop - b[1].start) if b else 1 for b in boxes])
        fill = areas[present] / box_areas[present]
        features["irregular"] = float(max(0.0, 1.0 - np.median(fill) / (np.pi / 4)))
        features["area_spread"] = float(areas[present].std() / max(areas[present].mean(), 1.0))
        diameters = np.sqrt(4 * areas[present] / np.pi)
        if training_diameter:
            features["size_offset"] = float(abs(np.log2(max(float(np.median(diameters)), 1.0) / training_diameter)))
        index = np.flatnonzero(present) + 1
        strokes = labels
        if image is not None:
            signal = nuclear_signal(image, image_kind)
            ring = max(2.0, 0.25 * float(np.median(diameters)))
            inside, outside = _inside_and_around(labels, index, signal, ring=ring)
            low, high = np.percentile(signal[::_SAMPLE_STEP, ::_SAMPLE_STEP], [1, 99])
            contrast = (inside - outside) / max(float(high - low), 1e-6)
            measured = contrast[~np.isnan(contrast)]
            features["faint"] = float((measured < FAINT_CONTRAST).mean()) if measured.size else 0.0
            # the bright part of each object: a filled letter's strokes, a nucleus's whole body
            level = np.zeros(int(labels.max()) + 1)
            level[index] = np.where(np.isnan(outside), -np.inf, (inside + outside) / 2)
            strokes = np.where(signal > level[labels], labels, 0)
        features["thin_strokes"] = float((_thickness(strokes, boxes, index) / diameters < STROKE_RATIO).mean())
    return features


def nuclear_signal(image: np.ndarray, image_kind: str) -> np.ndarray:
    """Where nuclei stain, high: intensity (fluorescence), darkness (brightfield), haematoxylin density (histology).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)

    Returns
    -------
    ndarray of float32, shape (H, W)
        In the image's own units (only differences and ranges of it are used).
    """
    from nucseg.preprocess.normalize import channel_mean, single_colour_channel, to_channels

    if image_kind == "histology":
        from skimage.color import rgb2hed

        rgb = to_channels(image, 3).astype(np.float32)
        return rgb2hed(rgb / max(float(rgb.max()), 1e-6))[..., 0].astype(np.float32)
    colours = image[..., None] if image.ndim == 2 else image[..., :3]  # alpha dropped
    single = single_colour_channel(colours) if colours.shape[2] == 3 else None
    if single is not None:  # a one-colour export (DAPI in blue on black): that channel, as to_channels takes it
        colours = colours[..., single : single + 1]
    grey = channel_mean(colours)
    return -grey if image_kind == "brightfield" else grey


def _thickness(labels: np.ndarray, boxes: Sequence[tuple[slice, slice] | None], index: np.ndarray) -> np.ndarray:
    """Per object of ``index``, twice the largest distance from inside it to its edge, pixels.

    ``boxes[label - 1]`` holds the object ``label`` (its box, or a larger one:
    that of the object it is the bright part of).

    An object's edge is its pixels next to another label or to the
    background; the image border is not an edge (an object cut by it is
    measured as far as it reaches). Each object's distance transform runs on
    the box given for it: the same values as one transform of the whole
    image, in about a quarter of its CPU time on DSB2018's fields.
    """
    from nucseg.postprocess.outlines import inner_edges

    inside = (labels > 0) & ~inner_edges(labels)  # touching objects keep their own edges
    deepest = np.zeros(len(boxes) + 1)
    for label, box in enumerate(boxes, start=1):
        if box is None:
            continue
        # one pixel around the object, where the image has one: the border is no edge
        box = tuple(slice(max(part.start - 1, 0), part.stop + 1) for part in box)
        own = inside[box] & (labels[box] == label)
        if own.any():
            deepest[label] = ndi.distance_transform_edt(own).max()
    return 2.0 * deepest[index]


def _inside_and_around(
    labels: np.ndarray, index: np.ndarray, signal: np.ndarray, *, ring: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per object of ``index``: mean ``signal`` inside it, and over the free pixels within ``ring`` pixels
    around it that lie nearer to it than to any other object (nan for an object with none).

    The ring is measured on every :data:`_SAMPLE_STEP`-th row and column
    (:func:`skimage.segmentation.expand_labels` of the sampled labels): its
    mean within sampling, at a fraction of the cost. An object the sampled
    grid misses (a few pixels, or one pixel wide) has no ring there: nan,
    as for an object with no free pixel around it.
    """
    from skimage.segmentation import expand_labels

    length = int(index.max()) + 1
    flat = labels.ravel()
    inside = np.bincount(flat, signal.ravel(), minlength=length)[index] / np.bincount(flat, minlength=length)[index]
    sampled = labels[::_SAMPLE_STEP, ::_SAMPLE_STEP]
    around = np.where(sampled == 0, expand_labels(sampled, distance=ring / _SAMPLE_STEP), 0).ravel()
    free_sum = np.bincount(around, weights=signal[::_SAMPLE_STEP, ::_SAMPLE_STEP].ravel(), minlength=length)[index]
    free_count = np.bincount(around, minlength=length)[index]
    with np.errstate(invalid="ignore", divide="ignore"):
        outside = np.where(free_count > 0, free_sum / np.maximum(free_count, 1), np.nan)
    return inside, outside


def assess(
    features: Mapping[str, float], calibration: QualityCalibration | None, *, image_kind: str | None = None
) -> Quality:
    """Score and flag one image's features with a model's calibration (``unknown`` without one).

    ``image_kind`` chooses the calibration's limits of :data:`NOT_NUCLEI_FEATURES`;
    None (an image pooled from blocks of their own kinds) takes, per feature, the largest of the kinds' limits.
    """
    if calibration is None:
        return Quality(None, FLAG_UNKNOWN, "the model has no quality calibration", dict(features))
    if features["no_nuclei"]:  # the other features describe the nuclei found: with none, they say nothing
        return Quality(None, FLAG_CHECK, NO_NUCLEI_REASON, dict(features))
    contributions = {name: calibration.weights.get(name, 0.0) * features[name] for name in QUALITY_FEATURES}
    score = float(np.clip(calibration.intercept + sum(contributions.values()), 0.0, 1.0))
    limits = _limits(calibration, image_kind)
    beyond = sorted(
        (name for name, limit in limits.items() if features[name] > limit),
        key=lambda name: -features[name] / max(limits[name], 1e-6),
    )  # the furthest beyond first
    if score >= calibration.threshold and not beyond:
        return Quality(score, FLAG_OK, "", dict(features))
    worst = (
        []
        if score >= calibration.threshold
        else [name for _, name in sorted((value, name) for name, value in contributions.items() if value < 0)]
    )
    reason = "; ".join(REASONS[name] for name in list(dict.fromkeys(beyond + worst))[:2]) or "low estimated accuracy"
    return Quality(score, FLAG_CHECK, reason, dict(features))


def _limits(calibration: QualityCalibration, image_kind: str | None) -> dict[str, float]:
    if image_kind is not None:
        return calibration.limits.get(image_kind, {})
    loosest: dict[str, float] = {}
    for kind_limits in calibration.limits.values():
        for name, limit in kind_limits.items():
            loosest[name] = max(limit, loosest.get(name, limit))
    return loosest


def pooled_features(parts: Sequence[Mapping[str, float]], nuclei: Sequence[int]) -> dict[str, float]:
    """The features of a whole image from those of its parts (the blocks of a block-wise run).

    Each feature is the mean of the parts' weighted by the nuclei each part
    holds; ``no_nuclei`` is 1 when no part holds any, ``sizing_clipped`` when
    any part's sizing stopped at a limit.

    Parameters
    ----------
    parts
        The :func:`quality_features` of each part.
    nuclei
        How many nuclei each part holds (a block: the nuclei it owns).
    """
    weights = np.asarray(nuclei, dtype=np.float64)
    pooled = dict.fromkeys(QUALITY_FEATURES, 0.0)
    pooled["sizing_clipped"] = float(any(part["sizing_clipped"] for part in parts))
    if weights.sum() <= 0:
        pooled["no_nuclei"] = 1.0
        return pooled
    for name in QUALITY_FEATURES:
        if name not in ("no_nuclei", "sizing_clipped"):
            pooled[name] = float(np.average([part[name] for part in parts], weights=weights))
    return pooled

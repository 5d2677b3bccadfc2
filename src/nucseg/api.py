"""The Python API: load a model, segment images, segment files in batch.

::

    import nucseg

    model = nucseg.load_model()               # the shipped DSB2018 model
    labels = model.segment(image)             # (H, W) int32, 0 background, 1..N nuclei

    from nucseg.api import segment_files
    report = segment_files(["images/"], "out/", model=model, overlay=True, measure=True)

:func:`load_model` accepts a model folder (see :mod:`nucseg.model_io`) or a
registered name: ``"dsb2018"`` (the trained model shipped with nucseg, the
default) or ``"classical"`` (the Otsu / distance-transform watershed
baseline, no network). Images go in raw, in any dtype and with any usual
channel layout; they are normalized exactly as the model's training images
were (:func:`nucseg.preprocess.prepare_image` with the model's settings).
"""

from __future__ import annotations

import csv
import importlib.resources
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.errors import InputError, ModelError, NucsegError
from nucseg.io import IMAGE_SUFFIXES, atomic_write
from nucseg.measure import size_factor

#: Registered model names and what they are.
REGISTERED_MODELS = {
    "dsb2018": "U-Net trained on the Kaggle DSB2018 stage-1 images (shipped with nucseg)",
    "classical": "classical baseline: Otsu threshold, distance transform, watershed (no network)",
}
#: The model used when none is named.
DEFAULT_MODEL = "dsb2018"
#: Backend names of :meth:`NetworkModel.segment`.
BACKENDS = ("torch", "onnxruntime")
#: Backend used on CPU when none is named (the faster one in ``benchmarks/bench_inference.py``).
DEFAULT_CPU_BACKEND = "onnxruntime"

SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = ("image", "path", "status", "nuclei", "mean_area_px", "scale", "seconds", "error")
#: ``diameter`` value that sizes each image automatically (see :meth:`NetworkModel.segment`).
AUTO_DIAMETER = "auto"
#: Automatic sizing measures the nuclei of an image of more than this many pixels on its centre
#: quarter (half its height and half its width) instead of on the whole image, so that its first
#: pass costs a quarter of a full pass on large images ...
AUTO_SIZE_CROP_ABOVE = 1024 * 1024
#: ... unless that crop holds fewer whole nuclei than this; then the whole image is measured.
AUTO_SIZE_MIN_NUCLEI = 10
_SEGMENT_OPTIONS = ("tile_size", "overlap", "batch_size", "tta", "scale", "diameter", "backend", "postprocess")


def package_models_dir() -> Path:
    """Folder of the model folders shipped as package data (``nucseg/data/models``)."""
    return Path(str(importlib.resources.files("nucseg").joinpath("data", "models")))


def sample_image_paths() -> list[Path]:
    """The sample images shipped with nucseg (fluorescence, histology, brightfield DSB2018 images)."""
    folder = Path(str(importlib.resources.files("nucseg").joinpath("data", "samples")))
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


# ------------------------------------------------------------------------- models


@dataclass
class SegmentationResult:
    """Labels with the class probabilities they were built from.

    Attributes
    ----------
    labels : ndarray of int32, shape (H, W)
        0 background, nuclei 1..N.
    probabilities : ndarray of float32, shape (C, H, W)
        Softmax class probabilities at the image's resolution (C = 3:
        background, interior, boundary; C = 2: background, nucleus).
    scale
        Resize factor the image was run at (1.0: native resolution).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    scale: float = 1.0


class Model:
    """A segmentation model: raw image in, instance labels out.

    Get one from :func:`load_model`. Subclasses: :class:`NetworkModel`,
    :class:`ClassicalModel`.

    Attributes
    ----------
    name
        Registered name, or the model folder's name.
    path
        The model folder, or None for the classical baseline.
    """

    name: str
    path: Path | None

    def segment(self, image: np.ndarray, **options: Any) -> np.ndarray | SegmentationResult:
        """Segment one raw image; see :meth:`NetworkModel.segment`."""
        raise NotImplementedError

    def check_options(self, **options: Any) -> None:
        """Raise ``ValueError`` or :class:`ModelError` for options :meth:`segment` would reject."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, path={str(self.path) if self.path else None!r})"


class NetworkModel(Model):
    """A trained network with its configuration (see :mod:`nucseg.model_io`).

    Parameters
    ----------
    loaded
        The loaded model folder.
    name
        Name to report (default: the folder's name, or the config's name).
    """

    def __init__(self, loaded: Any, *, name: str | None = None):
        from nucseg.postprocess import PostprocessConfig

        self.network = loaded.network
        self.config = loaded.config
        self.path = Path(loaded.path)
        self.name = name or self.config.name or self.path.name
        try:
            self.postprocess_config = PostprocessConfig.from_dict(self.config.postprocess)
        except (TypeError, ValueError) as exc:
            raise ModelError(self.path, f"invalid postprocess settings in config.json ({exc})") from None
        self._runners: dict[str, Any] = {}

    @property
    def device(self) -> str:
        """Device of the network's weights (``"cpu"``, ``"cuda:0"``, ...)."""
        return str(next(self.network.parameters()).device)

    @property
    def training_diameter(self) -> float | None:
        """Median nucleus diameter (pixels) of the training images, if the model records it."""
        value = self.config.median_diameter
        return None if value is None else float(value)

    def default_backend(self) -> str:
        """``"torch"`` on a GPU, else :data:`DEFAULT_CPU_BACKEND`."""
        return "torch" if self.device != "cpu" else DEFAULT_CPU_BACKEND

    def runner(self, backend: str | None = None):
        """The callable that runs the network on a batch of tiles (cached per backend).

        The ONNX Runtime backend exports the network in memory the first time
        (about a second).
        """
        from nucseg.prediction import OnnxRunner, TorchRunner

        backend = backend or self.default_backend()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        if backend not in self._runners:
            if backend == "torch":
                self._runners[backend] = TorchRunner(self.network)
            else:
                if self.device != "cpu":
                    raise ValueError("the onnxruntime backend runs on CPU; load the model with device='cpu'")
                try:
                    self._runners[backend] = OnnxRunner.from_network(self.network,
                                                                     in_channels=self.config.in_channels)
                except ImportError as exc:
                    raise NucsegError(f"the onnxruntime backend needs the onnxruntime package ({exc}); "
                                      "install it, or use the torch backend") from None
        return self._runners[backend]

    def resolve_scale(self, scale: float | None = None, diameter: float | str | None = AUTO_DIAMETER) -> float | None:
        """The resize factor for ``scale`` or a typical nucleus ``diameter`` in pixels.

        ``diameter`` gives ``training_diameter / diameter``: images with larger
        nuclei than the training images are shrunk before the network. A
        ``scale`` replaces automatic sizing (``diameter="auto"``, the default).

        Returns
        -------
        float or None
            None when the factor is to be estimated from the image
            (:meth:`estimate_scale`): ``diameter="auto"`` without ``scale``, on
            a model that records its training diameter and runs at native
            resolution. Other models are not resized automatically (1.0).

        Raises
        ------
        ValueError
            A number and ``scale`` both given, or not positive numbers, or a
            scale for a model that resizes every image to a fixed size.
        ModelError
            A numeric ``diameter`` for a model that records no training diameter.
        """
        if isinstance(diameter, str):
            if diameter != AUTO_DIAMETER:
                raise ValueError(f"diameter must be a number of pixels or {AUTO_DIAMETER!r}, got {diameter!r}")
            if scale is None:
                return None if self.training_diameter is not None and self.config.resize_to is None else 1.0
            diameter = None
        if scale is not None and diameter is not None:
            raise ValueError("give scale or diameter, not both")
        if diameter is not None:
            if not (np.isfinite(diameter) and diameter > 0):
                raise ValueError(f"diameter must be a positive number of pixels, got {diameter}")
            if self.training_diameter is None:
                raise ModelError(self.path, "the model records no nucleus diameter of its training images, "
                                            "so diameter cannot be used; give a scale factor instead")
            scale = self.training_diameter / float(diameter)
        if scale is None:
            return 1.0
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale}")
        if self.config.resize_to is not None and scale != 1.0:
            raise ValueError(f"the model resizes every image to {self.config.resize_to} x {self.config.resize_to} "
                             "pixels itself; scale and diameter do not apply")
        return float(scale)

    def check_options(
        self,
        *,
        tile_size: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        tta: bool = False,
        scale: float | None = None,
        diameter: float | str | None = AUTO_DIAMETER,
        backend: str | None = None,
        postprocess: Mapping[str, Any] | None = None,
    ) -> None:
        from nucseg.prediction import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, _check_tiling

        _check_tiling(tile_size or DEFAULT_TILE_SIZE, DEFAULT_OVERLAP if overlap is None else overlap,
                      batch_size or DEFAULT_BATCH_SIZE)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        self.resolve_scale(scale, diameter)
        self._postprocess_config(postprocess)

    def _postprocess_config(self, overrides: Mapping[str, Any] | None):
        from nucseg.postprocess import PostprocessConfig

        if not overrides:
            return self.postprocess_config
        return PostprocessConfig.from_dict({**self.postprocess_config.to_dict(), **overrides})

    def probabilities(
        self,
        image: np.ndarray,
        *,
        tile_size: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        tta: bool = False,
        scale: float = 1.0,
        backend: str | None = None,
        intensity_range: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Class probabilities of a raw image, ``(C, H, W)`` float32; options as in :meth:`segment`."""
        from nucseg.prediction import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, predict_rescaled
        from nucseg.preprocess import prepare_image, to_channels

        image = _check_image(image)
        if intensity_range is None:
            prepared = prepare_image(image, self.config.normalization)
        else:  # the percentiles of the larger image that ``image`` is a block of (nucseg.blockwise)
            low, high = (np.asarray(value, dtype=np.float64) for value in intensity_range)
            spread = np.maximum(high - low, 1e-6).astype(np.float32)  # as normalize_percentile computes it
            channels = to_channels(image, self.config.normalization.channels).astype(np.float32)
            prepared = (channels - low.astype(np.float32)) / spread
        return predict_rescaled(
            self.runner(backend),
            prepared,
            scale=scale,
            resize_to=self.config.resize_to,
            tile_size=tile_size or DEFAULT_TILE_SIZE,
            overlap=DEFAULT_OVERLAP if overlap is None else overlap,
            batch_size=batch_size or DEFAULT_BATCH_SIZE,
            tta=tta,
        )

    def segment(
        self,
        image: np.ndarray,
        *,
        tile_size: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        tta: bool = False,
        scale: float | None = None,
        diameter: float | str | None = AUTO_DIAMETER,
        return_probabilities: bool = False,
        backend: str | None = None,
        postprocess: Mapping[str, Any] | None = None,
        intensity_range: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray | SegmentationResult:
        """Find the nuclei of one raw image.

        Parameters
        ----------
        image : ndarray, shape (H, W) or (H, W, C)
            Raw image, any dtype, any size; gray, RGB or RGBA (alpha dropped).
            Normalized as in training.
        tile_size
            Side of the square tiles in pixels, a multiple of 32 (default
            :data:`nucseg.prediction.DEFAULT_TILE_SIZE`). Larger tiles are a
            little faster and need more memory.
        overlap
            Overlap of neighbouring tiles in pixels (default
            :data:`nucseg.prediction.DEFAULT_OVERLAP`).
        batch_size
            Tiles per network call.
        tta
            Test-time augmentation: average over the 4 flips (4x slower).
        scale
            Fixed resize factor applied before the network, for nuclei much
            larger (scale < 1) or smaller (scale > 1) than in the training
            images; replaces automatic sizing (1.0: native resolution).
            Probabilities are resized back, so labels always match ``image``.
        diameter
            ``"auto"`` (the default): size the image automatically. A first
            pass at native resolution finds the nuclei; when their median
            diameter differs from the training diameter by more than
            :data:`nucseg.measure.AUTO_SCALE_TOLERANCE`, the image is run
            again at the factor that matches them (within
            :data:`nucseg.measure.AUTO_SCALE_LIMITS`; see
            :meth:`estimate_scale`). That second pass costs ``factor ** 2``
            times the first. A number: the typical nucleus diameter in
            pixels, which sets the factor directly (needs a model that records
            its training diameter). None: native resolution.
        return_probabilities
            Return a :class:`SegmentationResult` with the probabilities.
        backend
            ``"torch"`` or ``"onnxruntime"`` (CPU); None picks the faster one
            for the device (:meth:`default_backend`).
        postprocess
            Settings of :class:`nucseg.postprocess.PostprocessConfig` that
            replace the model's, e.g. ``{"min_size": 30}``.
        intensity_range
            Per-channel intensities ``(low, high)``, arrays of shape
            (channels,), that map to 0 and 1 instead of the image's own
            percentiles: for blocks of a larger image, normalized alike
            (:mod:`nucseg.blockwise`).

        Returns
        -------
        labels : ndarray of int32, shape (H, W)
            0 background, nuclei 1..N; or a :class:`SegmentationResult`.
        """
        factor = self.resolve_scale(scale, diameter)
        post_config = self._postprocess_config(postprocess)
        options = dict(tile_size=tile_size, overlap=overlap, batch_size=batch_size, tta=tta, backend=backend,
                       intensity_range=intensity_range)
        result = None
        if factor is None:
            image = _check_image(image)
            if options["intensity_range"] is None and _sized_on_crop(image):
                # The crop of the first pass is normalized with the whole image's range: the second pass
                # reuses it instead of computing the same percentiles again.
                options["intensity_range"] = self.intensity_range(image)
            factor, result = self._estimate_scale(image, post_config, options)
        if result is None or factor != 1.0:
            result = self._segment_at(image, factor, post_config, options)
        return result if return_probabilities else result.labels

    def estimate_scale(
        self,
        image: np.ndarray,
        *,
        postprocess: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> float:
        """The resize factor that automatic sizing (``diameter="auto"``) picks for ``image``.

        Segments ``image`` at native resolution and passes the labels to
        :meth:`scale_for_labels`. Of an image of more than
        :data:`AUTO_SIZE_CROP_ABOVE` pixels, only the centre quarter (half the
        height and half the width) is segmented, normalized with the whole
        image's intensities, and nuclei cut by the crop's edge are left out;
        unless the crop holds fewer than :data:`AUTO_SIZE_MIN_NUCLEI` whole
        nuclei, when the whole image is measured.
        :mod:`nucseg.blockwise` estimates the factor once per image this way,
        so that every block of the image runs at the same factor.

        Parameters
        ----------
        image : ndarray, shape (H, W) or (H, W, C)
            Raw image, as for :meth:`segment`.
        postprocess, **options
            As for :meth:`segment` (``tile_size``, ``overlap``, ``batch_size``,
            ``tta``, ``backend``, ``intensity_range``).
        """
        return self._estimate_scale(_check_image(image), self._postprocess_config(postprocess), options)[0]

    def _estimate_scale(self, image: np.ndarray, post_config, options: Mapping[str, Any]
                        ) -> tuple[float, SegmentationResult | None]:
        """Automatic sizing's factor (:meth:`estimate_scale`), and the native-resolution
        result when the whole image was segmented to find it (None when a crop was)."""
        from skimage.segmentation import clear_border

        if _sized_on_crop(image):
            height, width = image.shape[:2]
            crop = image[height // 4:height // 4 + height // 2, width // 4:width // 4 + width // 2]
            crop_options = dict(options)
            if crop_options.get("intensity_range") is None:
                crop_options["intensity_range"] = self.intensity_range(image)
            labels = clear_border(self._segment_at(crop, 1.0, post_config, crop_options).labels)
            if np.count_nonzero(np.unique(labels)) >= AUTO_SIZE_MIN_NUCLEI:
                return self.scale_for_labels(labels), None
        result = self._segment_at(image, 1.0, post_config, options)
        return self.scale_for_labels(result.labels), result

    def intensity_range(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel intensities of ``image`` that normalization maps to 0 and 1, shape (channels,) each.

        The model's normalization percentiles of the image after channel
        conversion; pass them as ``intensity_range`` to segment a part of
        ``image`` normalized as the whole is.
        """
        from nucseg.preprocess import percentile_range, to_channels

        normalization = self.config.normalization
        return percentile_range(to_channels(_check_image(image), normalization.channels),
                                low=normalization.low_percentile, high=normalization.high_percentile)

    def scale_for_labels(self, labels: np.ndarray) -> float:
        """Resize factor that brings the nuclei of ``labels`` to the training diameter.

        :func:`nucseg.measure.size_factor` with the model's training diameter:
        1.0 when ``labels`` holds no nucleus or the model records no diameter.
        """
        return size_factor(labels, self.training_diameter)

    def _segment_at(self, image: np.ndarray, factor: float, post_config, options: Mapping[str, Any]
                    ) -> SegmentationResult:
        from nucseg.postprocess import instances_from_probabilities

        probabilities = self.probabilities(image, scale=factor, **options)
        return SegmentationResult(instances_from_probabilities(probabilities, post_config), probabilities, factor)

    def export_onnx(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the network as an ONNX file (see :func:`nucseg.prediction.export_onnx`)."""
        from nucseg.prediction import export_onnx

        return export_onnx(self, path, overwrite=overwrite)


class ClassicalModel(Model):
    """The classical baseline (:func:`nucseg.classical.segment_classical`), no network."""

    name = "classical"
    path = None

    def check_options(
        self,
        *,
        tile_size: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        tta: bool = False,
        scale: float | None = None,
        diameter: float | str | None = None,
        backend: str | None = None,
        postprocess: Mapping[str, Any] | None = None,
    ) -> None:
        numeric_diameter = diameter != AUTO_DIAMETER and diameter  # "auto" is what the baseline does anyway
        unsupported = [name for name, value in (("tta", tta), ("scale", scale), ("diameter", numeric_diameter),
                                                ("backend", backend), ("postprocess", postprocess)) if value]
        if unsupported:
            raise ValueError(f"the classical model has no network; {', '.join(unsupported)} do not apply "
                             "(it estimates the nucleus size itself)")

    def segment(
        self,
        image: np.ndarray,
        *,
        return_probabilities: bool = False,
        **options: Any,
    ) -> np.ndarray:
        """Segment one raw image with the classical baseline.

        Tiling options (``tile_size``, ``overlap``, ``batch_size``) and
        ``diameter="auto"`` are accepted and unused (the baseline estimates the
        nucleus size itself); network options (``tta``, ``scale``, a numeric
        ``diameter``, ``backend``, ``postprocess``) and ``return_probabilities``
        raise ``ValueError``.

        Returns
        -------
        labels : ndarray of int32, shape (H, W)
        """
        from nucseg.classical import segment_classical

        if return_probabilities:
            raise ValueError("the classical model computes no class probabilities")
        unknown = sorted(set(options) - set(_SEGMENT_OPTIONS))
        if unknown:
            raise TypeError(f"unexpected option(s) {', '.join(unknown)}")
        self.check_options(**options)
        return segment_classical(_check_image(image))


def _sized_on_crop(image: np.ndarray) -> bool:
    """Whether automatic sizing measures ``image`` on its centre quarter (:meth:`NetworkModel.estimate_scale`)."""
    return image.shape[0] * image.shape[1] > AUTO_SIZE_CROP_ABOVE


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got {image.shape}")
    if image.dtype.kind not in "uifb":
        raise ValueError(f"image must hold numbers, got dtype {image.dtype}")
    return image


def load_model(name_or_path: str | Path | None = None, *, device: str = "cpu") -> Model:
    """Load a segmentation model by registered name or model folder.

    Parameters
    ----------
    name_or_path
        ``"dsb2018"`` (the trained model shipped with nucseg), ``"classical"``
        (the baseline without a network), or the path of a model folder
        written by ``nucseg train``. None means :data:`DEFAULT_MODEL`. A string
        equal to a registered name is that name; write ``./dsb2018`` for a
        folder of that name.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (a GPU if there is one).

    Returns
    -------
    Model
        A :class:`NetworkModel` or the :class:`ClassicalModel`.

    Raises
    ------
    ModelError
        No such model; a corrupt or foreign folder; weights whose checksum
        does not match; the default model missing from the installation.
    """
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    if isinstance(name_or_path, str) and name_or_path == "classical":
        return ClassicalModel()
    path = resolve_model_path(name_or_path)
    name = name_or_path if isinstance(name_or_path, str) and name_or_path in REGISTERED_MODELS else None
    return _load_network_model(path, name=name, device=device)


def resolve_model_path(name_or_path: str | Path) -> Path:
    """The folder of a shipped model's name, or ``name_or_path`` itself if it is a folder.

    Raises
    ------
    ModelError
        A registered model missing from the installation, or no such folder.
    """
    if isinstance(name_or_path, str) and name_or_path in REGISTERED_MODELS:
        path = package_models_dir() / name_or_path
        if not (path / "config.json").is_file():
            raise ModelError(path, f"model {name_or_path!r} is not installed (its folder is missing from the "
                                   "nucseg package); reinstall nucseg, or give a model folder "
                                   "(--model PATH), or use --model classical for the classical baseline")
        return path
    path = Path(name_or_path)
    if not path.exists():
        raise ModelError(path, f"no such model folder, and not a registered model name "
                               f"({', '.join(REGISTERED_MODELS)})")
    return path


def _load_network_model(path: Path, *, name: str | None, device: str) -> NetworkModel:
    import torch

    from nucseg.model_io import load_model_folder

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model_folder(path)  # checks format, version and the weights checksum
    try:
        loaded.network.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise ModelError(path, f"cannot move the network to device {device!r} ({exc})") from None
    return NetworkModel(loaded, name=name)


# -------------------------------------------------------------------------- batch


@dataclass(frozen=True)
class ImageInput:
    """An image file to segment and the name its outputs get.

    Attributes
    ----------
    name
        Output name: the file stem, the DSB2018 id, or the path relative to
        an input folder without suffix (``sub/image``).
    path
        The image file.
    """

    name: str
    path: Path


@dataclass
class ImageReport:
    """What happened to one image of a batch.

    Attributes
    ----------
    name, path
        As in :class:`ImageInput`.
    status
        ``"ok"``, ``"failed"`` or ``"skipped"`` (outputs existed).
    nuclei
        Number of nuclei found (None unless ok).
    mean_area
        Mean nucleus area in pixels (None unless ok; 0.0 without nuclei).
    scale
        Resize factor the network ran at (see ``diameter`` in
        :meth:`NetworkModel.segment`); None unless ok, and for models without a
        network.
    seconds
        Wall time spent on the image: reading, segmenting, writing.
    error
        Why it failed or was skipped.
    outputs
        Files written.
    """

    name: str
    path: Path
    status: str
    nuclei: int | None = None
    mean_area: float | None = None
    seconds: float = 0.0
    error: str = ""
    outputs: list[Path] = field(default_factory=list)
    scale: float | None = None


@dataclass
class BatchReport:
    """Result of :func:`segment_files`.

    Attributes
    ----------
    images
        One report per input image, in input order.
    out_dir
        The output folder.
    summary_path
        The summary CSV (one row per image).
    rle_path
        The Kaggle submission CSV, if one was asked for.
    seconds
        Wall time of the whole batch.
    """

    images: list[ImageReport]
    out_dir: Path
    summary_path: Path
    rle_path: Path | None = None
    seconds: float = 0.0

    def _count(self, status: str) -> int:
        return sum(1 for image in self.images if image.status == status)

    @property
    def n_ok(self) -> int:
        return self._count("ok")

    @property
    def n_failed(self) -> int:
        return self._count("failed")

    @property
    def n_skipped(self) -> int:
        return self._count("skipped")

    @property
    def n_nuclei(self) -> int:
        return sum(image.nuclei or 0 for image in self.images)

    @property
    def exit_code(self) -> int:
        """0 if every image was segmented or skipped, 1 if any failed."""
        return 1 if self.n_failed else 0

    def format_summary(self) -> str:
        """One line: images, nuclei, failures, skipped, seconds."""
        return (f"{self.n_ok} of {len(self.images)} images segmented, {self.n_nuclei} nuclei, "
                f"{self.n_failed} failed, {self.n_skipped} skipped, {self.seconds:.1f} s; "
                f"summary in {self.summary_path}")


def find_images(inputs: Sequence[str | Path], *, exclude: str | Path | None = None) -> list[ImageInput]:
    """Expand files, folders (recursively) and DSB2018 datasets into named image files.

    Rules, for each input:

    - a file is taken as is (a file that is not a readable image fails later,
      when segmented), named by its stem;
    - a DSB2018 dataset (``<id>/images/<id>.png``, masks ignored) gives one
      image per sample, named by the id; so does a single sample folder;
    - a folder of paired images and masks (``images/`` or ``inputs/`` beside
      ``masks/`` or ``labels/``) gives its images only;
    - any other folder gives every image file below it (hidden files and
      folders skipped), named by its path relative to the folder without suffix.

    Parameters
    ----------
    inputs
        Files and folders.
    exclude
        A folder whose files are never taken (the output folder).

    Raises
    ------
    InputError
        An input does not exist, a folder holds no image, or two images would
        get the same name (and so the same output files).
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[ImageInput] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise InputError(item, "no such file or folder")
        if item.is_file():
            found.append(ImageInput(item.stem, item))
            continue
        images = _folder_images(item, excluded)
        if not images:
            raise InputError(item, f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        found.extend(images)
    by_name: dict[str, Path] = {}
    for image in found:
        if image.name in by_name:
            raise InputError(image.path, f"has the same output name {image.name!r} as {by_name[image.name]}; "
                                         "segment them into different --out folders")
        by_name[image.name] = image.path
    return found


def _folder_images(folder: Path, excluded: Path | None) -> list[ImageInput]:
    children = _visible_children(folder)
    sample_dirs = [child for child in children if child.is_dir()]
    loose_images = [child for child in children if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES]
    if sample_dirs and not loose_images and all((child / "images").is_dir() for child in sample_dirs):
        return [image for child in sample_dirs for image in _dsb_sample_images(child)]  # DSB2018 dataset
    images_dir = folder / "images"
    if images_dir.is_dir() and [p.stem for p in _image_children(images_dir)] == [folder.name]:
        return _dsb_sample_images(folder)  # one DSB2018 sample folder
    for images_name in ("images", "inputs"):
        if (folder / images_name).is_dir() and any((folder / m).is_dir() for m in ("masks", "labels")):
            folder = folder / images_name  # paired images and masks: the images only
            break
    images = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if not path.is_file() or (excluded is not None and path.resolve().is_relative_to(excluded)):
            continue
        images.append(ImageInput(relative.with_suffix("").as_posix(), path))
    return images


def _visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _image_children(folder: Path) -> list[Path]:
    return [p for p in _visible_children(folder) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _dsb_sample_images(sample_dir: Path) -> list[ImageInput]:
    """The image(s) of a DSB2018 sample folder, named by the folder (``<id>/images/<id>.png``)."""
    files = _image_children(sample_dir / "images")
    if len(files) == 1:
        return [ImageInput(sample_dir.name, files[0])]
    return [ImageInput(f"{sample_dir.name}/{path.stem}", path) for path in files]


def output_paths(out_dir: str | Path, name: str, *, overlay: bool = False, measure: bool = False) -> dict[str, Path]:
    """Output files of one image: ``labels`` always, ``overlay`` and ``nuclei`` on request."""
    out_dir = Path(out_dir)
    paths = {"labels": out_dir / f"{name}_labels.tif"}
    if overlay:
        paths["overlay"] = out_dir / f"{name}_overlay.png"
    if measure:
        paths["nuclei"] = out_dir / f"{name}_nuclei.csv"
    return paths


def segment_files(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    model: Model | str | Path | None = None,
    overlay: bool = False,
    measure: bool = False,
    pixel_size: float | None = None,
    rle_path: str | Path | None = None,
    overwrite: bool = False,
    channel_axis: int | None = None,
    progress: bool = False,
    **segment_options: Any,
) -> BatchReport:
    """Segment image files and write label images, overlays, measurements and a summary.

    For every image ``X`` (see :func:`find_images` for names) this writes

    ``OUT/X_labels.tif``
        instance labels, uint16 (uint32 above 65,535 nuclei), 0 background;
    ``OUT/X_overlay.png``
        with ``overlay``: nucleus outlines on the normalized image;
    ``OUT/X_nuclei.csv``
        with ``measure``: one row of measurements per nucleus
        (:func:`nucseg.measure.measure_nuclei`);

    and, for the batch, ``OUT/summary.csv`` (image, path, status, nuclei,
    mean area in pixels, the resize factor the network ran at, seconds,
    error) and, with ``rle_path``, a Kaggle DSB2018 submission CSV. Every
    file is written atomically. An image that cannot be read or segmented is
    reported (status ``failed`` and the reason) and the others still run. An
    image with any existing output is skipped (status ``skipped``) unless
    ``overwrite``.

    Parameters
    ----------
    inputs
        Image files, folders and DSB2018 datasets.
    out_dir
        Output folder (created).
    model
        A :class:`Model`, or a name or folder for :func:`load_model`.
    overlay, measure
        Also write outline overlays / per-nucleus measurements.
    pixel_size
        Microns per pixel for the measurements (areas in µm², lengths in µm).
    rle_path
        Write a Kaggle submission CSV of run-length encodings here.
    overwrite
        Replace existing outputs.
    channel_axis
        Channel axis of multi-channel TIFFs that do not declare it.
    progress
        Show a progress bar over images (on stderr).
    **segment_options
        Passed to :meth:`Model.segment` (``tile_size``, ``overlap``,
        ``batch_size``, ``tta``, ``scale``, ``diameter``, ``backend``, ``postprocess``).

    Returns
    -------
    BatchReport

    Raises
    ------
    InputError
        Missing inputs, no images, clashing names, or the RLE file existing
        without ``overwrite`` (checked before any work). ``summary.csv``
        reports the latest run (skipped images included) and is always
        rewritten, so a re-run after a crash only does what is missing.
    ModelError
        The model cannot be loaded, or cannot honour the options.
    """
    from tqdm import tqdm

    from nucseg.io import OutputExistsError

    started = time.perf_counter()
    check_batch_options(segment_options, pixel_size=pixel_size)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output path exists and is not a folder")
    summary_path = out_dir / SUMMARY_FILE
    rle_path = None if rle_path is None else Path(rle_path)
    if rle_path is not None and rle_path.exists() and not overwrite:
        raise OutputExistsError(rle_path, "exists (use --overwrite to replace it)")
    images = find_images(inputs, exclude=out_dir)
    if not isinstance(model, Model):
        model = load_model(model)
    try:
        model.check_options(**segment_options)
        if isinstance(model, NetworkModel):
            model.runner(segment_options.get("backend"))  # a backend that cannot start fails once, here
    except ValueError as exc:
        raise NucsegError(str(exc)) from None

    reports = []
    for image in tqdm(images, desc="segmenting", unit="image", disable=not progress, leave=False):
        reports.append(_segment_one(image, out_dir, model, overlay=overlay, measure=measure, pixel_size=pixel_size,
                                    overwrite=overwrite, channel_axis=channel_axis, options=segment_options))
    report = BatchReport(reports, out_dir, summary_path, rle_path)
    if rle_path is not None:
        from nucseg.rle import write_submission_csv

        write_submission_csv(labels_of_report(report), rle_path, overwrite=overwrite)
    report.seconds = time.perf_counter() - started
    write_summary_csv(report, summary_path, overwrite=True)
    return report


def check_batch_options(segment_options: Mapping[str, Any], *, pixel_size: float | None) -> None:
    """Reject unknown segment options (TypeError) and a non-positive pixel size (InputError)."""
    unknown = sorted(set(segment_options) - set(_SEGMENT_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected segment option(s) {', '.join(unknown)}")
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise InputError(None, f"pixel size must be a positive number of microns, got {pixel_size}")


def _segment_one(
    image: ImageInput,
    out_dir: Path,
    model: Model,
    *,
    overlay: bool,
    measure: bool,
    pixel_size: float | None,
    overwrite: bool,
    channel_axis: int | None,
    options: Mapping[str, Any],
) -> ImageReport:
    from nucseg.io import read_image, write_labels

    started = time.perf_counter()
    paths = output_paths(out_dir, image.name, overlay=overlay, measure=measure)
    existing = [path for path in paths.values() if path.exists()]
    if existing and not overwrite:
        return ImageReport(image.name, image.path, "skipped",
                           error=f"{existing[0]} exists (use --overwrite to replace it)")
    written: list[Path] = []
    try:
        pixels = read_image(image.path, channel_axis=channel_axis)
        scale = None
        if isinstance(model, NetworkModel):
            result = model.segment(pixels, return_probabilities=True, **options)
            labels, scale = result.labels, result.scale
            del result  # the probabilities are not needed further
        else:
            labels = model.segment(pixels, **options)
        written.append(write_labels(paths["labels"], labels, overwrite=overwrite))
        if overlay:
            from nucseg.io import write_png
            from nucseg.visualize import outline_overlay

            written.append(write_png(paths["overlay"], outline_overlay(pixels, labels), overwrite=overwrite))
        if measure:
            from nucseg.measure import measure_nuclei, write_measurements_csv

            table = measure_nuclei(labels, _intensity_channels(pixels, image.path), pixel_size=pixel_size)
            written.append(write_measurements_csv(table, paths["nuclei"], overwrite=overwrite))
    except Exception as exc:  # one bad image must not stop the batch; the reason is reported
        for path in written:  # a failed image leaves no partial set of outputs
            path.unlink(missing_ok=True)
        return ImageReport(image.name, image.path, "failed", seconds=time.perf_counter() - started,
                           error=describe_failure(exc, image.path))
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return ImageReport(image.name, image.path, "ok", nuclei=int(areas.size),
                       mean_area=float(areas.mean()) if areas.size else 0.0, scale=scale,
                       seconds=time.perf_counter() - started, outputs=written)


def segment_file(
    image: ImageInput,
    out_dir: str | Path,
    *,
    model: Model,
    overlay: bool = False,
    measure: bool = False,
    pixel_size: float | None = None,
    overwrite: bool = False,
    channel_axis: int | None = None,
    **segment_options: Any,
) -> ImageReport:
    """Segment one image file and write its outputs, as :func:`segment_files` does for each image.

    Never raises for a bad image: the returned report says ``failed`` and
    why (``skipped`` if an output exists and not ``overwrite``). Used by
    :func:`nucseg.distributed.segment_many` on Dask workers.
    """
    return _segment_one(image, Path(out_dir), model, overlay=overlay, measure=measure, pixel_size=pixel_size,
                        overwrite=overwrite, channel_axis=channel_axis, options=segment_options)


def _intensity_channels(image: np.ndarray, path: Path) -> np.ndarray:
    """The image channels to measure intensities on: a PNG's alpha channel is dropped."""
    if image.ndim == 3 and image.shape[2] in (2, 4) and path.suffix.lower() == ".png":
        return image[:, :, :-1]
    return image


def describe_failure(exc: BaseException, path: Path) -> str:
    """One line that says why ``path`` failed: the error's own message, led by the path when it names none."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, NucsegError):
        return message if getattr(exc, "path", None) is not None else f"{path}: {message}"
    if isinstance(exc, MemoryError):
        return f"{path}: out of memory (try a smaller --tile-size)"
    return f"{path}: {type(exc).__name__}: {message}" if message else f"{path}: {type(exc).__name__}"


def labels_of_report(report: BatchReport) -> Iterator[tuple[str, np.ndarray]]:
    """(name, labels) of every image with a label image, read back one at a time."""
    from nucseg.io import read_labels

    for image in report.images:
        path = output_paths(report.out_dir, image.name)["labels"]
        if image.status in ("ok", "skipped") and path.is_file():
            yield image.name, read_labels(path)


def write_summary_csv(report: BatchReport, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write one row per image (see :data:`SUMMARY_COLUMNS`) as CSV, atomically."""
    with atomic_write(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(SUMMARY_COLUMNS)
            for image in report.images:
                writer.writerow([
                    image.name,
                    str(image.path),
                    image.status,
                    "" if image.nuclei is None else image.nuclei,
                    "" if image.mean_area is None else f"{image.mean_area:.1f}",
                    "" if image.scale is None else f"{image.scale:.3f}",
                    f"{image.seconds:.3f}",
                    image.error,
                ])
    return Path(path)

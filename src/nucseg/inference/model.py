"""Models: load one, and segment one image with it (numpy in, a result out).

::

    import nucseg

    model = nucseg.load_model()               # the shipped default model, "nuclei"
    result = model.segment(image)             # SegmentationResult
    result.labels                             # (H, W) int32, 0 background, 1..N nuclei

:func:`load_model` accepts a model folder (see :mod:`nucseg.models.folder`) or a
registered name (:mod:`nucseg.models.registry`): ``"nuclei"`` (the default,
trained on fluorescence and H&E), ``"dsb2018"`` (trained on the DSB2018 data
alone) or ``"classical"`` (the Otsu / distance-transform watershed baseline,
no network). Images go in raw, in
any dtype and with any usual channel layout; they are normalized exactly as
the model's training images were
(:func:`nucseg.preprocess.normalize.prepare_image` with the model's settings).

A network model runs through ONNX Runtime on CPU from the ONNX graph in its
folder, without importing torch; torch is loaded only for the torch
backend, a GPU, or a model folder that holds no ONNX graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.datasets.kinds import IMAGE_KINDS, raw_image_kind
from nucseg.errors import ModelError, require
from nucseg.inference import quality, sizing
from nucseg.inference.base import check_image, Model, SegmentationResult
from nucseg.inference.classical import ClassicalModel
from nucseg.inference.options import PostprocessOverrides, SegmentOptions
from nucseg.inference.runners import ModelRunners, Runner
from nucseg.inference.sizing import AUTO_DIAMETER
from nucseg.models.folder import ModelConfig, read_model_config, verify_weights
from nucseg.models.registry import DEFAULT_MODEL, REGISTERED_MODELS, resolve_model_path
from nucseg.postprocess.measure import size_factor
from nucseg.postprocess.watershed import instances_from_probabilities, PostprocessConfig
from nucseg.preprocess.normalize import normalize_with_range, percentile_range, prepare_image, to_channels


@dataclass(frozen=True, eq=False)  # eq=False: the intensity range holds arrays
class _NetworkPass:
    """How one network pass runs (the run options of :meth:`NetworkModel.probabilities`): tiling, flips,
    backend, the intensity range of a larger image, a progress callback."""

    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    tta: bool = False
    backend: str | None = None
    intensity_range: tuple[np.ndarray, np.ndarray] | None = None
    on_tile: Callable[[int, int], None] | None = None

    @classmethod
    def of(
        cls,
        options: SegmentOptions,
        intensity_range: tuple[np.ndarray, np.ndarray] | None,
        on_tile: Callable[[int, int], None] | None,
    ) -> _NetworkPass:
        """The pass that ``options`` ask for (tiling, flips, backend), with a range and callback of the call."""
        tile_size, overlap, batch_size = options.tiling()
        return cls(
            tile_size=tile_size,
            overlap=overlap,
            batch_size=batch_size,
            tta=options.tta,
            backend=options.backend,
            intensity_range=intensity_range,
            on_tile=on_tile,
        )


def _kind_if_any(image: np.ndarray) -> str | None:
    """:func:`nucseg.datasets.kinds.raw_image_kind` of a raw image; None for one of other than 1, 3 or 4 channels."""
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        return None
    return raw_image_kind(image)


class NetworkModel(Model):
    """A trained network with its configuration (see :mod:`nucseg.models.folder`).

    Parameters
    ----------
    config
        The model folder's configuration.
    path
        The model folder.
    name
        Name to report (default: the config's name, or the folder's name).
    device
        Where the torch network runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``);
        the ONNX Runtime backend always runs on CPU.
    """

    def __init__(self, config: ModelConfig, path: str | Path, *, name: str | None = None, device: str = "cpu"):
        self.config = config
        self.path = Path(path)
        self.name = name or config.name or self.path.name
        self.device = device
        self.has_network = True
        self.normalization = config.normalization
        self.resize_to = config.resize_to
        try:
            self.postprocess_config = PostprocessConfig.from_dict(config.postprocess)
            self.postprocess_by_kind = {
                kind: PostprocessConfig.from_dict(settings) for kind, settings in config.postprocess_by_kind.items()
            }
        except (TypeError, ValueError, AttributeError) as exc:
            raise ModelError(self.path, f"invalid postprocess settings in config.json ({exc})") from None
        unknown = sorted(set(self.postprocess_by_kind) - set(IMAGE_KINDS))
        if unknown:
            raise ModelError(
                self.path,
                f"postprocess_by_kind in config.json names unknown image kinds "
                f"{', '.join(unknown)}; known: {', '.join(IMAGE_KINDS)}",
            )
        self._runners = ModelRunners(self.path, config, device)

    @property
    def network(self):
        """The torch network (``torch.nn.Module``) in eval mode on :attr:`device`, loaded on first use."""
        return self._runners.network

    @property
    def training_diameter(self) -> float | None:
        """Median nucleus diameter (pixels) of the training images, if the model records it."""
        value = self.config.median_diameter
        return None if value is None else float(value)

    def default_backend(self) -> str:
        """``"torch"`` on a GPU; on CPU ``"onnxruntime-int8"`` when the folder holds an int8 graph, else
        :data:`~nucseg.inference.runners.DEFAULT_CPU_BACKEND`."""
        return self._runners.default_backend()

    @property
    def has_int8_graph(self) -> bool:
        """Whether the model folder holds an int8 ONNX graph (``network.int8.onnx``)."""
        return self._runners.has_int8_graph

    def runner(self, backend: str | None = None) -> Runner:
        """The callable that runs the network on a batch of tiles, cached per backend
        (:class:`~nucseg.inference.runners.ModelRunners`)."""
        return self._runners.runner(backend, threads=self._threads)

    def prepare(self, *, backend: str | None = None) -> None:
        self.runner(backend)

    def segments_side_by_side(self, *, backend: str | None = None) -> bool:
        return (backend or self.default_backend()) != "torch"

    def fixed_scale(self, options: SegmentOptions) -> float | None:
        """The resize factor of ``options``' scale, or of a typical nucleus diameter in pixels.

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
            A diameter in microns (an array has no pixel size), or a scale for
            a model that resizes every image to a fixed size.
        ModelError
            A numeric ``diameter`` for a model that records no training diameter.
        """
        scale, diameter = options.scale, options.diameter
        if options.microns is not None:
            raise ValueError(
                f"diameter {diameter!r} is in microns: give it in pixels (microns divided by the pixel "
                "size in microns), or segment files with nucseg.segment_files, which reads the pixel "
                "size from the file"
            )
        if diameter == AUTO_DIAMETER:
            if scale is None:
                return None if self.training_diameter is not None and self.config.resize_to is None else 1.0
        elif diameter is not None:
            if self.training_diameter is None:
                raise ModelError(
                    self.path,
                    "the model records no nucleus diameter of its training images, "
                    "so diameter cannot be used; give a scale factor instead",
                )
            scale = self.training_diameter / diameter
        if scale is None:
            return 1.0
        if self.config.resize_to is not None and scale != 1.0:
            raise ValueError(
                f"the model resizes every image to {self.config.resize_to} x {self.config.resize_to} "
                "pixels itself; scale and diameter do not apply"
            )
        return float(scale)

    def check_options(self, options: SegmentOptions) -> None:
        self.fixed_scale(options)

    def postprocess_for(self, image: np.ndarray | None = None) -> PostprocessConfig:
        """The model's post-processing settings for ``image``: those of its kind, if the model has them.

        Parameters
        ----------
        image : ndarray, shape (H, W) or (H, W, C), optional
            Raw image (:func:`nucseg.datasets.kinds.raw_image_kind` tells its kind);
            None, or an image of other than 1, 3 or 4 channels (which has no
            kind): the general settings.
        """
        if image is None or not self.postprocess_by_kind:
            return self.postprocess_config
        return self._settings_for_kind(_kind_if_any(image))

    def _settings_for_kind(self, kind: str | None) -> PostprocessConfig:
        return self.postprocess_by_kind.get(kind, self.postprocess_config) if kind else self.postprocess_config

    def _postprocess_config(self, overrides: PostprocessOverrides, kind: str | None = None) -> PostprocessConfig:
        return overrides.apply(self._settings_for_kind(kind))

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
        on_tile: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Class probabilities of a raw image, ``(C, H, W)`` float32; options as in :meth:`segment`."""
        run = _NetworkPass(
            tile_size=tile_size,
            overlap=overlap,
            batch_size=batch_size,
            tta=tta,
            backend=backend,
            intensity_range=intensity_range,
            on_tile=on_tile,
        )
        return self._checked_probabilities(check_image(image), scale, run)

    def _checked_probabilities(self, image: np.ndarray, scale: float, run: _NetworkPass) -> np.ndarray:
        """:meth:`probabilities` of an image :func:`check_image` has passed, run as ``run`` says.

        The whole image's check holds for its parts: a centre crop is not
        checked again, nor refused as a composite on its own.
        """
        from nucseg.inference.tiling import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, predict_rescaled

        if run.intensity_range is None:
            prepared = prepare_image(image, self.config.normalization)
        else:  # the percentiles of the larger image that ``image`` is a part of
            channels = to_channels(image, self.config.normalization.channels)
            prepared = normalize_with_range(channels, *run.intensity_range)
        return predict_rescaled(
            self.runner(run.backend),
            prepared,
            scale=scale,
            resize_to=self.config.resize_to,
            tile_size=run.tile_size or DEFAULT_TILE_SIZE,
            overlap=DEFAULT_OVERLAP if run.overlap is None else run.overlap,
            batch_size=run.batch_size or DEFAULT_BATCH_SIZE,
            tta=run.tta,
            on_tile=run.on_tile,
        )

    def segment(
        self,
        image: np.ndarray,
        options: SegmentOptions | None = None,
        *,
        intensity_range: tuple[np.ndarray, np.ndarray] | None = None,
        on_tile: Callable[[int, int], None] | None = None,
        **keywords: Any,
    ) -> SegmentationResult:
        """Find the nuclei of one raw image.

        Parameters
        ----------
        image : ndarray, shape (H, W) or (H, W, C)
            Raw image, any dtype, any size, channels last; gray, or 8-bit RGB
            or RGBA (alpha dropped). Normalized as in training.
        options
            Every setting below at once (:class:`~nucseg.inference.options.SegmentOptions`);
            keyword options replace its values. Options that describe files
            (``channel_axis``, ``axes``, ``level``) are refused for an array.
        tile_size
            Side of the square tiles in pixels, a multiple of 32 (default
            :data:`nucseg.inference.tiling.DEFAULT_TILE_SIZE`). Larger tiles are a
            little faster and need more memory.
        overlap
            Overlap of neighbouring tiles in pixels (default
            :data:`nucseg.inference.tiling.DEFAULT_OVERLAP`).
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
            :data:`nucseg.postprocess.measure.AUTO_SCALE_TOLERANCE`, the image is run
            again at the factor that matches them (within
            :data:`nucseg.postprocess.measure.AUTO_SCALE_LIMITS`; see
            :meth:`estimate_scale`). That second pass costs ``factor ** 2``
            times the first. A number: the typical nucleus diameter in
            pixels, which sets the factor directly (needs a model that records
            its training diameter). None: native resolution.
        backend
            ``"torch"`` or ``"onnxruntime"`` (CPU); None picks the faster one
            for the device (:meth:`default_backend`).
        postprocess
            Settings of :class:`nucseg.postprocess.watershed.PostprocessConfig` that
            replace the model's, e.g. ``{"min_size": 30}``
            (:class:`~nucseg.inference.options.PostprocessOverrides`).
        intensity_range
            Per-channel intensities ``(low, high)``, arrays of shape
            (channels,), that map to 0 and 1 instead of the image's own
            percentiles: for blocks of a larger image, normalized alike
            (:mod:`nucseg.batch.blockwise`).
        on_tile
            Called as ``on_tile(tiles done, tiles in all)`` after every
            network call of each pass (automatic sizing runs two), for
            progress reports on large images.
        channel
            The channel that shows the nuclei, counted from 1 (as Fiji
            counts), of a multi-channel image. Needed for every
            multi-channel image but 8-bit RGB(A): a 16-bit or float image of
            3 or 4 channels is refused without it, never taken as colour.

        Returns
        -------
        SegmentationResult
            ``labels`` (H, W) int32, 0 background, nuclei 1..N; the
            probabilities they were built from; the factor the network ran at.

        Raises
        ------
        TypeError
            A keyword that is no option.
        ValueError
            An option that cannot be right
            (:class:`~nucseg.inference.options.OptionsError`), or that this
            model cannot honour, or an image as :func:`check_image` refuses.
        """
        options = SegmentOptions.for_array(options, **keywords)
        factor = self.fixed_scale(options)
        image = check_image(image, channel=options.channel)
        kind = _kind_if_any(image)
        post_config = self._postprocess_config(options.postprocess, kind)
        run = _NetworkPass.of(options, intensity_range, on_tile)
        estimate = None
        if factor is None:
            estimate, run = self._size(image, post_config, run)
            factor = estimate.factor
        if estimate is not None and estimate.first_pass is not None and factor == 1.0:
            result = estimate.first_pass
        else:
            result = self._segment_at(image, factor, post_config, run)
        if estimate is not None:
            result.size_estimate = dataclasses.replace(estimate, first_pass=None)
        result.image_kind = kind
        return result

    def quality_calibration(self) -> quality.QualityCalibration | None:
        """The model's fitted quality model (``quality`` in its ``config.json``), or None."""
        return quality.QualityCalibration.from_dict(self.config.quality) if self.config.quality else None

    def assess_quality(self, image: np.ndarray, result: SegmentationResult) -> quality.Quality:
        """The quality estimate of ``result``, a segmentation of ``image`` (:mod:`nucseg.inference.quality`).

        Not part of :meth:`segment` (about 5 % of its time), which tuning,
        evaluation and block-wise runs call without needing it.
        """
        from nucseg.models.outputs import output_layout

        calibration = self.quality_calibration()
        clipped = result.size_estimate is not None and result.size_estimate.clipped
        kind = result.image_kind if result.image_kind is not None else raw_image_kind(image)
        features = quality.quality_features(
            result.labels,
            result.probabilities,
            image_kind=kind,
            training_diameter=self.training_diameter,
            sizing_clipped=clipped,
            training_kinds=calibration.training_kinds if calibration else (),
            classes=output_layout(self.config.target).classes,
            image=image,
        )
        return quality.assess(features, calibration, image_kind=kind)

    def estimate_scale(
        self,
        image: np.ndarray,
        options: SegmentOptions | None = None,
        *,
        intensity_range: tuple[np.ndarray, np.ndarray] | None = None,
        **keywords: Any,
    ) -> float:
        """The resize factor that automatic sizing (``diameter="auto"``) picks for ``image``.

        See :mod:`nucseg.inference.sizing`. Block-wise segmentation estimates
        the factor once per image this way (on its centre block), so that every
        block of the image runs at the same factor.

        Parameters
        ----------
        image : ndarray, shape (H, W) or (H, W, C)
            Raw image, as for :meth:`segment`.
        options, intensity_range, **keywords
            As for :meth:`segment`; the sizing options (``scale``, ``diameter``) are not used.
        """
        return self.estimate_size(image, options, intensity_range=intensity_range, **keywords).factor

    def estimate_size(
        self,
        image: np.ndarray,
        options: SegmentOptions | None = None,
        *,
        intensity_range: tuple[np.ndarray, np.ndarray] | None = None,
        **keywords: Any,
    ) -> sizing.SizeEstimate:
        """What automatic sizing finds on ``image``: the factor, the diameter measured, whether it was clipped.

        Options as for :meth:`estimate_scale`; the estimate holds no first pass.
        """
        options = SegmentOptions.for_array(options, **keywords)
        image = check_image(image, channel=options.channel)
        post_config = self._postprocess_config(options.postprocess, _kind_if_any(image))
        estimate, _ = self._size(image, post_config, _NetworkPass.of(options, intensity_range, None))
        return dataclasses.replace(estimate, first_pass=None)

    def _size(
        self, image: np.ndarray, post_config: PostprocessConfig, run: _NetworkPass
    ) -> tuple[sizing.SizeEstimate, _NetworkPass]:
        """Automatic sizing's first pass, and how the pass after it runs.

        When sizing segments the centre only, the crop is normalized as the
        whole image is, and the returned pass gains that intensity range, so that the
        second pass reuses it instead of computing the same percentiles again.
        """
        if run.intensity_range is None and sizing.sized_on_crop(image):
            run = dataclasses.replace(run, intensity_range=self._checked_intensity_range(image))
        estimate = sizing.estimate_factor(
            image, lambda part: self._segment_at(part, 1.0, post_config, run), self.training_diameter
        )
        return estimate, run

    def intensity_range(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel intensities of ``image`` that normalization maps to 0 and 1, shape (channels,) each.

        The model's normalization percentiles of the image after channel
        conversion; pass them as ``intensity_range`` to segment a part of
        ``image`` normalized as the whole is.
        """
        return self._checked_intensity_range(check_image(image))

    def _checked_intensity_range(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        normalization = self.config.normalization
        return percentile_range(
            to_channels(image, normalization.channels),
            low=normalization.low_percentile,
            high=normalization.high_percentile,
        )

    def scale_for_labels(self, labels: np.ndarray) -> float:
        """Resize factor that brings the nuclei of ``labels`` to the training diameter.

        :func:`nucseg.postprocess.measure.size_factor` with the model's
        training diameter: 1.0 when ``labels`` holds no nucleus or the model
        records no diameter.
        """
        return size_factor(labels, self.training_diameter)

    def _segment_at(
        self, image: np.ndarray, factor: float, post_config: PostprocessConfig, run: _NetworkPass
    ) -> SegmentationResult:
        probabilities = self._checked_probabilities(image, factor, run)
        labels = instances_from_probabilities(probabilities, post_config, scale=factor)
        return SegmentationResult(labels, probabilities, factor)


def load_model(name_or_path: str | Path | None = None, *, device: str = "cpu", threads: int | None = None) -> Model:
    """Load a segmentation model by registered name or model folder.

    Parameters
    ----------
    name_or_path
        ``"nuclei"`` (the default), ``"dsb2018"`` (trained on DSB2018 alone),
        ``"classical"`` (the baseline without a network), or the path of a model folder
        written by ``nucseg train``. None means :data:`DEFAULT_MODEL`. A string
        equal to a registered name is that name; write ``./dsb2018`` for a
        folder of that name.
    device
        ``"cpu"`` (the default: ONNX Runtime, no torch needed), ``"cuda"``,
        ``"cuda:N"`` or ``"auto"`` (a GPU if there is one; these need torch).
    threads
        CPU threads of each network call on CPU (ONNX Runtime's intra-op
        threads); None: every core this process may run on. See also
        :meth:`~nucseg.inference.base.Model.threads_per_call`.

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
    config, weights_sha256 = read_model_config(path)
    verify_weights(path, weights_sha256)
    if device != "cpu":
        require("torch", purpose=f"device {device!r}")
        from nucseg.models.networks import select_device

        device = str(select_device(device))
    model = NetworkModel(config, path, name=name, device=device)
    model._threads = threads
    if device != "cpu":
        model.network  # noqa: B018 - loads the network now, so that a bad device fails here
    return model

"""What every model shares: the :class:`Model` interface and the :class:`SegmentationResult` it returns.

:mod:`nucseg.inference.model` holds the models themselves and :func:`~nucseg.inference.model.load_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.datasets.kinds import composite_evidence
from nucseg.errors import InputError
from nucseg.inference import quality, sizing
from nucseg.inference.options import SegmentOptions
from nucseg.io.channels import choose_channel
from nucseg.io.pixels import usable_pixels
from nucseg.preprocess.normalize import NormalizationConfig


#: More channels than this on an array's last axis is taken for a stack of planes given as (Z, H, W).
MAX_CHANNELS = 16


@dataclass
class SegmentationResult:
    """What :meth:`Model.segment` returns.

    Attributes
    ----------
    labels : ndarray of int32, shape (H, W)
        0 background, nuclei 1..N.
    probabilities : ndarray of float32, shape (C, H, W), or None
        Softmax class probabilities at the image's resolution (C = 3:
        background, interior, boundary; C = 2: background, nucleus; C = 4:
        the three classes, then the predicted distance map, see
        :mod:`nucseg.models.outputs`); None for a model without a network.
    scale
        Resize factor the network ran at (1.0: native resolution); None for
        a model without a network.
    size_estimate
        What automatic sizing found (:class:`nucseg.inference.sizing.SizeEstimate`),
        when it ran.
    image_kind
        The image's kind (:func:`nucseg.datasets.kinds.raw_image_kind`), when
        the model told it (to choose its settings), so that it is told once.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    scale: float | None = None
    size_estimate: sizing.SizeEstimate | None = None
    image_kind: str | None = None


class Model:
    """A segmentation model: raw image in, :class:`SegmentationResult` out.

    Get one from :func:`load_model`. Subclasses: :class:`NetworkModel`,
    :class:`ClassicalModel`.

    Attributes
    ----------
    name
        Registered name, or the model folder's name.
    path
        The model folder, or None for the classical baseline.
    has_network
        Whether a network runs (and so ``scale``, ``diameter`` and automatic sizing apply).
    normalization
        How the model normalizes raw images (None: the model adapts to each
        image itself). Block-wise segmentation normalizes every block with the
        whole image's percentiles when this is set.
    resize_to
        Square side every image is resized to before the network, or None.
    """

    name: str
    path: Path | None
    has_network: bool = False
    normalization: NormalizationConfig | None = None
    resize_to: int | None = None
    _threads: int | None = None

    def segment(
        self,
        image: np.ndarray,
        options: SegmentOptions | None = None,
        *,
        intensity_range: tuple[np.ndarray, np.ndarray] | None = None,
        on_tile: Callable[[int, int], None] | None = None,
        **keywords: Any,
    ) -> SegmentationResult:
        """Segment one raw image; see :meth:`NetworkModel.segment`."""
        raise NotImplementedError

    def check_options(self, options: SegmentOptions) -> None:
        """Raise ``ValueError`` or :class:`ModelError` for valid options that this model cannot honour."""
        raise NotImplementedError

    def prepare(self, *, backend: str | None = None) -> None:
        """Start what :meth:`segment` needs (a network backend), so that a failure shows once, up front."""

    @contextmanager
    def threads_per_call(self, threads: int | None) -> Iterator[None]:
        """Within the block, each network call uses ``threads`` CPU threads (ONNX Runtime's intra-op threads).

        None: every core this process may run on (the default). One thread
        each is right for images segmented side by side in threads
        (:meth:`segments_side_by_side`).
        """
        previous, self._threads = self._threads, threads
        try:
            yield
        finally:
            self._threads = previous

    def segments_side_by_side(self, *, backend: str | None = None) -> bool:
        """Whether a process gains by segmenting several images at once in threads, one core each.

        True where the work is single-threaded code that releases the GIL (the
        classical baseline, and ONNX Runtime on CPU); not for torch, which
        spreads one call over its own threads, or a GPU.
        """
        return True

    def fixed_scale(self, options: SegmentOptions) -> float | None:
        """The resize factor ``options`` fix for every image; None: automatic sizing, or no network."""
        return None

    def estimate_scale(self, image: np.ndarray, options: SegmentOptions | None = None, **keywords: Any) -> float | None:
        """The factor automatic sizing would pick for ``image`` (None for a model without a network)."""
        return None

    def estimate_size(
        self, image: np.ndarray, options: SegmentOptions | None = None, **keywords: Any
    ) -> sizing.SizeEstimate | None:
        """What automatic sizing finds on ``image``, as :meth:`estimate_scale` (None for a model without a network)."""
        return None

    def assess_quality(self, image: np.ndarray, result: SegmentationResult) -> quality.Quality | None:
        """How far to trust ``result``, a :meth:`segment` of ``image`` (None for a model without a network)."""
        return None

    def quality_calibration(self) -> quality.QualityCalibration | None:
        """The fitted quality model that scores :meth:`assess_quality`'s features (None without one)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, path={str(self.path) if self.path else None!r})"


def check_image(image: np.ndarray, *, channel: int | None = None) -> np.ndarray:
    """``image`` as an array that can be segmented, with the nuclear ``channel`` chosen.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Channels last.
    channel
        The channel that shows the nuclei, counted from 1, of a multi-channel
        image; needed unless the image is 8-bit RGB(A) (taken as colour, as
        for files: :func:`nucseg.io.channels.is_photographic`).

    Returns
    -------
    ndarray, shape (H, W) or (H, W, 3 or 4)

    Raises
    ------
    ValueError
        Not an image of numbers of such a shape; a colour image that looks
        like merged fluorescence channels, without ``channel``
        (:class:`CompositeImageError`); NaN or infinite pixels
        (:func:`nucseg.io.pixels.usable_pixels`, which also turns booleans
        into uint8 0/255); a multi-channel image that
        is not 8-bit RGB(A), without ``channel``; a ``channel`` out of range.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got {image.shape}")
    try:
        image = usable_pixels(image)
    except InputError as exc:  # an array, not a file: a ValueError as for its shape
        raise ValueError(f"image: {exc.problem}") from None
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, (int, np.integer))):
        raise ValueError(f"channel must be a channel number counted from 1, got {channel!r}")
    if channel is None and image.ndim == 3 and image.shape[2] > MAX_CHANNELS:
        raise ValueError(
            f"image of shape {image.shape} has {image.shape[2]} channels: channels go last, (H, W, C); "
            "segment the planes of a stack (Z, H, W) one by one, or with nucseg.segment_files"
        )
    try:
        image = choose_channel(None, image, 2, channel, None, rgb_samples=True, option="channel=").image
    except InputError as exc:  # an array, not a file: a ValueError as for its shape
        raise ValueError(exc.problem) from None
    if channel is None and image.ndim == 3:
        _refuse_composite(image)
    return image


#: What the three channels of a colour image show as, for messages.
_COLOURS = ("red", "green", "blue")


class CompositeImageError(InputError, ValueError):
    """A colour image that looks like merged fluorescence channels, given without a channel.

    One line for the command line (an :class:`InputError`; the batch names
    the file), and a ``ValueError`` for arrays, as the other image checks.
    """


def _refuse_composite(image: np.ndarray) -> None:
    """Raise :class:`CompositeImageError` when ``image`` is a fluorescence composite
    (:func:`nucseg.datasets.kinds.composite_evidence`): its nuclear channel is never guessed."""
    evidence = composite_evidence(image)
    if evidence is None or not evidence.composite:
        return
    hint = evidence.nuclear_channel
    raise CompositeImageError(
        None,
        f"looks like a fluorescence composite (dark background: median "
        f"{evidence.background:.0%} of full scale; channels that do not co-vary as "
        f"stains do: correlation {evidence.correlation:.2f}), not an H&E or brightfield "
        "photograph; choose the channel that shows the nuclei with --channel N "
        f"(Python: channel=N); channel {hint + 1} ({_COLOURS[hint]}) looks the most "
        "like nuclei",
    )

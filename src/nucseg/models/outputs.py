"""What a network's output channels mean, by training target.

A network trained for a target outputs ``classes`` channels of class scores
(turned into probabilities by a softmax) followed, for the
``three_class_distance`` target, by one channel scoring the normalized
distance to the nucleus edge (turned into [0, 1] by a sigmoid). The runners,
the ONNX graph and training all turn raw outputs into these maps with
:func:`output_maps`, so the meaning of a channel is written down once.

``three_class``
    background, nucleus interior, nucleus boundary.
``binary``
    background, nucleus.
``three_class_distance``
    the three classes of ``three_class``, then the distance map: inside every
    nucleus the Euclidean distance to its edge divided by the largest such
    distance in that nucleus (1 at its centre, small at its rim and where it
    touches another nucleus), 0 on the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OutputLayout:
    """The output channels of a network trained for one target.

    Attributes
    ----------
    classes
        Leading channels that hold class scores (softmax over them).
    distance
        Whether one more channel holds the normalized distance map (sigmoid).
    """

    classes: int
    distance: bool = False

    @property
    def channels(self) -> int:
        """All output channels."""
        return self.classes + int(self.distance)

    @property
    def split_at(self) -> int | None:
        """The ``classes`` argument of :func:`output_maps`: None when every channel is a class."""
        return self.classes if self.distance else None


#: Output layout of every training target.
TARGETS: dict[str, OutputLayout] = {
    "three_class": OutputLayout(3),
    "binary": OutputLayout(2),
    "three_class_distance": OutputLayout(3, distance=True),
}


def output_layout(target: str) -> OutputLayout:
    """The :class:`OutputLayout` of ``target`` (a key of :data:`TARGETS`).

    Raises
    ------
    ValueError
        Unknown target.
    """
    try:
        return TARGETS[target]
    except KeyError:
        raise ValueError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}") from None


def output_maps(outputs: Any, classes: int | None) -> Any:
    """Probabilities (softmax) of the first ``classes`` channels, sigmoid of the others.

    Parameters
    ----------
    outputs : torch.Tensor, shape (N, C, H, W)
        Raw network outputs.
    classes
        Leading class channels; None: all are classes (``OutputLayout.split_at``).

    Returns
    -------
    torch.Tensor, shape (N, C, H, W)
    """
    import torch

    if classes is None:
        return torch.softmax(outputs, dim=1)
    return torch.cat([torch.softmax(outputs[:, :classes], dim=1), torch.sigmoid(outputs[:, classes:])], dim=1)

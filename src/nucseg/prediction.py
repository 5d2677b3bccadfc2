"""Running a network over whole images.

(Minimal version: whole-image inference with padding. Tiling with smooth
blending and the ONNX Runtime backend are being added.)
"""

from __future__ import annotations

import numpy as np
import torch

from nucseg.models import SIZE_DIVISOR


def predict_probabilities(network: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Class probabilities of a prepared image.

    Parameters
    ----------
    network
        A network from :mod:`nucseg.models` (eval mode is set here).
    image : ndarray of float32, shape (H, W, C)
        Normalized network input (see :func:`nucseg.preprocess.prepare_image`).

    Returns
    -------
    ndarray of float32, shape (n_classes, H, W)
        Softmax probabilities.
    """
    height, width = image.shape[:2]
    pad_y = (-height) % SIZE_DIVISOR
    pad_x = (-width) % SIZE_DIVISOR
    padded = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="reflect")
    network.eval()
    device = next(network.parameters()).device
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None].to(device)
        probabilities = torch.softmax(network(x), dim=1)[0, :, :height, :width]
    return probabilities.float().cpu().numpy()

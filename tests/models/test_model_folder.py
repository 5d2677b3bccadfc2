"""Tests of nucseg.models.folder: the model folder round trip and its one-line errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from nucseg.errors import ModelError
from nucseg.io.atomic import OutputExistsError
from nucseg.models.folder import (
    CONFIG_FILE,
    file_sha256,
    FORMAT_NAME,
    FORMAT_VERSION,
    load_model_folder,
    ModelConfig,
    ONNX_FILE,
    read_model_config,
    save_model,
    WEIGHTS_FILE,
)
from nucseg.models.networks import build_model
from nucseg.preprocess.normalize import NormalizationConfig


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**changes) -> ModelConfig:
    settings = dict(
        architecture="unet",
        architecture_options={"base_channels": 4, "depth": 2},
        out_channels=3,
        normalization=NormalizationConfig(low_percentile=2.0, high_percentile=99.0),
        postprocess={"min_size": 12},
        split={"train": ["a", "b"], "validation": ["c"]},
        validation={"dsb_score": 0.5, "epoch": 3},
        name="tiny",
    )
    settings.update(changes)
    return ModelConfig(**settings)


def trained_network(config: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """A network whose weights and batch-norm statistics differ from a fresh one."""
    torch.manual_seed(seed)
    network = build_model(
        config.architecture,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        **config.architecture_options,
    )
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
        network.train()
        network(torch.rand(4, 3, 32, 32) * 3)  # moves the running statistics
    return network.eval()


@pytest.fixture
def model_folder(tmp_path):
    config = tiny_config()
    network = trained_network(config)
    path = save_model(network, config, tmp_path / "model")
    return path, network, config


def one_line_error(function, *args, **kwargs) -> ModelError:
    with pytest.raises(ModelError) as caught:
        function(*args, **kwargs)
    assert "\n" not in str(caught.value)
    return caught.value


def test_round_trip_gives_identical_outputs(model_folder):
    path, network, config = model_folder
    assert sorted(os.listdir(path)) == [CONFIG_FILE, ONNX_FILE, WEIGHTS_FILE]
    loaded = load_model_folder(path)
    assert not loaded.network.training
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), network(x))
    assert loaded.path == path
    assert loaded.config.architecture == config.architecture
    assert loaded.config.architecture_options == config.architecture_options
    assert loaded.config.normalization == config.normalization
    assert (loaded.config.postprocess, loaded.config.split, loaded.config.validation) == (
        config.postprocess,
        config.split,
        config.validation,
    )
    assert loaded.config.format_version == FORMAT_VERSION and loaded.config.nucseg_version


@pytest.mark.slow
def test_round_trip_of_the_mobilenet_unet(tmp_path):
    config = ModelConfig(architecture="mobilenetv2_unet", out_channels=2, target="binary", resize_to=128)
    network = trained_network(config)
    loaded = load_model_folder(save_model(network, config, tmp_path / "seed"))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), network(x))
    assert loaded.config.resize_to == 128 and loaded.config.target == "binary"


def test_config_json_is_self_describing(model_folder):
    path, _, _ = model_folder
    document = json.loads((path / CONFIG_FILE).read_text())
    assert document["format"] == FORMAT_NAME and document["format_version"] == FORMAT_VERSION
    assert document["weights_sha256"] == file_sha256(path / WEIGHTS_FILE)
    assert document["normalization"] == {"low_percentile": 2.0, "high_percentile": 99.0, "channels": 3}
    config, checksum = read_model_config(path)
    assert checksum == document["weights_sha256"] and config.name == "tiny"


def test_save_replaces_atomically_and_refuses_without_overwrite(model_folder):
    path, _, config = model_folder
    other = trained_network(config, seed=1)
    save_model(other, config, path)
    assert sorted(os.listdir(path.parent)) == ["model"]  # no temporary folders left behind
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_model_folder(path).network(x), other(x))
    before = (path / WEIGHTS_FILE).read_bytes()
    with pytest.raises(OutputExistsError, match="exists"):
        save_model(trained_network(config, seed=2), config, path, overwrite=False)
    assert (path / WEIGHTS_FILE).read_bytes() == before


def test_missing_paths_and_non_model_folders(tmp_path):
    error = one_line_error(load_model_folder, tmp_path / "nowhere")
    assert error.path == tmp_path / "nowhere" and "model not found" in str(error)
    (tmp_path / "empty").mkdir()
    error = one_line_error(load_model_folder, tmp_path / "empty")
    assert error.path == tmp_path / "empty" and f"{CONFIG_FILE} is missing" in str(error)
    (tmp_path / "file.pt").write_bytes(b"not a folder")
    error = one_line_error(load_model_folder, tmp_path / "file.pt")
    assert error.path == tmp_path / "file.pt" and "not a model folder" in str(error)


def test_foreign_json_is_not_a_model(model_folder):
    path, _, _ = model_folder
    (path / CONFIG_FILE).write_text(json.dumps({"architectures": ["BertModel"]}))
    error = one_line_error(load_model_folder, path)
    assert error.path == path / CONFIG_FILE and "not a nucseg model config" in str(error)


@pytest.mark.parametrize("text", ['{"format": "nucseg-model", ', "", "\x00\x01binary", "[1, 2]"])
def test_corrupt_config_json(model_folder, text):
    path, _, _ = model_folder
    (path / CONFIG_FILE).write_text(text)
    error = one_line_error(load_model_folder, path)
    assert error.path == path / CONFIG_FILE
    assert str(error).startswith(f"{path / CONFIG_FILE}: ")


def test_invalid_config_values(model_folder):
    path, _, _ = model_folder
    document = json.loads((path / CONFIG_FILE).read_text())
    document["colour"] = "blue"
    (path / CONFIG_FILE).write_text(json.dumps(document))
    error = one_line_error(load_model_folder, path)
    assert error.path == path / CONFIG_FILE and "unknown keys colour" in str(error)


def test_unknown_architecture(model_folder):
    path, _, _ = model_folder
    document = json.loads((path / CONFIG_FILE).read_text())
    document["architecture"] = "vit_huge"
    (path / CONFIG_FILE).write_text(json.dumps(document))
    error = one_line_error(load_model_folder, path)
    assert error.path == path / CONFIG_FILE and "vit_huge" in str(error)


def test_newer_format_version(model_folder):
    path, _, _ = model_folder
    document = json.loads((path / CONFIG_FILE).read_text())
    document["format_version"] = FORMAT_VERSION + 1
    (path / CONFIG_FILE).write_text(json.dumps(document))
    error = one_line_error(load_model_folder, path)
    assert error.path == path / CONFIG_FILE
    assert f"version {FORMAT_VERSION + 1} is newer" in str(error) and "upgrade nucseg" in str(error)


def test_truncated_weights_fail_the_checksum(model_folder):
    path, _, _ = model_folder
    weights = path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-100])
    error = one_line_error(load_model_folder, path)
    assert error.path == weights and "checksum does not match" in str(error)
    # Without the checksum, the truncated file is still caught when it is parsed.
    error = one_line_error(load_model_folder, path, verify_checksum=False)
    assert error.path == weights and "corrupt weights file" in str(error)


def test_altered_weights_fail_the_checksum(model_folder):
    path, _, _ = model_folder
    weights = path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one changed byte in a tensor: still a valid safetensors file
    weights.write_bytes(bytes(data))
    error = one_line_error(load_model_folder, path)
    assert error.path == weights and "checksum does not match" in str(error)


def test_random_file_renamed_to_weights(model_folder):
    path, _, _ = model_folder
    weights = path / WEIGHTS_FILE
    weights.write_bytes(np.random.default_rng(0).bytes(5000))
    # Record the new file's checksum, so that it is the parser that must reject it.
    document = json.loads((path / CONFIG_FILE).read_text())
    document["weights_sha256"] = file_sha256(weights)
    (path / CONFIG_FILE).write_text(json.dumps(document))
    error = one_line_error(load_model_folder, path)
    assert error.path == weights and "corrupt weights file" in str(error)


def test_missing_weights(model_folder):
    path, _, _ = model_folder
    (path / WEIGHTS_FILE).unlink()
    error = one_line_error(load_model_folder, path)
    assert error.path == path and WEIGHTS_FILE in str(error)


def test_weights_of_another_architecture(model_folder, tmp_path):
    path, _, _ = model_folder
    wider = tiny_config(architecture_options={"base_channels": 8, "depth": 2})
    other = save_model(trained_network(wider), wider, tmp_path / "wider")
    # Put the wider network's weights (with a matching checksum) under the narrow network's config.
    document = json.loads((path / CONFIG_FILE).read_text())
    (path / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    document["weights_sha256"] = file_sha256(path / WEIGHTS_FILE)
    (path / CONFIG_FILE).write_text(json.dumps(document))
    error = one_line_error(load_model_folder, path)
    assert error.path == path / WEIGHTS_FILE and "do not fit architecture 'unet'" in str(error)
    assert "size mismatch" in str(error)


def test_an_older_folder_without_onnx_gets_its_graph_and_checksum(model_folder, tmp_path):
    import shutil

    from nucseg.models.folder import add_onnx_graph, onnx_path

    path, network, config = model_folder
    old = tmp_path / "old"
    shutil.copytree(path, old)
    (old / ONNX_FILE).unlink()
    assert onnx_path(old) is None
    written = add_onnx_graph(old)
    assert onnx_path(old) == written and written.read_bytes() == (path / ONNX_FILE).read_bytes()
    (old / ONNX_FILE).write_bytes(written.read_bytes()[:-10])  # damaged: the checksum no longer matches
    error = one_line_error(onnx_path, old)
    assert "ONNX graph does not match" in str(error)


def test_the_shipped_default_is_the_pretrained_network_with_half_weights():
    """``nuclei`` is the EfficientNet-Lite0 U-Net; its float16 weights load into the float32 network
    and agree with its float32 ONNX graph; the folder stays within 25 MB."""
    import onnxruntime

    from nucseg.models.registry import DEFAULT_MODEL, resolve_model_path

    pytest.importorskip("timm")
    folder = resolve_model_path(DEFAULT_MODEL)
    loaded = load_model_folder(folder)
    assert loaded.config.architecture == "efficientnet_lite0_unet"
    training = loaded.config.training  # stage 2 (configs/nuclei_stage2.yaml) went on from stage 1's ImageNet start
    assert training["encoder_weights"] == "imagenet" or training["init_from"] == DEFAULT_MODEL
    assert all(p.dtype == torch.float32 for p in loaded.network.parameters())
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 25 * 2**20
    x = np.random.default_rng(0).random((1, 3, 96, 128), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    graph = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        logits = loaded.network(torch.from_numpy(x))
        probabilities = torch.softmax(logits[:, : loaded.config.classes], dim=1).numpy()
    assert np.abs(graph[:, : loaded.config.classes] - probabilities).max() < 0.02


def test_the_former_default_stays_loadable_under_its_own_name():
    from nucseg.models.registry import resolve_model_path

    loaded = load_model_folder(resolve_model_path("nuclei_unet"))
    assert loaded.config.architecture == "unet" and loaded.config.name == "nuclei_unet"

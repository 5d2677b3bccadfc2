"""The BioImage Model Zoo export: the package passes bioimageio.core's own test, and nucseg loads it back."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

pytest.importorskip(
    "bioimageio.core", reason="the bioimageio extra is not installed (pip install 'nucseg[bioimageio]')"
)

from nucseg.cli import main as nucseg_main  # noqa: E402
from nucseg.datasets.locations import sample_image_paths  # noqa: E402
from nucseg.export.bioimageio import architecture_file_name, architecture_source, model_card  # noqa: E402
from nucseg.io.images import read_labels  # noqa: E402
from nucseg.models.folder import read_model_config  # noqa: E402
from nucseg.models.registry import DEFAULT_MODEL, resolve_model_path  # noqa: E402


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    out = tmp_path_factory.mktemp("bioimageio") / "default.zip"
    assert nucseg_main(["export", "--format", "bioimageio", "--out", str(out)]) == 0
    return out


def test_package_passes_the_bioimageio_test(package):
    from bioimageio.core import test_model

    summary = test_model(str(package))
    assert summary.status == "passed", summary.format()
    inference = [d for d in summary.details if "inference" in d.name]
    assert inference and all(d.status == "passed" for d in inference)  # every weight format ran the test input


def test_package_describes_the_models_input_preprocessing_and_output(package, tmp_path):
    import zipfile

    with zipfile.ZipFile(package) as bundle:
        names = set(bundle.namelist())
        rdf = yaml.safe_load(bundle.read("rdf.yaml"))
    assert {
        "config.json",
        "weights.safetensors",
        "network.onnx",
        "weights.onnx",
        "weights.torchscript",
        "weights.pt",
        architecture_file_name(loaded_architecture()),
        "README.md",
        "cover.png",
        "test_input.npy",
        "test_output.npy",
    } <= names
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    preprocessing = next(step for step in rdf["inputs"][0]["preprocessing"] if step["id"] == "scale_range")
    config, _ = read_model_config(resolve_model_path(DEFAULT_MODEL))
    assert preprocessing["kwargs"]["min_percentile"] == config.normalization.low_percentile
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["outputs"][0]["axes"][1]["channel_names"][:3] == ["background", "interior", "boundary"]


def test_segment_loads_the_package_back_with_the_same_labels(package, tmp_path):
    image = sample_image_paths()[0]
    assert nucseg_main(["segment", str(image), "--model", str(package), "--out", str(tmp_path / "pkg")]) == 0
    assert nucseg_main(["segment", str(image), "--out", str(tmp_path / "ref")]) == 0
    labels = read_labels(tmp_path / "pkg" / f"{image.stem}_labels.tif")
    assert labels.max() > 10 and np.array_equal(labels, read_labels(tmp_path / "ref" / f"{image.stem}_labels.tif"))


def test_architecture_source_stands_alone_and_matches_nucseg(tmp_path):
    import torch

    from nucseg.models.folder import load_model_folder
    from nucseg.models.onnx import WithOutputMaps

    namespace: dict = {}
    exec(compile(architecture_source(loaded_architecture()), "nucseg_unet.py", "exec"), namespace)  # noqa: S102 - our own source
    loaded = load_model_folder(resolve_model_path(DEFAULT_MODEL))
    standalone = namespace["NucsegNetwork"](
        loaded.config.in_channels,
        loaded.config.out_channels,
        **loaded.config.architecture_options,
        classes=loaded.config.classes,
    )
    reference = WithOutputMaps(loaded.network, loaded.config.classes).eval()
    standalone.load_state_dict(reference.state_dict())
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(standalone.eval()(x), reference(x), atol=1e-5)


def loaded_architecture() -> str:
    config, _ = read_model_config(resolve_model_path(DEFAULT_MODEL))
    return config.architecture


@pytest.mark.slow
def test_an_efficientnet_lite0_model_exports_and_passes_the_bioimageio_test(tmp_path):
    import torch
    from bioimageio.core import test_model

    from nucseg.models.folder import ModelConfig, save_model
    from nucseg.models.networks import build_model

    pytest.importorskip("timm")
    torch.manual_seed(0)
    network = build_model("efficientnet_lite0_unet").eval()
    folder = save_model(network, ModelConfig("efficientnet_lite0_unet", {}, name="lite0"), tmp_path / "lite0")
    out = tmp_path / "lite0.zip"
    assert nucseg_main(["export", "--format", "bioimageio", "--model", str(folder), "--out", str(out)]) == 0
    summary = test_model(str(out))
    assert summary.status == "passed", summary.format()
    import zipfile

    with zipfile.ZipFile(out) as bundle:
        rdf = yaml.safe_load(bundle.read("rdf.yaml"))
        assert "timm" in bundle.read("environment.yaml").decode()
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "NucsegNetwork"


def test_model_card_names_data_licences_and_post_processing():
    config, _ = read_model_config(resolve_model_path(DEFAULT_MODEL))
    card = model_card(config)
    assert "## Training data and licences" in card and "## Validation" in card and "marker_threshold" in card
    assert all(f'"{kind}"' in card for kind in config.postprocess_by_kind)  # the settings per image kind
    assert "at the scale the network ran at" in card  # what its sizes count
    plain = dataclasses.replace(config, postprocess_by_kind={}, postprocess={"min_size": 10})
    assert "image kind" not in model_card(plain) and "network ran at" not in model_card(plain)


def test_model_card_says_how_the_last_run_trained_and_from_which_weights():
    config, _ = read_model_config(resolve_model_path(DEFAULT_MODEL))
    stage_two = {**config.training, "init_from": "nuclei", "epochs": 24, "lr": 3e-4}
    from_imagenet = {**config.training, "init_from": None, "encoder_weights": "imagenet", "epochs": 40}
    cards = [model_card(dataclasses.replace(config, training=t)) for t in (stage_two, from_imagenet)]
    assert all("## Training\n" in card for card in cards)
    assert "at most 24 epochs" in cards[0] and "from the weights of the model `nuclei`" in cards[0]
    assert "at most 40 epochs" in cards[1] and "from ImageNet weights in the encoder" in cards[1]
    assert "## Training\n" not in model_card(dataclasses.replace(config, training={}))


def test_a_package_nucseg_did_not_write_is_refused_in_one_line(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "rdf.yaml").write_text("type: model\n")
    assert (
        nucseg_main(
            [
                "segment",
                str(sample_image_paths()[0]),
                "--model",
                str(tmp_path / "foreign"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        != 0
    )

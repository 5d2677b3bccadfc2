"""Tests of the maintainer scripts in ``tools/``: packaging the default model and deepening a U-Net."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from nucseg.datasets.layouts import load_dataset
from nucseg.postprocess.measure import median_nucleus_diameter
from nucseg.models.folder import load_model_folder, ModelConfig, save_model
from nucseg.models.networks import build_model

TOOLS = Path(__file__).parent.parent / "tools"
FIXTURES = Path(__file__).parent / "data" / "dsb2018"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def trained_looking_model(tmp_path) -> Path:
    """A depth-2 U-Net folder with a split, validation scores and tuned thresholds, but no median diameter."""
    torch.manual_seed(0)
    names = sorted(p.name for p in FIXTURES.iterdir())
    config = ModelConfig(
        "unet",
        {"base_channels": 4, "depth": 2},
        split={"train": names[:3], "validation": names[3:]},
        validation={"dsb_score": 0.5},
        postprocess={"foreground_threshold": 0.7},
    )
    return save_model(build_model("unet", base_channels=4, depth=2), config, tmp_path / "trained")


def test_package_default_model_names_the_copy_and_records_its_training_diameter(
    trained_looking_model, tmp_path, monkeypatch, capsys
):
    tool = load_tool("package_default_model")
    monkeypatch.setattr(tool, "package_models_dir", lambda: tmp_path / "package")
    (tmp_path / "package").mkdir()
    assert tool.main([str(trained_looking_model), "--name", "dsb2018", "--data", str(FIXTURES)]) == 0
    packaged = load_model_folder(tmp_path / "package" / "dsb2018")
    source = load_model_folder(trained_looking_model)
    train = load_dataset(FIXTURES, names=source.config.split["train"], cache_dir=False)
    assert packaged.config.name == "dsb2018"
    assert packaged.config.median_diameter == pytest.approx(median_nucleus_diameter([s.labels for s in train]))
    assert packaged.config.postprocess == source.config.postprocess  # thresholds kept, to be re-tuned
    assert (tmp_path / "package" / "dsb2018" / "weights.safetensors").read_bytes() == (
        trained_looking_model / "weights.safetensors"
    ).read_bytes()
    assert "median nucleus diameter" in capsys.readouterr().out


def test_deepen_model_writes_a_deeper_unet_without_the_old_scores(trained_looking_model, tmp_path, capsys):
    tool = load_tool("deepen_model")
    out = tmp_path / "deeper"
    assert tool.main([str(trained_looking_model), str(out)]) == 0
    deeper = load_model_folder(out)
    assert deeper.config.architecture_options == {"base_channels": 4, "depth": 3}
    assert deeper.config.validation == {} and deeper.config.postprocess != {"foreground_threshold": 0.7}
    source = load_model_folder(trained_looking_model).network.state_dict()
    copied = deeper.network.state_dict()
    assert all(torch.equal(source[key], copied[key]) for key in ("stem.0.weight", "stem.1.running_mean", "head.weight"))
    x = torch.rand(1, 3, 64, 64)
    assert deeper.network.eval()(x).shape == (1, 3, 64, 64)

    assert tool.main([str(trained_looking_model), str(out)]) == 2  # never overwrites
    assert "exists; give a new folder" in capsys.readouterr().err
    assert tool.main([str(tmp_path / "missing"), str(tmp_path / "other")]) == 2
    assert "deepen_model: error:" in capsys.readouterr().err and not (tmp_path / "other").exists()

"""The light install: segmenting needs no torch, and what needs torch says so in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FIXTURE = next((Path(__file__).parent / "data" / "dsb2018").glob("0007*/images/*.png"))

# Makes torch (and the other training packages) unimportable, as in an environment of `pip install nucseg`.
BLOCK_TRAINING_PACKAGES = """
import sys
BLOCKED = {"torch", "torchvision", "safetensors", "tensorboard", "onnx"}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Blocker())
from nucseg.cli import main
code = main(sys.argv[1:])
print("torch imported:", "torch" in sys.modules)
raise SystemExit(code)
"""


def run_without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TRAINING_PACKAGES, *args], capture_output=True, text=True)


def test_segment_runs_the_shipped_model_without_torch(tmp_path):
    done = run_without_torch("segment", str(FIXTURE), "--out", str(tmp_path), "--overlay", "--measure")
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout
    assert all(
        (tmp_path / f"{FIXTURE.stem}{suffix}").is_file() for suffix in ("_labels.tif", "_overlay.png", "_nuclei.csv")
    )


def test_what_needs_torch_says_which_extra_to_install(tmp_path):
    for args in (
        ["train", "--data", str(FIXTURE.parents[2]), "--out", str(tmp_path / "run")],
        ["export", "--out", str(tmp_path / "model.onnx")],
        ["segment", str(FIXTURE), "--out", str(tmp_path / "out"), "--backend", "torch"],
    ):
        done = run_without_torch(*args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert any("torch" in line and 'pip install "nucseg[train]"' in line for line in lines), done.stderr


def test_pack_checks_a_training_config_without_torch(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(f"model: unet\nmodel_options: {{depth: 3}}\ndatasets:\n  - {{path: '{FIXTURE.parents[2]}'}}\n")
    done = run_without_torch("pack", "--config", str(config), "--out", str(tmp_path / "packed"))
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout
    assert len(list((tmp_path / "packed").rglob("*.png"))) >= 2
    config.write_text(f"model: unet\nmodel_options: {{width: 3}}\ndatasets:\n  - {{path: '{FIXTURE.parents[2]}'}}\n")
    done = run_without_torch("pack", "--config", str(config), "--out", str(tmp_path / "again"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "unknown model_options for 'unet': width (allowed: base_channels, depth)" in done.stderr

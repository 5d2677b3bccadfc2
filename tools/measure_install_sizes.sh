#!/bin/bash
# The test extra's install size two ways, each in a fresh virtual environment (README, "CPU-only torch"):
# the default torch from PyPI (the CUDA build on Linux) and the CPU-only build installed first.
#   bash tools/measure_install_sizes.sh [CPU_TORCH_SOURCE]
# CPU_TORCH_SOURCE: what pip installs for the CPU-only torch, by default PyTorch's index
# ("torch torchvision --index-url https://download.pytorch.org/whl/cpu"); a local wheel path works too.
set -euo pipefail
cpu_torch=${1:-"torch torchvision --index-url https://download.pytorch.org/whl/cpu"}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
git clone -q "$repo" "$work/nucseg"
python -m venv "$work/cuda" && "$work/cuda/bin/pip" install -q -e "$work/nucseg[test]"
python -m venv "$work/cpu" && "$work/cpu/bin/pip" install -q $cpu_torch && "$work/cpu/bin/pip" install -q -e "$work/nucseg[test]"
for env in cuda cpu; do
  torch=$("$work/$env/bin/python" -c "import importlib.metadata as m; print(m.version('torch'))")
  nvidia=$(du -sm "$work/$env"/lib/python*/site-packages/nvidia 2>/dev/null | cut -f1 || true)
  echo "$env: $(du -sm "$work/$env" | cut -f1) MB, torch $torch, nvidia packages ${nvidia:-0} MB"
done
rm -rf "$work"

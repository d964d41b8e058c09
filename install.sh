#!/usr/bin/env bash
# Installs crayonbox with every extra and the dev tools on a fresh Debian machine: system packages (emoji font,
# Unicode data, Chromium for the browser test) and a virtual environment in .venv with the CPU build of torch.
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends fonts-noto-color-emoji unicode-data libfribidi0 \
  chromium >/dev/null
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch first, as the CPU build: on Linux PyPI's torch is the multi-GB CUDA build. pip takes the CPU index's
# "2.13.0+cpu" over PyPI's "2.13.0" (a local version sorts above its public one). TORCH_VERSION is the one the
# tests run with; TORCH_INDEX may name another build's index. A torch already in .venv is kept.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==${TORCH_VERSION:-2.13.0}" \
  --extra-index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
.venv/bin/pip install -q -e '.[all,dev]'
# open_clip for the lab's CLIP instrument (the [clip] extra), without its torchvision/timm dependencies
# (torchvision does not import beside the CPU torch wheel; crayonbox loads only open_clip's model and tokenizer
# modules).
.venv/bin/pip install -q --no-deps 'open-clip-torch>=3'
echo "crayonbox installed in $(pwd)/.venv"

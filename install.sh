#!/usr/bin/env bash
# Installs crayonbox and everything it needs on a fresh Debian machine: system packages (emoji font, Unicode
# data, Chromium for the browser test) and a virtual environment in .venv with the CPU build of torch.
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends fonts-noto-color-emoji unicode-data libfribidi0 \
  chromium >/dev/null
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch first and pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[dev]'
# open_clip for the lab's CLIP instrument, without its torchvision/timm dependencies (torchvision does not
# import beside the CPU torch wheel; crayonbox loads only open_clip's model and tokenizer modules).
.venv/bin/pip install -q --no-deps open-clip-torch
echo "crayonbox installed in $(pwd)/.venv"

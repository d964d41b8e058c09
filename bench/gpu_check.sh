#!/usr/bin/env bash
# Every GPU measurement of docs/inference.md in one command, for a lent GPU machine that has python3 with a CUDA
# build of torch and no network (~5 minutes on an H100; run it with a 10-minute limit, which leaves a rerun):
#
#   bash bench/gpu_check.sh wheels    # here, with a network, once: what crayonbox and min-dalle need there → .whl/
#   bash bench/gpu_check.sh           # there, in the repository root, with .whl/ beside it; logs into $OUT
#   DEVICE=cpu PYTHON=.venv/bin/python BENCH_ARGS="--steps 2 --mindalle-steps 2 --images 1 --modes auto" \
#     bash bench/gpu_check.sh         # a dry run of the same steps on this CPU (~4 minutes; min-dalle in fp32)
#
# There: installs the wheels into /tmp/site, prints the GPU, runs the tests that need CUDA (the CUDA-graph capture,
# devices and dtypes of the Pipeline), then bench/generate_vs_mindalle.py on the GPU against min-dalle in fp16 on
# the same GPU: a mini 3×3 grid and a mega 4×4 grid (min-dalle's README: 35 s on a P100 for mega 3×3, 16 s on an
# A100 for mega 4×4), each crayonbox mode beside it. Each step's output goes to $OUT/<step>.log as it runs.
set -uo pipefail
cd "$(dirname "$0")/.."

# The core's dependencies (pyproject.toml) that the GPU machine's image holds, and those it lacks, carried as
# Python 3.12 wheels (wcwidth is ftfy's); tests/test_packaging.py checks that the two cover the core.
# wordfreq (57 MB) stays behind: only a hashtag in a prompt imports it.
THERE="torch numpy pillow safetensors tokenizers tqdm msgpack huggingface_hub pyyaml"
WHEELS="ftfy wcwidth emoji unidecode"

if [ "${1:-}" = "wheels" ]; then
  set -e
  mkdir -p .whl
  read -r -a names <<< "$WHEELS"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${names[@]}"
  # min-dalle has no wheel on PyPI: built from its sdist (pure Python); its own needs are in the image
  python3 -m pip wheel -q --no-deps -w .whl min-dalle==0.4.11
  ls -l .whl
  exit 0
fi

OUT="${OUT:-/tmp/gpu-check}" DEVICE="${DEVICE:-cuda}" PYTHON="${PYTHON:-python3}"
read -r -a EXTRA <<< "${BENCH_ARGS:-}"
MINDALLE_DTYPE=$([ "$DEVICE" = cpu ] && echo float32 || echo float16)
mkdir -p "$OUT"
step() {  # step NAME COMMAND...: run it, its output to the terminal and to $OUT/NAME.log; keep going on failure
  local name=$1
  shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]}"
}

[ -d .whl ] || { echo "no .whl/ here: run 'bash bench/gpu_check.sh wheels' where there is a network"; exit 2; }
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 2
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
if [ "$DEVICE" != cpu ]; then
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')" \
    || exit 2
  step gpu sh -c "nvidia-smi -L; $PYTHON -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'"
fi
step tests "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_static_decoding.py tests/test_pipeline_diffusers.py
step mini "$PYTHON" bench/generate_vs_mindalle.py --device "$DEVICE" --mindalle-dtype "$MINDALLE_DTYPE" --images 9 \
  --rounds 2 --modes auto,float16,bfloat16,float32 "${EXTRA[@]}"
step mega "$PYTHON" bench/generate_vs_mindalle.py --device "$DEVICE" --mindalle-dtype "$MINDALLE_DTYPE" --model mega \
  --images 16 --rounds 1 --modes auto,float16 "${EXTRA[@]}"

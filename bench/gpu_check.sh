#!/usr/bin/env bash
# FreeCure's GPU check (issue 19 item 5), one command from the repository root:
#
#   bash bench/gpu_check.sh [gpu_check.py options, e.g. --skip flux]
#
# Runs bench/gpu_check.py on the GPU: the FASA kernel tests on CUDA, fp16/bf16 invariants on the tiny test models,
# a check that the FASA patches never synchronise the device with the host, and SDXL-size / FLUX-size timings with
# random weights (sized to finish within 8 minutes on one H100), ending with a summary to paste into the README.
# The output is also written to out/gpu_check.txt.
#
# Python: $PYTHON if set, else the first of python, python3, .venv/bin/python whose torch sees CUDA. It needs
# ComfyUI's requirements and pytest. ComfyUI: $COMFYUI_PATH, else ./.comfyui.
set -u -o pipefail
cd "$(dirname "$0")/.."

has_cuda() {
    "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1
}

PY=""
for candidate in "${PYTHON:-}" python python3 .venv/bin/python; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if has_cuda "$candidate"; then
        PY="$candidate"
        break
    fi
done
if [ -z "$PY" ]; then
    echo "gpu_check: no Python with a CUDA-enabled torch found (tried \$PYTHON, python, python3, .venv/bin/python)" >&2
    exit 2
fi

COMFY="${COMFYUI_PATH:-$PWD/.comfyui}"
if [ ! -f "$COMFY/main.py" ] || [ ! -d "$COMFY/comfy" ]; then
    echo "gpu_check: no ComfyUI at $COMFY (set COMFYUI_PATH to a ComfyUI checkout)" >&2
    exit 2
fi
export COMFYUI_PATH="$COMFY"
export HF_HUB_OFFLINE=1

mkdir -p out
echo "gpu_check: $PY ($("$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))')), ComfyUI $COMFY"
"$PY" bench/gpu_check.py --device cuda "$@" 2>&1 | tee out/gpu_check.txt

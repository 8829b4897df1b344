#!/usr/bin/env bash
# The GPU check in one command, for the lent GPU machine (no network, at most 64 MiB of files sent,
# torch + transformers + peft but no bitsandbytes there): full fine-tuning vs LoRA vs QLoRA on a
# random Llama of Llama-3.2-1B's shape, tokens/s and peak CUDA memory (benchmarks/gpu_check.py).
#
#   here, once:        benchmarks/fetch_gpu_wheels.sh     (the bitsandbytes wheel, 41 MiB, git-ignored)
#   on the GPU machine: benchmarks/gpu_check.sh           (device tool: carry ["benchmarks/wheels"],
#                                                         timeout_s 540; about 3 minutes expected)
#   here, on the CPU:   benchmarks/gpu_check.sh --tiny    (a tiny Llama: the same code path)
#
# Installs bitsandbytes from benchmarks/wheels into a temporary folder unless it is already
# importable (without the wheel QLoRA is skipped, full and LoRA still run), checks that torch sees a
# CUDA device, and runs gpu_check.py under `timeout` (TIMEOUT seconds, default 480: the script's own
# budget stops starting contenders after 420). The table lands in RESULTS (default
# benchmarks/results/gpu_check/: gpu_check.md and gpu_check.csv) and, when OUT is set (the device
# tool brings back what is written under $OUT), is copied there with the log. Extra arguments go
# to gpu_check.py (--steps, --rounds, --contenders ...).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-benchmarks/results/gpu_check}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if "$PYTHON" -c "import bitsandbytes" 2>/dev/null; then
    echo "bitsandbytes is importable already"
elif compgen -G "benchmarks/wheels/bitsandbytes-*.whl" >/dev/null; then
    # Into a folder of its own: the image's environment stays as it is, torch and numpy come from it.
    SITE=$(mktemp -d /tmp/gpu_check_site.XXXXXX)
    if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --find-links benchmarks/wheels \
            --target "$SITE" bitsandbytes; then
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "NOTE: bitsandbytes did not install from benchmarks/wheels, so QLoRA is skipped" >&2
    fi
else
    echo "NOTE: no bitsandbytes wheel in benchmarks/wheels/, so QLoRA is skipped (full and LoRA still run)." \
         "Fetch it here with benchmarks/fetch_gpu_wheels.sh and carry benchmarks/wheels to the GPU machine." >&2
fi

if [[ " $* " != *" --tiny "* ]] && ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "torch sees no CUDA device: run this on the GPU machine, or pass --tiny for the CPU version" >&2
    exit 1
fi

mkdir -p "$RESULTS"
LOG=${OUT:+$OUT/gpu_check.log}
timeout "${TIMEOUT:-480}" "$PYTHON" benchmarks/gpu_check.py --out "$RESULTS" "$@" 2>&1 | tee "${LOG:-/dev/null}"
STATUS=$?
[[ $STATUS == 124 ]] && echo "gpu_check.py was stopped after ${TIMEOUT:-480} s; the table holds what finished" >&2
if [[ -n "${OUT:-}" ]]; then
    cp "$RESULTS"/gpu_check.md "$RESULTS"/gpu_check.csv "$OUT"/ 2>/dev/null || echo "no table was written" >&2
fi
exit $STATUS

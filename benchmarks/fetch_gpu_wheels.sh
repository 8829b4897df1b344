#!/usr/bin/env bash
# Fetches, here, the bitsandbytes wheel that benchmarks/gpu_check.sh installs on the GPU machine,
# which reaches no package registry. Its python3 is 3.12 (x86-64, torch 2.11 with CUDA 13.0); the
# wheel is one py3-none-manylinux_2_24_x86_64 file of 41 MiB holding every CUDA build
# (libbitsandbytes_cuda130.so among them), which fits the 64 MiB the device tool sends with the
# rest of the tree. benchmarks/wheels/ is git-ignored: name it in the device tool's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --implementation cp \
    --platform manylinux_2_24_x86_64 --python-version 3.12 bitsandbytes==0.50.2 -d benchmarks/wheels
ls -l benchmarks/wheels

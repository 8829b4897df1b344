#!/usr/bin/env bash
# WNUT-17, full training set, MiniLM: every method in conf/method/ with its own default
# learning rate, same epochs, batch size and seed for all. Needs ../shared/data/wnut17
# (or DATA=/path/to/wnut17). EPOCHS defaults to 2 to fit a 2-core CPU in about half an hour.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/wnut17}
EPOCHS=${EPOCHS:-2}
OUT=benchmarks/results/wnut17_methods
METHODS=$(ls conf/method | sed 's/\.yaml$//' | paste -sd, -)
rm -rf "$OUT"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m peftlab -m \
    task=wnut17 task.data.path="$DATA" backbone=minilm method="$METHODS" \
    trainer.epochs="$EPOCHS" trainer.batch_size=32 trainer.progress_bar=false seed=0 \
    hydra.sweep.dir="$OUT" hydra.sweep.subdir='${method.name}_s${seed}'
python -m peftlab.report "$OUT"
cat "$OUT/report.md"

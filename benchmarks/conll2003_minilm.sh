#!/usr/bin/env bash
# CoNLL-2003, full training set, MiniLM: full fine-tuning vs LoRA (method defaults), 1 epoch,
# seed 0, on whatever machine runs it (the committed table says which). Needs the real data
# at ../shared/data/conll2003 (or DATA=/path/to/conll2003).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/conll2003}
OUT=benchmarks/results/conll2003_minilm
rm -rf "$OUT"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m peftlab -m \
    task=conll2003 task.data.path="$DATA" backbone=minilm method=full,lora \
    trainer.epochs=1 trainer.batch_size=32 trainer.progress_bar=false seed=0 \
    hydra.sweep.dir="$OUT" hydra.sweep.subdir='${method.name}_s${seed}'
python -m peftlab.report "$OUT"
cat "$OUT/report.md"

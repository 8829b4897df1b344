#!/usr/bin/env bash
# Sentence classification with MiniLM on the real SST-2 and Banking77 files: full fine-tuning vs
# LoRA vs BitFit, each at its own default learning rate, the same epochs, batch size and seed.
# SST-2 trains on its whole train split (6,920 sentences); Banking77 on a fixed 3,000-query
# subset of its train split (task.data_seed picks it; about 39 per intent), to fit a 2-core CPU;
# both are scored on their whole test split. One report (one table per task) in
# benchmarks/results/classification_minilm/. Needs ../shared/data/{sst2,banking77} (or
# DATA=/path/to/data). Extra arguments are Hydra overrides for both sweeps, e.g. a quick check:
# task.max_train_samples=200 trainer.max_steps=10
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
EPOCHS=${EPOCHS:-1}
OUT=${OUT:-benchmarks/results/classification_minilm}
rm -rf "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
sweep() {
    local task=$1
    shift
    python -m peftlab -m task="$task" task.data.path="$DATA/$task" backbone=minilm method=full,lora,bitfit \
        trainer.epochs="$EPOCHS" trainer.batch_size=16 trainer.eval_strategy=no trainer.progress_bar=false seed=0 "$@" \
        hydra.sweep.dir="$OUT/$task" hydra.sweep.subdir='${method.name}_s${seed}'
}
sweep sst2 "$@"
sweep banking77 task.max_train_samples=3000 "$@"
python -m peftlab.report "$OUT"
cat "$OUT/report.md"

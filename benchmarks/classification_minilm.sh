#!/usr/bin/env bash
# Sentence classification with MiniLM on the real SST-2 and Banking77 files: full fine-tuning vs
# LoRA vs BitFit, each at its own default learning rate, the same epochs, batch size and seed,
# pinned in conf/experiment/sst2_minilm.yaml and banking77_minilm.yaml (SST-2: its whole train
# split; Banking77: a fixed 3,000-query subset; both scored on their whole test split). One report
# (one table per task) in benchmarks/results/classification_minilm/. Needs
# ../shared/data/{sst2,banking77} (or DATA=/path/to/data). Extra arguments are Hydra overrides for
# both sweeps, e.g. a quick check:
#   OUT=/tmp/cls_check benchmarks/classification_minilm.sh task.max_train_samples=200 trainer.max_steps=10
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-benchmarks/results/classification_minilm}
rm -rf "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
for TASK in sst2 banking77; do
    python -m peftlab -m experiment="${TASK}_minilm" task.data.path="$DATA/$TASK" hydra.sweep.dir="$OUT/$TASK" "$@"
done
python -m peftlab.report "$OUT"
cat "$OUT/report.md"

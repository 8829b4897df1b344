#!/usr/bin/env bash
# Float vs 8-bit vs 4-bit NF4 base (quant=none, int8, nf4), all else equal: MiniLM with LoRA on
# WNUT-17 (method=lora quant=nf4 is QLoRA). Reports model bytes, peak memory, time per step and
# F1 per quant. Each quant runs in its own process, so each peak memory is its own. Needs
# ../shared/data/wnut17 (or DATA=/path/to/wnut17). Extra arguments are Hydra overrides, e.g. a
# quick check:
#   OUT=/tmp/quant_check benchmarks/quantization.sh task.max_train_samples=200 task.max_eval_samples=100 trainer.max_steps=20
# On CPU expect less memory and no speed-up: bitsandbytes dequantizes every weight for each matmul.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/wnut17}
EPOCHS=${EPOCHS:-2}
OUT=${OUT:-benchmarks/results/wnut17_quantization}
rm -rf "$OUT"
for QUANT in none int8 nf4; do
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m peftlab \
        task=wnut17 task.data.path="$DATA" backbone=minilm method=lora quant="$QUANT" \
        trainer.epochs="$EPOCHS" trainer.batch_size=32 trainer.progress_bar=false seed=0 "$@" \
        hydra.run.dir="$OUT/$QUANT"
done
python benchmarks/summarize_quant.py "$OUT" > "$OUT.md"
cat "$OUT.md"

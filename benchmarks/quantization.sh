#!/usr/bin/env bash
# Float vs 8-bit vs 4-bit NF4 base (quant=none, int8, nf4), all else equal, with LoRA (method=lora
# quant=nf4 is QLoRA). Two setups:
#   benchmarks/quantization.sh minilm    MiniLM on WNUT-17 (token classification), full train set
#   benchmarks/quantization.sh smollm2   SmolLM2-135M on Banking77 as generation, a fixed subset
# Reports model bytes, peak memory, time per step and the metric per quant. Each quant runs in its
# own process, so each peak memory is its own. Needs ../shared/data (or DATA=/path/to/data).
# Extra arguments are Hydra overrides, e.g. a quick check:
#   OUT=/tmp/quant_check benchmarks/quantization.sh minilm task.max_train_samples=200 trainer.max_steps=20
# On CPU expect less memory and no speed-up: bitsandbytes dequantizes every weight for each matmul.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP=${1:?"which setup: minilm or smollm2"}
shift
DATA=${DATA:-../shared/data}
case "$SETUP" in
    minilm)
        NAME=wnut17_minilm_quantization
        ARGS=(task=wnut17 task.data.path="$DATA/wnut17" backbone=minilm trainer.epochs=1 trainer.batch_size=8) ;;
    smollm2)
        # 77 intents, 240 training queries (about 3 per intent), 120 validation and 120 test
        # queries generated greedily: a small subset, so that three runs fit a 2-core CPU in 20 minutes.
        NAME=banking77_gen_smollm2_quantization
        ARGS=(task=banking77_gen task.data.path="$DATA/banking77" backbone=smollm2
              task.max_train_samples=240 task.max_eval_samples=120 trainer.epochs=1 trainer.batch_size=8) ;;
    *) echo "unknown setup '$SETUP': use minilm or smollm2" >&2; exit 2 ;;
esac
OUT=${OUT:-benchmarks/results/$NAME}
rm -rf "$OUT"
for QUANT in none int8 nf4; do
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m peftlab \
        "${ARGS[@]}" method=lora quant="$QUANT" trainer.eval_strategy=no trainer.progress_bar=false seed=0 "$@" \
        hydra.run.dir="$OUT/$QUANT"
done
COMMAND=$(echo "benchmarks/quantization.sh $SETUP $*" | sed "s/ *$//")
{ echo "Made by \`$COMMAND\` ($(nproc) CPU cores, $(date -u +%Y-%m-%d))."; echo
  python benchmarks/summarize_quant.py "$OUT"; } > "$OUT.md"
cat "$OUT.md"

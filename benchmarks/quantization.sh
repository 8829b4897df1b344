#!/usr/bin/env bash
# Float vs 8-bit vs 4-bit NF4 base (quant=none, int8, nf4), all else equal, with LoRA (method=lora
# quant=nf4 is QLoRA), pinned in conf/experiment/. Two setups:
#   benchmarks/quantization.sh minilm    MiniLM on WNUT-17 (experiment=wnut17_minilm_quantization)
#   benchmarks/quantization.sh smollm2   SmolLM2-135M on Banking77 as generation (experiment=banking77_gen_smollm2_quantization)
# Each quantization runs in its own process, so each peak memory is its own; then the report
# (python -m peftlab.report) sets them side by side in its "Quantization" table. Needs
# ../shared/data (or DATA=/path/to/data). Extra arguments are Hydra overrides, e.g. a quick check:
#   OUT=/tmp/quant_check benchmarks/quantization.sh minilm task.max_train_samples=200 trainer.max_steps=20
# On CPU expect less memory and no speed-up: bitsandbytes dequantizes every weight for each matmul.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP=${1:?"which setup: minilm or smollm2"}
shift
DATA=${DATA:-../shared/data}
case "$SETUP" in
    minilm) EXPERIMENT=wnut17_minilm_quantization DATASET=wnut17 ;;
    smollm2) EXPERIMENT=banking77_gen_smollm2_quantization DATASET=banking77 ;;
    *) echo "unknown setup '$SETUP': use minilm or smollm2" >&2; exit 2 ;;
esac
OUT=${OUT:-benchmarks/results/$EXPERIMENT}
rm -rf "$OUT"
for QUANT in none int8 nf4; do
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m peftlab experiment="$EXPERIMENT" quant="$QUANT" \
        task.data.path="$DATA/$DATASET" "$@" hydra.run.dir="$OUT/$QUANT"
done
python -m peftlab.report "$OUT"
cat "$OUT/report.md"

#!/usr/bin/env bash
# CoNLL-2003, full training set, MiniLM: full fine-tuning vs LoRA (method defaults), 1 epoch,
# seed 0 (conf/experiment/conll2003_minilm.yaml), on whatever machine runs it (the report's
# results.csv says which versions). Needs the real data at ../shared/data/conll2003 (or
# DATA=/path/to/conll2003). Extra arguments are Hydra overrides. The report is written when the
# sweep ends.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/conll2003}
OUT=${OUT:-benchmarks/results/conll2003_minilm}
rm -rf "$OUT"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m peftlab -m experiment=conll2003_minilm \
    task.data.path="$DATA" hydra.sweep.dir="$OUT" "$@"
cat "$OUT/report.md"

#!/usr/bin/env bash
# The pinned WNUT-17 sweeps (MiniLM, conf/experiment/), two jobs at a time on one machine (one
# torch thread each), into the committed results folder; the report is written when the sweep ends.
#   benchmarks/wnut17.sh methods   every method, full train set, seed 0  -> results/wnut17_methods/
#   benchmarks/wnut17.sh seeds     5 method families x 3 seeds, 1,000-sentence subset -> results/wnut17_seeds/
# Needs ../shared/data/wnut17 (or DATA=/path/to/wnut17). Extra arguments are Hydra overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
SWEEP=${1:?"which sweep: methods or seeds"}
shift
case "$SWEEP" in
    methods|seeds) ;;
    *) echo "unknown sweep '$SWEEP': use methods or seeds" >&2; exit 2 ;;
esac
DATA=${DATA:-../shared/data/wnut17}
OUT=${OUT:-benchmarks/results/wnut17_$SWEEP}
rm -rf "$OUT"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m peftlab -m experiment="wnut17_$SWEEP" \
    task.data.path="$DATA" hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir="$OUT" "$@"
cat "$OUT/report.md"

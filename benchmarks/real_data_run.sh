#!/usr/bin/env bash
# The measurements of docs/real-data.md ("Planned training"), for an idle machine: nothing else
# should run while it does, since the budget is wall time on this machine. About 50 minutes.
#
#   benchmarks/real_data_run.sh [OUT]            (default runs/real-data)
#   USGRA=/path/to/usgra-seg BUDGET_USGRA=40m BUDGET_PHANTOM=5m benchmarks/real_data_run.sh
#
# Every command is logged with the time and the load average in OUT/log.txt. Each test split is
# scored once, after training; the run chooses its checkpoint on val only.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/real-data}
USGRA=${USGRA:-../shared/datasets/usgra-seg}
BUDGET_USGRA=${BUDGET_USGRA:-40m}
BUDGET_PHANTOM=${BUDGET_PHANTOM:-5m}
USSEG=${USSEG:-.venv/bin/usseg}
mkdir -p "$OUT"

run() {
    echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) cores $(nproc): $*" | tee -a "$OUT/log.txt"
    "$@"
}

# 1. usgra-seg: fingerprint + plan + budget fitting inside training (val: 10 % of train, stratified),
#    then the test split once, without and with mirror TTA.
run "$USSEG" train --data "$USGRA" --out "$OUT/usgra" --budget "$BUDGET_USGRA" --device cpu --no-progress --overwrite \
    2>&1 | tee "$OUT/usgra-train.log"
run "$USSEG" evaluate --model "$OUT/usgra/best.pt" --data "$USGRA" --split test --device cpu --out "$OUT/usgra"
run "$USSEG" evaluate --model "$OUT/usgra/best.pt" --data "$USGRA" --split test --device cpu --out "$OUT/usgra" --tta

# 2. The phantom of `make demo` (70 frames, seed 1), planned and trained in the demo's time.
run "$USSEG" synth --out "$OUT/phantom-seed" --count 70 --seed 1
run "$USSEG" prepare --annotations "$OUT/phantom-seed/annotations.json" --images "$OUT/phantom-seed/images" \
    --out "$OUT/phantom" --overwrite
run "$USSEG" train --data "$OUT/phantom" --out "$OUT/phantom-run" --budget "$BUDGET_PHANTOM" --device cpu \
    --no-progress --overwrite 2>&1 | tee "$OUT/phantom-train.log"
run "$USSEG" evaluate --model "$OUT/phantom-run/best.pt" --data "$OUT/phantom" --split test --device cpu \
    --out "$OUT/phantom-run"

echo "results: $OUT/usgra/eval_test.json $OUT/usgra/eval_test_tta.json $OUT/phantom-run/eval_test.json"

#!/usr/bin/env bash
# The measurements of docs/real-data.md ("Choosing by trial on val"), for an idle machine: nothing
# else should run while it does, since the budget is wall time on this machine. About 80 minutes.
#
#   benchmarks/real_data_run.sh [OUT]            (default runs/real-data)
#   USGRA=/path/to/usgra-seg BUDGET_USGRA=40m BUDGET_PLAIN=20m BUDGET_PHANTOM=5m benchmarks/real_data_run.sh
#   PLAIN=0 benchmarks/real_data_run.sh          (without the plain profile's same-machine floor)
#
# Every command is logged with the time and the load average in OUT/log.txt. Each test split is
# scored once, after training; every run chooses its configuration and its checkpoint on val only.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/real-data}
USGRA=${USGRA:-../shared/datasets/usgra-seg}
BUDGET_USGRA=${BUDGET_USGRA:-40m}
BUDGET_PLAIN=${BUDGET_PLAIN:-20m}
BUDGET_PHANTOM=${BUDGET_PHANTOM:-5m}
PLAIN=${PLAIN:-1}
USSEG=${USSEG:-.venv/bin/usseg}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"

run() {
    echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) cores $(nproc): $*" | tee -a "$OUT/log.txt"
    "$@"
}

# The trials of a run, one line per candidate and round (from RUN/trials.json).
trials_table() {
    "$PYTHON" - "$1/trials.json" <<'EOF' | tee -a "$OUT/log.txt"
import json, sys
report = json.load(open(sys.argv[1]))
print(f"trials of {sys.argv[1]}: {report['trials_seconds']:.0f} s ({report['trials_share']:.0%} of the budget), "
      f"winner {report['winner']}, margins {json.dumps(report['margins'])}, final {json.dumps(report['final'])}")
print("| candidate | status | round | seconds (allotted) | epochs | steps | best mean val Dice |")
print("|---|---|---|---|---|---|---|")
for c in report["candidates"]:
    for r in c["rounds"]:
        epochs = "-".join(str(e) for e in r["epochs"]) or "-"
        score = "-" if r["best_mean_val_dice"] is None else f"{r['best_mean_val_dice']:.4f}"
        print(f"| {c['name']} | {c['status']} | {r['round']} | {r['seconds']:.0f} ({r['allotted_seconds']:.0f}) | "
              f"{epochs} | {r['steps']} | {score} |")
EOF
}

# 1. usgra-seg with the defaults: fingerprint + plan, trials on val (10 % of train, stratified),
#    the winner trained on; then the test split once, without and with mirror TTA.
run "$USSEG" train --data "$USGRA" --out "$OUT/usgra" --budget "$BUDGET_USGRA" --device cpu --no-progress --overwrite \
    2>&1 | tee "$OUT/usgra-train.log"
trials_table "$OUT/usgra"
run "$USSEG" evaluate --model "$OUT/usgra/best.pt" --data "$USGRA" --split test --device cpu --out "$OUT/usgra"
run "$USSEG" evaluate --model "$OUT/usgra/best.pt" --data "$USGRA" --split test --device cpu --out "$OUT/usgra" --tta

# 2. The plain script's floor on the same machine: the plain profile for the plain script's 20 minutes.
if [ "$PLAIN" = 1 ]; then
    run "$USSEG" train --data "$USGRA" --out "$OUT/usgra-plain" --profile plain --budget "$BUDGET_PLAIN" --device cpu \
        --no-progress --overwrite 2>&1 | tee "$OUT/usgra-plain-train.log"
    run "$USSEG" evaluate --model "$OUT/usgra-plain/best.pt" --data "$USGRA" --split test --device cpu \
        --out "$OUT/usgra-plain"
fi

# 3. The phantom of `make demo` (70 frames, seed 1), planned and chosen by trial in the demo's time.
run "$USSEG" synth --out "$OUT/phantom-seed" --count 70 --seed 1
run "$USSEG" prepare --annotations "$OUT/phantom-seed/annotations.json" --images "$OUT/phantom-seed/images" \
    --out "$OUT/phantom" --overwrite
run "$USSEG" train --data "$OUT/phantom" --out "$OUT/phantom-run" --budget "$BUDGET_PHANTOM" --device cpu \
    --no-progress --overwrite 2>&1 | tee "$OUT/phantom-train.log"
trials_table "$OUT/phantom-run"
run "$USSEG" evaluate --model "$OUT/phantom-run/best.pt" --data "$OUT/phantom" --split test --device cpu \
    --out "$OUT/phantom-run"

# 4. The demo profile on the same phantom (an explicit profile: no trials), its time and test score.
run "$USSEG" train --data "$OUT/phantom" --out "$OUT/phantom-demo" --profile demo --device cpu --no-progress --overwrite \
    2>&1 | tee "$OUT/phantom-demo-train.log"
run "$USSEG" evaluate --model "$OUT/phantom-demo/best.pt" --data "$OUT/phantom" --split test --device cpu \
    --out "$OUT/phantom-demo"

echo "results: $OUT/usgra/eval_test.json $OUT/usgra/eval_test_tta.json $OUT/usgra-plain/eval_test.json (PLAIN=1)" \
    "$OUT/phantom-run/eval_test.json $OUT/phantom-demo/eval_test.json; trials: $OUT/usgra/trials.json" \
    "$OUT/phantom-run/trials.json"

"""One usseg-bench run: plan (train what is not cached), time (the pytest suite), report.

    OUT/benchmark.json, OUT/benchmark.md, OUT/benchmark.png    the report
    OUT/raw/plan.json, OUT/raw/results/*.json, OUT/raw/pytest-benchmark.json    what it was made from
    OUT/models/                                                 trained models and exports (reused)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .harness import loadavg
from .machine import describe, machine_info
from .plan import make_plan
from .report import build, write

log = logging.getLogger("usseg.bench")

SUITE = Path(__file__).resolve().parent


def run_bench(out: Path, *, model: Path | None = None, device: str = "cpu", quick: bool = False,
              select: str | None = None, command: str = "usseg-bench") -> int:
    """Returns pytest's exit code (0: every benchmark ran), 1 when nothing could be reported."""
    out.mkdir(parents=True, exist_ok=True)
    raw, results = out / "raw", out / "raw" / "results"
    shutil.rmtree(raw, ignore_errors=True)  # a report never mixes two runs
    results.mkdir(parents=True)
    info = machine_info()
    info["load_start"] = loadavg()
    info["description"] = describe(info)
    print(f"usseg-bench on {info['description']}; load average {info['load_start']}", flush=True)
    plan = make_plan(quick, device, out / "models", model)
    plan.save(raw / "plan.json")
    env = dict(os.environ, USSEG_BENCH_PLAN=str(raw / "plan.json"), USSEG_BENCH_RESULTS=str(results),
               USSEG_BENCH_DIR=str(out / "models"), USSEG_BENCH_DEVICE=plan.device,
               USSEG_BENCH_QUICK="1" if quick else "0")
    pytest_json = raw / "pytest-benchmark.json"
    cmd = [sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider", "--benchmark-enable",
           f"--benchmark-json={pytest_json}", "--benchmark-columns=median,iqr,rounds", "-o", "addopts=",
           "--rootdir", str(SUITE)]
    if select:
        cmd += ["-k", select]
    code = subprocess.call(cmd, env=env)
    info["load_end"] = loadavg()
    found = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    pytest_raw = json.loads(pytest_json.read_text()) if pytest_json.is_file() else None
    if not found and not (pytest_raw and pytest_raw.get("benchmarks")):
        print(f"usseg-bench: the suite recorded no results (pytest exit code {code})", file=sys.stderr)
        return code or 1
    report = build(found, pytest_raw, plan.to_dict(), info, command)
    paths = write(report, out)
    print()
    print(paths[1].read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    flagged = [c["pipeline"] for c in report["consistency"] if not c["ok"]]
    if flagged:
        print(f"usseg-bench: end to end and the sum of the stages differ by more than 15 % for {flagged}",
              file=sys.stderr)
    return code

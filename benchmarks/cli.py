"""usseg bench: run the benchmark suite and write raw JSON, a Markdown table and a bar chart.

    usseg bench [--model M] [--device auto|cpu|cuda] [--out DIR] [--quick] [-k EXPR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from usseg.runtime.cli import add_device_option, add_model_option, add_out_option, alias_main
from usseg.runtime.fileio import make_dirs

from .machine import describe, machine_info
from .report import write_report

SUITE = Path(__file__).resolve().parent


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p, "an exported model for the usseg rows (default: the seed configuration)", required=False)
    add_device_option(p, allowed=("auto", "cpu", "cuda"))
    add_out_option(p, "output folder: benchmark.json, benchmark.md, benchmark.png", default=Path("runs/bench"))
    p.add_argument("--quick", action="store_true", help="fewer rounds and precisions (for the demo)")
    p.add_argument("-k", dest="select", help="pytest -k expression to run a subset")


def run(args: argparse.Namespace) -> int:
    make_dirs(args.out)
    info = machine_info()
    machine = describe(info)
    print(f"usseg-bench on {machine}")
    raw = args.out / "benchmark.json"
    env = dict(os.environ, USSEG_BENCH_DEVICE=args.device, USSEG_BENCH_DIR=str(args.out / "models"))
    if args.quick:
        env["USSEG_BENCH_QUICK"] = "1"
    if args.model:
        env["USSEG_BENCH_MODEL"] = str(args.model.resolve())
    cmd = [sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider", "--benchmark-enable",
           "--benchmark-only", f"--benchmark-json={raw}", "--benchmark-columns=median,iqr,rounds",
           "-o", "addopts=", "--rootdir", str(SUITE)]
    if args.select:
        cmd += ["-k", args.select]
    code = subprocess.call(cmd, env=env)
    if not raw.is_file():
        print("usseg-bench: the suite wrote no results", file=sys.stderr)
        return code or 1
    (args.out / "machine.json").write_text(json.dumps(info, indent=1) + "\n")
    md, png, rows = write_report(raw, args.out, machine)
    print()
    print(md.read_text())
    print(f"wrote {raw}, {md}, {png}")
    return code


main = alias_main("bench")


if __name__ == "__main__":
    sys.exit(main())

"""The GPU check: everything that has to work on a GPU, in one command, in under 8 minutes.

    python -m usseg.benchmarks.gpu_check --out DIR [--quick]          # on a machine with a GPU
    python -m usseg.benchmarks.gpu_check --out DIR --device cpu --dry-run   # here: tiny, CPU

Sections, in order, each in a process of its own with its own time limit (a crash, a hang or an
exhausted GPU in one section loses that section only), and DIR/gpu_check.json and DIR/gpu_check.md
rewritten after each one, so a run cut short still leaves what it did:

  machine    GPU, driver, CUDA, ONNX Runtime and its providers, the fused kernels' availability
  data       a phantom data set (seed format, prepared into a mask folder)
  train      the demo profile for 2 epochs on CUDA, AMP and loader workers as configured
  export     its checkpoint exported (fp32, verified), then run here and on the CPU
  models     the seed network (480x640), briefly trained, exported for the end-to-end rows
  providers  device cuda, auto, tensorrt opened for real: provider, CUDA graph, capture, buffers
  fused      the fused CUDA kernels against OpenCV on phantom frames
  e2e        uint8 frame in host memory -> labels and geometry on the host, batch 1 and multi-frame:
             host preprocessing, in-graph, fused, and the seed-style pipeline on the same GPU
  postprocess  the spine post-processing alone on the timed network's label maps, one core
  network    the timed network alone on the CUDA provider: today's options against cuDNN's NHWC
             path and others, the graph replay alone beside host to host, every node's provider

The report opens with one line per target of issue 30, met or not, with its figure ("-" where a
section did not measure it) and the timed network's val Dice.

docs/gpu-check.md gives the commands for the lent GPU machine (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from usseg.runtime.fileio import make_dirs, write_json, write_text

from . import gpu_sections as sec
from .gpu_network import network_lines


@dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[sec.Setup], dict[str, Any]]
    limit_s: float          # wall-clock limit of the section's process
    needs: tuple[str, ...] = ()


SECTIONS = (
    Section("machine", sec.machine, 60),
    Section("data", sec.data, 90),
    Section("train", sec.train_demo, 150, ("data",)),
    Section("export", sec.export_demo, 120, ("train",)),
    Section("models", sec.models, 200, ("data",)),
    Section("providers", sec.providers, 120, ("models",)),
    Section("fused", sec.fused, 120),
    Section("e2e", sec.e2e, 200, ("models",)),
    Section("postprocess", sec.postprocess, 60, ("models",)),
    Section("network", sec.network, 90, ("models",)),
)
BY_NAME = {s.name: s for s in SECTIONS}
MIN_START_S = 15  # a section is not started with less of the budget left


def run_child(name: str, setup: sec.Setup, timeout: float) -> dict[str, Any]:
    """Run one section in a new process (and process group); its result file, or why there is none."""
    cmd = [sys.executable, "-m", "usseg.benchmarks.gpu_check", "--section", name, "--work", str(setup.work),
           "--device", setup.device] + (["--dry-run"] if setup.dry else []) + (["--quick"] if setup.quick else [])
    result_file = setup.path("sections", f"{name}.json")
    result_file.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"status": "timeout", "note": f"stopped after its limit of {timeout:.0f} s"}
    if result_file.is_file():
        return json.loads(result_file.read_text())
    return {"status": "failed", "note": f"the section's process ended with exit code {code} and no result"}


def run_inline(name: str, setup: sec.Setup, timeout: float) -> dict[str, Any]:
    """Run one section in this process (``--inline``): no isolation and no time limit."""
    run_section_here(name, setup, configure_logging=False)
    return json.loads(setup.path("sections", f"{name}.json").read_text())


def run_section_here(name: str, setup: sec.Setup, configure_logging: bool = True) -> int:
    """The child's side: run the section, write its result (or its error) for the parent."""
    import logging

    if configure_logging:
        logging.basicConfig(level=logging.INFO, format=f"[{name}] %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    try:
        data = BY_NAME[name].run(setup)
        status = "skipped" if "skipped" in data else "ok"
        result = {"status": status, "data": data, "note": data.get("skipped", "")}
    except Exception as exc:  # noqa: BLE001 - written down for the report; the other sections go on
        result = {"status": "failed", "note": f"{type(exc).__name__}: {str(exc).splitlines()[0][:400] if str(exc) else ''}",
                  "traceback": traceback.format_exc()[-3000:]}
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json(setup.path("sections", f"{name}.json"), result)
    return 0 if result["status"] != "failed" else 1


def run_all(setup: sec.Setup, out: Path, budget_s: float, only: set[str] | None = None,
            limits: dict[str, float] | None = None, runner=run_child) -> dict[str, Any]:
    """Every section in order within ``budget_s``; the report is rewritten after each one."""
    started = time.monotonic()
    doc: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "device": setup.device, "dry_run": setup.dry, "quick": setup.quick,
                           "budget_s": budget_s, "sections": {}}
    for section in SECTIONS:
        if only is not None and section.name not in only:
            continue
        left = budget_s - (time.monotonic() - started)
        missing = [n for n in section.needs if doc["sections"].get(n, {}).get("status", "ok" if only else "") != "ok"]
        if missing:
            result = {"status": "skipped", "note": f"needs section {', '.join(missing)}"}
        elif left < MIN_START_S:
            result = {"status": "skipped", "note": f"{left:.0f} s of the {budget_s:.0f} s budget left"}
        else:
            t = time.monotonic()
            print(f"== gpu_check: {section.name} (limit {min(section.limit_s, left):.0f} s)", flush=True)
            try:
                result = runner(section.name, setup, min((limits or {}).get(section.name, section.limit_s), left))
            except Exception as exc:  # noqa: BLE001 - the runner itself broke: this section only
                result = {"status": "failed", "note": f"{type(exc).__name__}: {exc}"}
            result.setdefault("seconds", round(time.monotonic() - t, 1))
            print(f"== gpu_check: {section.name} {result['status']} in {result['seconds']} s "
                  f"{result.get('note', '')}", flush=True)
        doc["sections"][section.name] = result
        doc["total_s"] = round(time.monotonic() - started, 1)
        write_report(out, doc)
    return doc


# -- the report ---------------------------------------------------------------------------------------
def _share(value: float | None, digits: int) -> str:
    """A share rounded down, so that 0.99998 never reads as 1.0000 nor 99.9987 % as >= 99.999 %."""
    if value is None:
        return "-"
    return f"{math.floor(value * 10 ** digits) / 10 ** digits:.{digits}f}"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _data(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["sections"].get(name, {}).get("data") or {}


def _usseg_rows(doc: dict[str, Any], batched: bool) -> list[dict[str, Any]]:
    return [r for r in _data(doc, "e2e").get("rows", []) if "median_ms" in r
            and not r["pipeline"].startswith("seed-style") and (r["batch"] > 1) == batched]


def target_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target of issue 30: its id, what it asks, the figure measured (None where no section
    measured it), where the figure comes from, and whether it is met (None: not measured).

    The batch-1 targets are read on the fastest usseg row at batch 1, the multi-frame target on the
    one with the most frames/s; agreement with the host path on those two rows.
    """
    single = min(_usseg_rows(doc, False), key=lambda r: r["median_ms"], default=None)
    multi = max(_usseg_rows(doc, True), key=lambda r: r["frames_per_s"], default=None)
    timed = [r for r in (single, multi) if r is not None]
    agreement = [r.get("labels_equal_to_host_min") for r in timed]
    geometry = [r.get("geometry_equal_to_host") for r in timed]
    post, nlm = _data(doc, "postprocess"), _data(doc, "fused").get("nlm") or {}

    def row(key: str, target: str, figure: float | None, shown: str, where: str, met: bool | None) -> dict[str, Any]:
        return {"id": key, "target": target, "figure": figure, "shown": shown if figure is not None else "-",
                "where": where if figure is not None else "-", "met": None if figure is None else met}

    def ms(value):
        return None if value is None else f"{value:.3f} ms"

    first = single or {}
    median, p99, ratio = first.get("median_ms"), first.get("p99_ms"), first.get("vs_seed_style")
    fps = None if multi is None else multi["frames_per_s"]
    agree = None if not agreement or None in agreement else min(agreement)
    same = None if not geometry or None in geometry else all(geometry)
    at = lambda r: "" if r is None else f"{r['pipeline']}, batch {r['batch']}"  # noqa: E731
    return [
        row("median", f"batch 1 median <= {sec.TARGET_MS:g} ms host to host", median, ms(median), at(single),
            median is not None and median <= sec.TARGET_MS),
        row("p99", f"batch 1 p99 <= {sec.TARGET_P99_MS:g} ms host to host", p99, ms(p99), at(single),
            p99 is not None and p99 <= sec.TARGET_P99_MS),
        row("frames_per_s", f"multi-frame >= {sec.TARGET_FPS:,.0f} frames/s", fps, None if fps is None else f"{fps:,.0f} frames/s",
            at(multi), fps is not None and fps >= sec.TARGET_FPS),
        row("vs_seed_style", f">= {sec.TARGET_RATIO:g}x the seed-style pipeline, same run", ratio,
            None if ratio is None else f"{ratio:.1f}x", at(single), ratio is not None and ratio >= sec.TARGET_RATIO),
        row("labels", f"labels equal to the host path on >= {100 * sec.TARGET_AGREEMENT:g} % of pixels", agree,
            None if agree is None else f"{_share(100 * agree, 3)} %", "; ".join(at(r) for r in timed),
            agree is not None and agree >= sec.TARGET_AGREEMENT),
        row("geometry", "geometry equal to the host path", same, None if same is None else ("equal" if same else "differs"),
            "; ".join(at(r) for r in timed), same),
        row("postprocess", f"post-processing <= {sec.TARGET_POST_MS:g} ms per frame, one core", post.get("median_ms"),
            ms(post.get("median_ms")), f"{post.get('frames')} label maps of the timed network, median of "
            f"{post.get('calls')} calls", post.get("median_ms") is not None and post["median_ms"] <= sec.TARGET_POST_MS),
        row("nlm", f"non-local means <= {sec.TARGET_NLM_MS:g} ms, fused kernel alone", nlm.get("median_ms"),
            ms(nlm.get("median_ms")), f"{'x'.join(map(str, nlm.get('frame', [])))} frame, CUDA events, "
            f"median of {nlm.get('rounds')}", nlm.get("median_ms") is not None and nlm["median_ms"] <= sec.TARGET_NLM_MS),
    ]


def network_line(doc: dict[str, Any]) -> str:
    """The timed network and its val Dice: the post-processing times are those of its label maps."""
    network = _data(doc, "models")
    if not network:
        return "Timed network: - (the models section did not run)"
    t, summary = network["training"], network["training"]["summary"]
    dice = ", ".join(f"{k} {v:.3f}" for k, v in summary["best_val_dice"].items())
    return (f"Timed network: {network['network']} ({network['precision']}), {t['epochs']} epochs on "
            f"{summary['frames']['train']} phantom frames in {t['seconds']} s, best mean val Dice "
            f"{summary['best_mean_val_dice']:.3f} ({dice})")


def machine_line(doc: dict[str, Any]) -> str:
    m = _data(doc, "machine")
    if not m:
        return "Machine: - (the machine section did not run)"
    return (f"Machine: {m.get('gpu') or 'no GPU'}, driver {_fmt(m.get('driver'))}, CUDA {_fmt(m.get('cuda'))}, "
            f"ONNX Runtime {_fmt(m.get('onnxruntime'))} ({', '.join(m.get('onnxruntime_packages') or []) or '-'}; "
            f"providers {', '.join(m.get('providers') or [])}), torch {_fmt(m.get('torch'))}, "
            f"fused kernels: {_fmt(m.get('fused_kernels'))} (numba-cuda {_fmt(m.get('numba_cuda'))}, NumPy "
            f"{_fmt(m.get('numpy'))}); CPU {_fmt(m.get('cpu'))} x {_fmt(m.get('cores'))}, Python {_fmt(m.get('python'))}")


def markdown(doc: dict[str, Any]) -> str:
    run = (f"Run {doc['started']}, device {doc['device']}{', dry run' if doc['dry_run'] else ''}"
           f"{', quick' if doc['quick'] else ''}; {_fmt(doc.get('total_s'), 0)} s of a {doc['budget_s']:.0f} s budget.")
    lines = ["# usseg GPU check", "", machine_line(doc), "", run, "",
             "## Targets (issue 30: H100/H200 class, seed network 480x640, fp16)", "", network_line(doc), "",
             "| target | figure | measured on | met |", "|---|---|---|---|"]
    for t in target_rows(doc):
        met = "-" if t["met"] is None else ("met" if t["met"] else "missed")
        lines.append(f"| {t['target']} | {t['shown']} | {t['where']} | {met} |")
    lines.append("")
    e2e = _data(doc, "e2e")
    header = ("| pipeline | batch | preprocessing | provider | precision | CUDA graph | median ms | p99 ms | frames/s "
              "| x seed-style | ms/frame: pre, inference, post | labels = host path | geometry = host path | targets |")
    lines += ["## End to end: uint8 frame in host memory -> labels and geometry on the host", "", header,
              "|" + "---|" * 14]
    for r in e2e.get("rows", []):
        if "median_ms" not in r:
            lines.append(f"| {r['pipeline']} | {r['batch']} | " + " | ".join(["-"] * 11)
                         + f" | {r.get('skipped') or r.get('error')} |")
            continue
        targets = ", ".join(f"{k} {'met' if v else 'missed'}" for k, v in (r.get("targets") or {}).items())
        stages = r.get("stages_ms_per_frame") or {}
        split = ", ".join(_fmt(stages.get(k), 2) for k in ("preprocess", "inference", "postprocess")) if stages else "-"
        lines.append(f"| {r['pipeline']} | {r['batch']} | {_fmt(r.get('preprocessing'))} | {_fmt(r.get('provider'))} | "
                     f"{_fmt(r.get('precision'))} | {_fmt(r.get('cuda_graph'))} | {_fmt(r['median_ms'], 3)} | "
                     f"{_fmt(r['p99_ms'], 3)} | {_fmt(r['frames_per_s'], 0)} | {_fmt(r.get('vs_seed_style'), 1)} | "
                     f"{split} | {_share(r.get('labels_equal_to_host_min'), 4)} | {_fmt(r.get('geometry_equal_to_host'))} | "
                     f"{targets or '-'} |")
    header = ("| device | provider | CUDA graph | capture checked | page-locked buffers | readback | open s "
              "| same labels from another thread | fallbacks and notes |")
    lines += ["", "## Providers opened for real", "", header, "|" + "---|" * 9]
    for device, r in (_data(doc, "providers").get("devices") or {}).items():
        if "provider" not in r:
            lines.append(f"| {device} | " + " | ".join(["-"] * 7) + f" | {r.get('skipped') or r.get('error')} |")
            continue
        why = "; ".join((r.get("fallbacks") or []) + (r.get("notes") or [])) or "-"
        lines.append(f"| {device} | {r['provider']} | {_fmt(r.get('cuda_graph'))} | {_fmt(r.get('capture_verified'))} | "
                     f"{_fmt(r.get('pinned_host_buffers'))} | {_fmt(r.get('readback'))} | {_fmt(r.get('open_seconds'), 1)} | "
                     f"{_fmt(r.get('same_labels_from_another_thread'))} | {why} |")
    fused = _data(doc, "fused")
    lines += ["", "## Fused preprocessing against OpenCV", ""]
    if fused.get("rows"):
        lines += ["| recipe | frame -> input | pixels within 1 grey level | exact | max input delta | ms/frame |",
                  "|---|---|---|---|---|---|"]
        for r in fused["rows"]:
            lines.append(f"| {r['recipe']} | {r['frame'][0]}x{r['frame'][1]} -> {r['input'][0]}x{r['input'][1]} | "
                         f"{_share(100 * r['min_within_1'], 3)} % | {_share(100 * r['min_exact'], 3)} % | "
                         f"{r['max_input_delta']:.2e} | {_fmt(r['median_ms'], 3)} |")
        nlm = fused.get("nlm")
        if nlm:
            lines += ["", f"Non-local means alone (the seed recipe's, {nlm['frame'][0]}x{nlm['frame'][1]}, CUDA events, "
                      f"{nlm['rounds']} launches): median {nlm['median_ms']:.3f} ms, p99 {nlm['p99_ms']:.3f} ms; "
                      f"equal to OpenCV on {_share(100 * nlm['equal_to_opencv'], 3)} % of pixels"]
    else:
        lines.append(f"Not run: {doc['sections'].get('fused', {}).get('note') or '-'}")
    lines += [""] + network_lines(_data(doc, "network"), doc["sections"].get("network", {}).get("note", ""))
    post = _data(doc, "postprocess")
    lines += ["", "## Post-processing alone, one core", ""]
    if post:
        shares = ", ".join(f"{k} {100 * v:.2f} %" for k, v in post["class_shares"].items())
        lines.append(f"{post['frames']} label maps ({post['size'][0]}x{post['size'][1]}) of the timed network (class "
                     f"shares {shares}; a MID line in {post['frames_with_mid_line']} of them): median "
                     f"{post['median_ms']:.3f} ms, p99 {post['p99_ms']:.3f} ms over {post['calls']} calls")
    else:
        lines.append(f"Not run: {doc['sections'].get('postprocess', {}).get('note') or '-'}")
    train, export = _data(doc, "train"), _data(doc, "export")
    lines += ["", "## Training and export", ""]
    if train:
        lines.append(f"- {train['profile']} profile, {train['epochs']} epochs on {train['device']}, AMP "
                     f"{_fmt(train['amp'])}, {train['num_workers']} loader workers: {train['seconds']} s, "
                     f"peak GPU memory {_fmt(train.get('peak_gpu_memory_mb'))} MB")
    if export:
        lines.append(f"- export fp32 (verified): {export['seconds']} s; on {export['provider']} the labels equal the "
                     f"CPU's on >= {_share(100 * export['labels_equal_to_cpu_min'], 3)} % of pixels")
    lines += ["", "## Sections", "", "| section | status | seconds | note |", "|---|---|---|---|"]
    for name, r in doc["sections"].items():
        lines.append(f"| {name} | {r['status']} | {_fmt(r.get('seconds'), 1)} | {_fmt(r.get('note'))} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, doc: dict[str, Any]) -> None:
    doc["targets"] = target_rows(doc)
    write_json(out / "gpu_check.json", doc)
    write_text(out / "gpu_check.md", markdown(doc))


# -- command line -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m usseg.benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--quick", action="store_true", help="fewer frames, epochs and rounds")
    p.add_argument("--device", default=None, help="cuda (default), cuda:N, or cpu with --dry-run")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes; what needs CUDA is skipped, with the reason")
    p.add_argument("--work", type=Path, help="folder for data, checkpoints and models (default: a temporary one)")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for all sections (default 450)")
    p.add_argument("--only", help="comma-separated sections to run (their inputs must be in --work)")
    p.add_argument("--limit", action="append", default=[], metavar="SECTION=SECONDS", help="a section's time limit")
    p.add_argument("--inline", action="store_true",
                   help="run the sections in this process (no isolation, no time limits; for quick checks)")
    p.add_argument("--section", choices=list(BY_NAME), help=argparse.SUPPRESS)  # the child's side
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    if args.section:
        return run_section_here(args.section, sec.Setup(args.work, device, args.dry_run, args.quick))
    if args.out is None:
        build_parser().error("--out is required")
    try:
        limits = {k: float(v) for k, v in (item.split("=", 1) for item in args.limit)}
    except ValueError:
        build_parser().error("--limit takes SECTION=SECONDS")
    only = set(args.only.split(",")) if args.only else None
    unknown = (only or set()) - set(BY_NAME)
    if unknown:
        build_parser().error(f"unknown section(s) {sorted(unknown)}; valid: {list(BY_NAME)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="usseg-gpu-check-"))
    make_dirs(args.out)
    setup = sec.Setup(work, device, args.dry_run, args.quick)
    runner = run_inline if args.inline else run_child
    doc = run_all(setup, args.out, args.budget, only, limits, runner)
    print(f"gpu_check: wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'} (work folder {work})")
    return 0 if all(r["status"] in ("ok", "skipped") for r in doc["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

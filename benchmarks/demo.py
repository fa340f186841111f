"""usseg demo: the whole product on the built-in phantom, in one command (what `make demo` runs).

    synthesise + prepare -> train (demo profile) + evaluate -> export fp32 (+ int8 if it verifies)
    -> usseg predict on the test split, usseg stream on a phantom cine -> a short benchmark
    -> one summary, and runs/demo/report.md with curves, overlays and the benchmark chart.

The demo only ever deletes what it made: --out must be new, empty, or a previous demo run (it
carries the marker file .usseg-demo), and a previous run is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from usseg.runtime.cli import add_device_option, add_out_option, alias_main
from usseg.runtime.errors import UsageError
from usseg.runtime.fileio import LOCK_NAME, output_lock, write_text

log = logging.getLogger("usseg.demo")


class Step:
    """Times a step and prints one line when it is done."""

    def __init__(self, name: str, timings: dict[str, float]) -> None:
        self.name, self.timings = name, timings

    def __enter__(self) -> "Step":
        print(f"\n=== {self.name}", flush=True)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.timings[self.name] = time.perf_counter() - self.start
        print(f"=== {self.name}: {self.timings[self.name]:.1f} s", flush=True)


def check(code: int, what: str, allowed: tuple[int, ...] = (0,)) -> None:
    if code not in allowed:
        raise SystemExit(f"usseg demo: {what} failed (exit code {code})")


def write_cine(path: Path, frames: int, height: int, width: int) -> None:
    import cv2

    from usseg.train.phantom import PhantomConfig, generate_cine

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (width, height), isColor=False)
    for image, _ in generate_cine(PhantomConfig(height=height, width=width), seed=5, n_frames=frames):
        writer.write(image)
    writer.release()


def training_curves(run: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    history = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["history"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot([h["epoch"] + 1 for h in history], [h["train_loss"] for h in history], label="train loss")
    val = [h for h in history if "val_loss" in h]
    a.plot([h["epoch"] + 1 for h in val], [h["val_loss"] for h in val], "o-", label="val loss")
    a.set_xlabel("epoch"), a.legend(), a.set_title("loss (DiceCE + HausdorffDT blend)")
    for name in (val[0]["val_dice"] if val else {}):
        b.plot([h["epoch"] + 1 for h in val], [h["val_dice"][name] for h in val], "o-", label=name)
    b.plot([h["epoch"] + 1 for h in val], [h["mean_val_dice"] for h in val], "k--", label="mean")
    b.set_xlabel("epoch"), b.set_ylim(0, 1), b.legend(), b.set_title("validation Dice")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bench_command(out: Path) -> list[str]:
    """The demo's short benchmark: the trained checkpoint, not the exported model, so that the
    seed-style pipeline runs the same weights beside usseg (an .onnx alone gives usseg rows only)."""
    return [sys.executable, "-m", "usseg.benchmarks.cli", "--quick", "--model", str(out / "run" / "best.pt"),
            "--out", str(out / "bench"), "-k", "end_to_end and not batch"]


def summary_text(out: Path, ev: dict, exports: dict, infer: dict, stream: dict, bench_rows, timings) -> str:
    lines = ["usseg demo summary", "=================="]
    dice = ", ".join(f"{k} {v:.3f}" for k, v in ev["dice"].items() if v is not None)
    lines.append(f"test Dice ({ev['frames']} frames): {dice}; mean {ev['mean_dice']:.3f}")
    for key, g in ev.get("geometry", {}).items():
        metric, value = next(iter(g.items()))
        lines.append(f"  {key} {metric.replace('_', ' ')}: {'-' if value is None else f'{value:.3f}'}")
    for name, info in exports.items():
        lines.append(f"export {name}: {info}")
    t = infer.get("timings_ms_median", {})
    lines.append("latency per frame (usseg predict, median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    lines.append(f"stream (cine played live at 20 fps, policy latest): {stream['processed']} of {stream['captured']} "
                 f"frames at {stream['fps']:.1f} fps, latency p50 "
                 f"{stream['latency_ms_p50']:.1f} ms, p99 {stream['latency_ms_p99']:.1f} ms, dropped {stream['dropped']}")
    base = next((r for r in bench_rows if r.stage == "end-to-end" and r.impl == "seed-style"), None)
    for r in bench_rows:
        if r.stage == "end-to-end" and r.impl == "usseg" and base is not None:
            what = " ".join(x for x in (r.precision, r.variant) if x)
            lines.append(f"end to end {what}, same weights and frames (usseg bench --quick): {r.median_ms:.1f} ms/frame "
                         f"vs seed-style {base.median_ms:.1f} ms -> {base.median_ms / r.median_ms:.2f}x")
    lines.append("steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    lines.append(f"report: {(out / 'report.html').absolute().as_uri()} (also {out / 'report.md'})")
    return "\n".join(lines)


DEMO_MARK = ".usseg-demo"  # in every folder the demo made: what --overwrite may replace


def check_out(out: Path, overwrite: bool) -> None:
    """--out is new, empty, or (with --overwrite) a previous demo run; anything else is refused
    before anything is written or deleted."""
    if out.is_symlink():
        raise UsageError(f"--out {out}: is a symbolic link (to {os.readlink(out)}); give a real folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if not out.exists() or not [p for p in out.iterdir() if p.name != LOCK_NAME]:
        return
    if not (out / DEMO_MARK).is_file():
        raise UsageError(f"--out {out}: holds files the demo did not make; give a new or empty folder "
                         f"(the demo deletes only its own runs)")
    if not overwrite:
        raise UsageError(f"--out {out}: holds a previous demo run; pass --overwrite to replace it")


def clear_previous_run(out: Path) -> None:
    """Empty a folder check_out accepted (the lock file of this run stays), then mark it as the demo's."""
    for entry in out.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    write_text(out / DEMO_MARK, "usseg demo output: `usseg demo --overwrite` may replace this folder\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_out_option(p, "output folder: new or empty, or a previous demo run with --overwrite",
                   default=Path("runs/demo"))
    p.add_argument("--overwrite", action="store_true", help="replace the previous demo run in --out")
    p.add_argument("--frames", type=int, default=70, help="phantom frames (the seed had 70)")
    p.add_argument("--epochs", type=int, help="override the demo profile's epochs")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark step")
    add_device_option(p, allowed=("auto", "cpu", "cuda"))


def run(args: argparse.Namespace) -> int:
    if args.frames < 10:
        raise UsageError(f"--frames {args.frames}: the split needs at least 10 frames")
    import usseg.train.loop  # noqa: F401  (the train extra, found missing before --out is touched)

    out = args.out
    check_out(out, args.overwrite)
    with output_lock(out, "usseg demo"):
        check_out(out, args.overwrite)  # again, now that no other run can change it
        clear_previous_run(out)
        return _run(args, out)


def _run(args: argparse.Namespace, out: Path) -> int:
    from usseg.export.cli import main as export_main
    from usseg.runtime.infer import main as infer_main
    from usseg.train.evaluate import main as evaluate_main
    from usseg.train.maskfolder import open_mask_folder
    from usseg.train.phantom import PhantomConfig, write_dataset
    from usseg.train.prepare import main as prepare_main
    from usseg.train.train_cli import main as train_main

    timings: dict[str, float] = {}
    with Step("1. synthesise 70 phantom frames and prepare the split", timings):
        write_dataset(out / "phantom", count=args.frames, seed=1, cfg=PhantomConfig(height=480, width=640))
        check(prepare_main(["--annotations", str(out / "phantom" / "annotations.json"),
                            "--images", str(out / "phantom" / "images"), "--out", str(out / "data")]), "prepare")
    with Step("2. train (demo profile) and evaluate on the test split", timings):
        train_args = ["--data", str(out / "data"), "--out", str(out / "run"), "--profile", "demo",
                      "--device", args.device]
        if args.epochs:
            train_args += ["--epochs", str(args.epochs)]
        check(train_main(train_args), "training")
        check(evaluate_main(["--model", str(out / "run" / "best.pt"), "--data", str(out / "data"),
                             "--out", str(out), "--device", args.device]), "evaluation")
        training_curves(out / "run", out / "curves.png")
    exports: dict[str, str] = {}
    with Step("3. export fp32 (and int8 when it passes verification)", timings):
        check(export_main(["--model", str(out / "run" / "best.pt"), "--out", str(out), "--frames", str(out / "data")]),
              "fp32 export")
        exports["fp32"] = "verified against PyTorch"
        code = export_main(["--model", str(out / "run" / "best.pt"), "--out", str(out), "--int8",
                            "--calibration", str(out / "data"), "--frames", str(out / "data")])
        exports["int8"] = "verified against fp32" if code == 0 else "did not pass verification; not used"
    with Step("4. usseg predict on the test split, usseg stream on a phantom cine played live", timings):
        data = open_mask_folder(out / "data")
        check(infer_main(["--model", str(out / "model.onnx"), *map(str, (data.image_path(i) for i in data.ids("test"))),
                          "--out", str(out / "infer"), "--save-masks", "--device", args.device]), "usseg predict")
        write_cine(out / "cine.avi", 60, 480, 640)
        from usseg.runtime.stream_cli import main as stream_main

        check(stream_main(["--model", str(out / "model.onnx"), "--source", str(out / "cine.avi"),
                           "--out", str(out / "stream"), "--video", "avi",
                           "--device", args.device, "--policy", "latest", "--pace"]), "usseg stream")
    bench_rows = []
    if not args.no_bench:
        with Step("5. short benchmark against the seed-style pipeline", timings):
            code = subprocess.call(bench_command(out))
            check(code, "usseg bench")
            from usseg.benchmarks.report import load_rows

            bench_rows = load_rows(json.loads((out / "bench" / "benchmark.json").read_text()))
    ev = json.loads((out / "eval_test.json").read_text())
    infer = json.loads((out / "infer" / "results.json").read_text())
    stream = stream_summary(out / "stream")
    text = summary_text(out, ev, exports, infer, stream, bench_rows, timings)
    write_report(out, text, infer)
    print("\n" + text)
    return 0


def stream_summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def write_report(out: Path, text: str, infer: dict) -> None:
    """report.md, and report.html beside it: the same report in one file with its images inside.

    Names in it come from the model (classes, recipe, provenance) and from files (overlays named
    after the data set's ids, the benchmark's table): each is put in as text that Markdown shows
    as it is, and the HTML is sanitised after rendering (html_report)."""
    overlays = sorted((out / "infer").glob("*_overlay.png"))[:6]
    parts = ["# usseg demo report", "", *code_block(text), "", "## Training curves", "", "![curves](curves.png)", "",
             "## Overlays (test split)", "",
             "Masks tinted, MID and EPI lines, the VTB box, and the readouts (README: Readouts).", ""]
    parts += [f"![{markdown_text(p.stem)}](infer/{urllib.parse.quote(p.name)})" for p in overlays]
    if (out / "bench" / "benchmark.md").is_file():
        parts += ["", "## Benchmark", "", (out / "bench" / "benchmark.md").read_text(), "",
                  "![benchmark](bench/benchmark.png)"]
    parts += ["", "## Provenance", "", *provenance_lines(infer.get("provenance") or {})]
    source = "\n".join(parts) + "\n"
    write_text(out / "report.md", source)
    write_text(out / "report.html", html_report(source, out))


MARKDOWN_ACTIVE = "\\`[]()!"  # what could open a code span, a link or an image in Markdown text


def markdown_text(value: object) -> str:
    """``value`` as Markdown text shown as it is: HTML's special characters as entities, those of
    Markdown that make code, links or images escaped, line breaks as spaces."""
    import html

    text = html.escape(" ".join(str(value).split()), quote=True)
    return "".join("\\" + ch if ch in MARKDOWN_ACTIVE else ch for ch in text)


def _fence(text: str, least: int) -> str:
    """A run of backticks longer than any in ``text`` (and at least ``least``): it cannot be closed early."""
    runs = [len(r) for r in "".join(ch if ch == "`" else " " for ch in text).split()]
    return "`" * max(least, max(runs, default=0) + 1)


def code_block(text: str) -> list[str]:
    """``text`` as a fenced code block (Markdown escapes what is inside)."""
    fence = _fence(text, 3)
    return [fence, text, fence]


def code_span(value: object) -> str:
    """``value`` as inline code, whatever backticks it holds."""
    text = " ".join(str(value).split())
    fence = _fence(text, 1)
    return f"{fence} {text} {fence}" if text.startswith("`") or text.endswith("`") else f"{fence}{text}{fence}"


def provenance_lines(prov: dict) -> list[str]:
    """The model and software the report's results came from, as a Markdown list."""
    if not prov:
        return ["(not recorded)"]
    recipe = prov.get("recipe") or {}
    items = [("model", prov.get("model")), ("SHA-256", prov.get("sha256")),
             ("classes", ", ".join(map(str, prov.get("classes", [])))),
             ("recipe", recipe.get("name") if isinstance(recipe, dict) else recipe), ("provider", prov.get("provider")),
             ("usseg", prov.get("usseg")), ("ONNX Runtime", prov.get("onnxruntime")), ("time", prov.get("time"))]
    return [f"- {name}: {code_span(value)}" for name, value in items if value]


REPORT_STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
pre{background:#f4f4f4;padding:1em;overflow-x:auto}code{font-size:90%}img{max-width:100%;margin:4px 0}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}"""


def html_report(markdown_source: str, folder: Path) -> str:
    """One self-contained HTML page: Markdown rendered by python-markdown and sanitised by nh3
    (no scripts, event handlers or foreign URLs, whatever a name in it held), and every image it
    links to (relative to ``folder``) embedded as a data URI, so it opens anywhere with one click."""
    import base64
    import html
    import re

    import markdown
    import nh3

    body = nh3.clean(markdown.markdown(markdown_source, extensions=["tables", "fenced_code"]), url_schemes=set())

    def embed(match: re.Match) -> str:
        src = urllib.parse.unquote(html.unescape(match.group(2)))
        path = (folder / src).resolve()
        if "://" in src or not path.is_file() or folder.resolve() not in path.parents:
            return match.group(0)
        kind = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(path.suffix.lower())
        if kind is None:
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'{match.group(1)}"data:{kind};base64,{data}"'

    body = re.sub(r'(<img\b[^>]*?\bsrc=)"([^"]+)"', embed, body)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>usseg demo report</title>"
            f"<style>{REPORT_STYLE}</style></head><body>\n{body}\n</body></html>\n")


main = alias_main("demo")


if __name__ == "__main__":
    sys.exit(main())

"""The GPU check's ``network`` section: the timed network alone on ONNX Runtime's CUDA provider.

- Settings: today's CUDA provider options (runtime/providers.py ``cuda_options``, with a CUDA
  graph) against variants of them -- cuDNN's NHWC path (``prefer_nhwc``) and the others listed in
  ``VARIANTS`` -- each opened as the engine opens a model, its labels compared with today's.
- Times: the graph replay alone (input and output already on the device) beside host to host
  (the input copied in, the replay, the labels read back), per variant.
- Placement: which provider ran each node, from ONNX Runtime's own profile of one run without a
  CUDA graph: every node, the in-graph argmax included, must be on the CUDA provider, and no
  Memcpy node may have been inserted (each one is a copy between the device and the host).

Only a CUDA device can run it; :func:`placement` and :func:`network_lines` (the report) are pure.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from usseg.runtime.providers import CUDA, SessionPlan

VARIANTS: dict[str, dict[str, str]] = {  # name: CUDA provider options over today's
    "today": {},
    "prefer_nhwc": {"prefer_nhwc": "1"},
    "prefer_nhwc, heuristic search": {"prefer_nhwc": "1", "cudnn_conv_algo_search": "HEURISTIC"},
    "no max workspace": {"cudnn_conv_use_max_workspace": "0"},
}
ON_HOST = SimpleNamespace(on_device=False)  # a model input the engine copies in


def variant_plan(base: SessionPlan, extra: dict[str, str]) -> SessionPlan:
    """``base`` with ``extra`` over its CUDA provider's options."""
    return replace(base, providers=tuple((name, {**opts, **extra} if name == CUDA else opts)
                                         for name, opts in base.providers))


def placement(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The provider of each node from an ONNX Runtime profile (its ``<node>_kernel_time`` events)."""
    nodes: dict[str, tuple[str, str]] = {}
    for event in events:
        args = event.get("args") or {}
        name = str(event.get("name", ""))
        if event.get("cat") == "Node" and name.endswith("_kernel_time") and "provider" in args:
            nodes[name[:-len("_kernel_time")]] = (str(args.get("op_name", "?")), str(args["provider"]))
    providers = Counter(provider for _, provider in nodes.values())
    elsewhere = sorted({f"{op} ({provider})" for op, provider in nodes.values() if provider != CUDA})
    memcpy = sum(op.startswith("Memcpy") for op, _ in nodes.values())
    return {"nodes": len(nodes), "by_provider": dict(providers), "not_on_cuda": elsewhere, "memcpy_nodes": memcpy,
            "all_on_cuda": bool(nodes) and not elsewhere and memcpy == 0}


def _median_p99(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), float(np.percentile(times, 99))


def _timed(fn, rounds: int, *args: Any) -> list[float]:
    """Wall times in ms of ``rounds`` calls ``fn(*args)``, after three unmeasured ones."""
    import time

    for _ in range(3):
        fn(*args)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn(*args)
        times.append(1e3 * (time.perf_counter() - t))
    return times


def run(model: Path, frame: np.ndarray, rounds: int) -> dict[str, Any]:
    """The section's measurements on ``model`` (a batch-1 export) for one phantom ``frame``."""
    import onnxruntime as ort

    from usseg.runtime.engine import OrtEngine, session_plans
    from usseg.runtime.model_io import read_model
    from usseg.runtime.preprocess import preprocess
    from usseg.runtime.providers import ModelFacts, without_graph
    from usseg.runtime.sessions import open_session

    if CUDA not in ort.get_available_providers():
        return {"skipped": "needs ONNX Runtime's CUDA provider"}
    m = read_model(model)
    spec = m.contract.input
    base = next(p for p in session_plans("cuda", ModelFacts.from_contract(m.contract)) if p.cuda_graph == "cuda")
    x = preprocess(frame, m.contract.recipe, spec.height, spec.width)[0]
    rows, today = [], None
    for name, extra in VARIANTS.items():
        row: dict[str, Any] = {"variant": name, "options": extra}
        try:
            engine = OrtEngine(model, [variant_plan(base, extra)], m.io)
        except Exception as exc:  # noqa: BLE001 - a variant this build refuses is that row's result
            rows.append({**row, "error": str(exc).splitlines()[0][:300]})
            continue
        bound = engine.buffers(1)
        bound.host_in[0, 0] = x
        labels = engine.run(bound, ON_HOST).copy()
        today = labels if today is None else today
        replay = _timed(engine.call, rounds, engine.session.run_with_iobinding, bound.binding)
        host = _timed(engine.run, rounds, bound, ON_HOST)
        (rm, rp), (hm, hp) = _median_p99(replay), _median_p99(host)
        rows.append({**row, "replay_median_ms": rm, "replay_p99_ms": rp, "host_to_host_median_ms": hm,
                     "host_to_host_p99_ms": hp, "labels_equal_to_today": float((labels == today).mean()),
                     "cuda_graph": engine.cuda_graph, "rounds": rounds})
        engine.close()
    with tempfile.TemporaryDirectory() as tmp:
        session = open_session(model, without_graph(base), profile_prefix=str(Path(tmp) / "profile"))
        session.run(None, {m.io.input.name: x[None, None].astype(m.io.input.dtype)})
        events = json.loads(Path(session.end_profiling()).read_text())
    timed = [r for r in rows if "host_to_host_median_ms" in r]
    fastest = min(timed, key=lambda r: r["host_to_host_median_ms"], default=None)
    return {"rows": rows, "fastest": None if fastest is None else fastest["variant"], "placement": placement(events)}


def network_lines(data: dict[str, Any], note: str = "") -> list[str]:
    """The report's part on the network alone (Markdown lines)."""
    lines = ["## The network alone on the CUDA provider", ""]
    if not data or "rows" not in data:
        return lines + [f"Not run: {data.get('skipped') if data else note or '-'}"]
    lines += [("| settings | options over today's | graph replay alone ms (median, p99) | host to host ms (median, p99) "
               "| labels = today's |"), "|---|---|---|---|---|"]
    for r in data["rows"]:
        options = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-"
        if "host_to_host_median_ms" not in r:
            lines.append(f"| {r['variant']} | {options} | - | - | {r.get('error', '-')} |")
            continue
        lines.append(f"| {r['variant']} | {options} | {r['replay_median_ms']:.3f}, {r['replay_p99_ms']:.3f} | "
                     f"{r['host_to_host_median_ms']:.3f}, {r['host_to_host_p99_ms']:.3f} | "
                     f"{100 * r['labels_equal_to_today']:.3f} % |")
    p = data["placement"]
    where = ", ".join(f"{n} on {provider}" for provider, n in sorted(p["by_provider"].items())) or "none profiled"
    verdict = "every node on the CUDA provider" if p["all_on_cuda"] else (
        "NOT every node on the CUDA provider: " + (", ".join(p["not_on_cuda"]) or "-"))
    lines += ["", (f"Fastest host to host: {data['fastest'] or '-'}. Nodes of one run ({p['nodes']}): {where}; "
                   f"{p['memcpy_nodes']} Memcpy nodes; {verdict}.")]
    return lines

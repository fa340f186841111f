"""The usseg-bench report: every row, ratio and check of one run, as JSON (benchmark.json).

Sources: the harness groups' result files (latency, throughput, streaming, post-processing,
memory) and pytest-benchmark's JSON (training cost, torchrun throughput). The report
- keeps each row's figures (median_ms, p99_ms or null with the reason, frames, frames/s) and the
  weights it timed;
- computes each ratio from its two rows (reference median / row median), only where both rows
  are in this run, and keeps the text of what differs;
- checks each pipeline's end-to-end median against the sum of its stage medians (figures.py) and
  flags a pipeline more than 15 % apart;
- publishes training throughput only from a run that started on an idle machine.
Markdown and the chart are drawn from this JSON (tables.py, chart.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .figures import consistency, median, p99, p99_note, speedup

SCHEMA = 1
IDLE_LOAD = 0.5  # torchrun throughput is published only from a run started below this load
STAGE_ORDER = ("end-to-end", "preprocess", "inference", "postprocess", "stream")


@dataclass(frozen=True)
class Row:
    id: str
    group: str
    stage: str
    impl: str
    provider: str
    precision: str
    batch: int
    model: str
    network: str
    input: str
    recipe: str
    variant: str
    median_ms: float              # per frame
    p99_ms: float | None          # per frame; None from fewer than 200 timed calls
    p99_note: str | None
    samples: int                  # timed calls
    frames: int                   # timed frames
    fps: float                    # frames / the time they took
    weights: dict = field(default_factory=dict, compare=False)
    labels: list | None = field(default=None, compare=False)   # class shares of its label maps
    info: dict = field(default_factory=dict, compare=False)    # anything else the source recorded

    KEYS = ("id", "group", "stage", "impl", "provider", "precision", "batch", "model", "network", "input", "recipe",
            "variant", "median_ms", "p99_ms", "p99_note", "samples", "frames", "fps", "weights", "labels")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        defaults = {"provider": "", "precision": "", "batch": 1, "model": "", "network": "", "input": "",
                    "recipe": "", "variant": "", "p99_ms": None, "p99_note": None, "weights": {}, "labels": None}
        values = {k: d.get(k, defaults.get(k)) for k in cls.KEYS}
        values["batch"] = int(values["batch"])
        info = {k: v for k, v in d.items() if k not in cls.KEYS and k != "calls_ms"}
        return cls(**values, info=info)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.KEYS}
        out.update({k: v for k, v in self.info.items() if k not in out})
        return out


# -- pytest-benchmark rows ------------------------------------------------------------------------------
def rows_from_pytest(raw: dict[str, Any]) -> tuple[list[Row], list[dict[str, Any]]]:
    """pytest-benchmark's JSON -> rows, and ratio specs from their ``pair``/``differs`` extra_info:
    a row is compared with the seed-style row of the same stage and pair."""
    rows = []
    for b in raw.get("benchmarks", []):
        info = dict(b.get("extra_info", {}))
        if "stage" not in info:
            continue
        per_call = int(info.pop("frames", 1)) or 1
        stats = b["stats"]
        data = [t * 1e3 / per_call for t in (stats.get("data") or [stats["median"]])]
        rows.append(Row(
            id=f"pytest/{b['name']}", group=str(b.get("group") or info["stage"]), stage=info.pop("stage"),
            impl=info.pop("impl"), provider=str(info.pop("provider", "cpu")), precision=info.pop("precision", "fp32"),
            batch=int(info.pop("batch", 1)), model="", network="", input="", recipe="",
            variant=str(info.pop("recipe", "")), median_ms=median(data), p99_ms=p99(data), p99_note=p99_note(len(data)),
            samples=len(data), frames=len(data) * per_call,
            fps=len(data) * 1e3 / sum(data) if sum(data) > 0 else float("nan"),
            weights=info.pop("weights", {"trained": False, "note": "no trained model involved"}), info=info))
    ratios = []
    for r in rows:
        if r.impl == "seed-style":
            continue
        refs = [s for s in rows if s.impl == "seed-style" and s.stage == r.stage and s.info.get("pair", "") ==
                r.info.get("pair", "")]
        if len(refs) == 1:
            ratios.append({"row": r.id, "reference": refs[0].id,
                           "differs": r.info.get("differs") or "implementation: usseg vs seed-style", "headline": False})
    return rows, ratios


# -- the report ----------------------------------------------------------------------------------------
def pair_ratios(rows: Iterable[Row], specs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each spec with its value: reference median / row median; None (with a note) when a row is
    missing from this run. Every ratio names its reference row and what differs."""
    by_id = {r.id: r for r in rows}
    out = []
    for s in specs:
        if not s.get("differs"):
            raise ValueError(f"ratio {s.get('row')} vs {s.get('reference')}: says nothing about what differs")
        row, ref = by_id.get(s["row"]), by_id.get(s["reference"])
        entry = {**s, "row_ms": None if row is None else row.median_ms,
                 "reference_ms": None if ref is None else ref.median_ms,
                 "value": speedup(None if ref is None else ref.median_ms, None if row is None else row.median_ms)}
        if row is None or ref is None:
            missing = [k for k, v in (("row", row), ("reference", ref)) if v is None]
            entry["note"] = f"{' and '.join(missing)} not in this run"
        out.append(entry)
    return out


def check_consistency(rows: Iterable[Row], specs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """End to end vs the sum of the stage medians, per staged pipeline of this run."""
    by_id = {r.id: r for r in rows}
    out = []
    for s in specs:
        e2e = by_id.get(s["end_to_end"])
        stages = {name: by_id.get(key) for name, key in s["stages"].items()}
        if e2e is None or any(v is None for v in stages.values()):
            continue
        out.append({"pipeline": s["pipeline"], "end_to_end_row": e2e.id,
                    **consistency(e2e.median_ms, {k: v.median_ms for k, v in stages.items()}),
                    "median_round_sum_ms": s.get("median_round_sum_ms")})
    return out


def publishable(row: Row, idle_load: float = IDLE_LOAD) -> tuple[bool, str | None]:
    """A row that asks for an idle machine (training throughput under torchrun: its ``idle_load``)
    only from a run that started on one; every other row always."""
    if "idle_load" not in row.info:
        return True, None
    idle_load = float(row.info["idle_load"] or idle_load)
    load = row.info.get("load_before")
    if load is None:
        return False, "not published: the load before the run was not recorded"
    if load >= idle_load:
        return False, f"not published: load average {load:.2f} when it started (idle means < {idle_load})"
    return True, None


def build(results: list[dict[str, Any]], pytest_raw: dict[str, Any] | None, plan: dict[str, Any] | None,
          machine: dict[str, Any], command: str) -> dict[str, Any]:
    rows: list[Row] = []
    ratio_specs: list[dict[str, Any]] = []
    consistency_specs: list[dict[str, Any]] = []
    groups, notes, extras = {}, [], {}
    for res in results:
        rows += [Row.from_dict(r) for r in res.get("rows", [])]
        ratio_specs += res.get("ratios", [])
        consistency_specs += res.get("consistency", [])
        notes += [n for n in res.get("notes", []) if n not in notes]
        for key in ("memory", "startup"):
            if key in res:
                extras[key] = res[key]
        if "load_before" in res:
            groups[res["group"]] = {k: res.get(k) for k in ("load_before", "load_after", "seconds", "rounds", "frames")}
    if pytest_raw:
        more, specs = rows_from_pytest(pytest_raw)
        rows += more
        ratio_specs += specs
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    rows.sort(key=lambda r: (r.group, order.get(r.stage, 99), r.id))
    published = []
    for r in rows:
        ok, why = publishable(r)
        d = r.to_dict()
        d["published"] = ok
        if why:
            d["not_published"] = why
        published.append(d)
    plan_info = {k: v for k, v in (plan or {}).items() if k != "models"}
    timed = next((res["frames"] for res in results if "frames" in res), None)
    if timed is not None:  # the frames as the suite generated them, with their ground-truth shares
        plan_info["frames"] = timed
    return {"schema": SCHEMA, "command": command, "machine": machine, "plan": plan_info,
            "models": {m["name"]: {k: m[k] for k in ("network", "height", "width", "recipe", "weights", "changes")}
                       for m in (plan or {}).get("models", [])},
            "groups": groups, "rows": published, "ratios": pair_ratios(rows, ratio_specs),
            "consistency": check_consistency(rows, consistency_specs), "notes": notes, **extras}


def load_rows(data: dict[str, Any]) -> list[Row]:
    """Rows of a benchmark.json (or of a pytest-benchmark JSON)."""
    if "rows" in data:
        return [Row.from_dict(r) for r in data["rows"]]
    return rows_from_pytest(data)[0]


def write(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path, Path]:
    """benchmark.json, benchmark.md and benchmark.png in ``out_dir``."""
    from usseg.runtime.fileio import write_json, write_text

    from .chart import bar_chart
    from .tables import markdown

    paths = out_dir / "benchmark.json", out_dir / "benchmark.md", out_dir / "benchmark.png"
    write_json(paths[0], report)
    write_text(paths[1], markdown(report))
    bar_chart(report, paths[2])
    return paths

"""The pipelines each benchmark group times, and what the report may compare among them.

A group is a list of harness pipelines plus two kinds of pairing:
- ratios: (row, reference row, what differs); the report divides the reference's median by the
  row's, so a ratio is only ever taken between rows of the same interleaved group;
- consistency: a staged pipeline's end-to-end row and its stage rows.

Row ids are ``<group>/<pipeline>/<stage>[/<variant>]``, pipelines ``<impl>:<model>[ xN]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .figures import median, summarise
from .harness import ROUND_SUM, GroupTiming, Pipeline, Variant, row_key
from .plan import Plan
from .weights import ModelEntry

ENGINEERING = "engineering only: same network, weights, input size, recipe, frames and device"
RECIPE_VARIANTS = ("nlm-small", "bilateral", "none")


@dataclass
class Group:
    name: str
    pipelines: list[Pipeline] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)      # row, reference, differs, headline
    consistency: list[dict[str, Any]] = field(default_factory=list)  # pipeline, end_to_end, stages
    notes: list[str] = field(default_factory=list)

    def row(self, pipeline: str, stage: str, variant: str | None = None) -> str:
        return f"{self.name}/{row_key(pipeline, stage, variant)}"

    def ratio(self, row: str, reference: str, differs: str, headline: bool = False) -> None:
        self.ratios.append({"row": row, "reference": reference, "differs": differs, "headline": headline})


def model_info(m: ModelEntry) -> dict[str, Any]:
    return {"model": m.name, "network": m.network, "input": m.input, "recipe": m.recipe}


# -- the pipelines ---------------------------------------------------------------------------------------
def usseg_pipeline(name: str, m: ModelEntry, device: str, precision: str = "fp32",
                   graph: tuple[int, int] | None = None, batch: int = 1):
    """(Pipeline, Segmenter): the runtime as a user runs it; stages through the Segmenter's own
    stage objects (preparer, engine + decoder, finisher) on its batch-1 buffers."""
    from usseg.runtime.segmenter import Segmenter

    seg = Segmenter(m.export(precision, "1" if batch == 1 else "dynamic", graph), device=device)
    buffers = seg.engine.buffers(1)
    info = {**model_info(m), "impl": "usseg", "provider": seg.provider, "precision": precision, "batch": batch,
            "variant": "recipe in the ONNX graph" if graph else "",
            "stage_providers": {"preprocess": "copy of the raw frame" if graph else "cv2 on the host",
                                "postprocess": "Numba on the host"}}
    if batch > 1:
        return Pipeline(name, seg.batch, info, batch=batch), seg
    return Pipeline(name, seg, info, preprocess=lambda frame: seg.preparer([frame], buffers),
                    inference=lambda prepared: seg.decoder(seg.engine.run(buffers, prepared)[0]),
                    postprocess=lambda labels, prepared: seg.finisher(labels, prepared.letterboxes[0])), seg


def seed_style_pipeline(name: str, m: ModelEntry, device: str, contract) -> Pipeline:
    """The seed's code path with the model's own recipe and post-processing (from its contract)."""
    from .seed_style import SeedStylePipeline

    pipe = SeedStylePipeline(m.torch_model(), device, m.height, m.width, contract.postprocess, contract.recipe)
    provider = "PyTorch eager " + ("CPU" if device == "cpu" else device)
    info = {**model_info(m), "impl": "seed-style", "provider": provider, "precision": "fp32", "batch": 1,
            "variant": "", "stage_providers": {"preprocess": "cv2 on the host", "postprocess": "cv2 + scikit-image"}}
    return Pipeline(name, pipe, info, preprocess=pipe.preprocess, inference=pipe.infer,
                    postprocess=lambda labels, x: pipe.postprocess(labels))


def bare_onnxruntime(m: ModelEntry, seg, device: str) -> Variant:
    """The same fp32 model through a plain InferenceSession.run on numpy arrays (argmax after)."""
    import onnxruntime as ort

    provider = "CPUExecutionProvider" if device == "cpu" else "CUDAExecutionProvider"
    options = [{"device_id": int(device.split(":")[1])}] if ":" in device else None
    session = ort.InferenceSession(str(m.export("fp32")), providers=[provider], provider_options=options)
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"bare ONNX Runtime: {provider} did not start (active: {session.get_providers()})")
    name, host_input = session.get_inputs()[0].name, seg.engine.buffers(1).host_in
    return Variant("onnxruntime", "inference",
                   lambda prepared: session.run(None, {name: host_input})[0][0].argmax(0).astype(np.uint8),
                   {"impl": "bare ONNX Runtime", "provider": provider, "precision": "fp32"})


def precision_variant(m: ModelEntry, seg, device: str, precision: str) -> Variant:
    from usseg.runtime.prepare import ModelInput
    from usseg.runtime.segmenter import Segmenter

    other = Segmenter(m.export(precision), device=device)
    mine, theirs = seg.engine.buffers(1), other.engine.buffers(1)
    on_host = ModelInput([], [])  # the input is in the host buffer: the engine copies it in
    return Variant(precision, "inference", lambda prepared: other.decoder(other.engine.run(theirs, on_host)[0]),
                   {"precision": precision, "provider": other.provider},
                   setup=lambda prepared: np.copyto(theirs.host_in, mine.host_in))


def recipe_variant(m: ModelEntry, recipe: str) -> Variant:
    from usseg.runtime.preprocess import get_recipe, preprocess

    spec, out = get_recipe(recipe), np.zeros((m.height, m.width), np.float32)
    return Variant(recipe, "preprocess", lambda frame: preprocess(frame, spec, m.height, m.width, out=out),
                   {"recipe": recipe})


def in_graph_worth_timing(m: ModelEntry, plan: Plan, batch: str = "1") -> bool:
    """In-graph rows for the last model of the chain (on a GPU: the last two), never NLM on a CPU."""
    from usseg.runtime.preprocess import get_recipe

    frame = (plan.frames["height"], plan.frames["width"])
    wanted = plan.models[-2:] if plan.on_gpu else plan.models[-1:]
    nlm = get_recipe(m.recipe).denoise == "nlm"
    return m.name in {w.name for w in wanted} and m.can_export("fp32", batch, frame) and (plan.on_gpu or not nlm)


# -- the groups ------------------------------------------------------------------------------------------
def latency_group(plan: Plan) -> Group:
    """Batch 1, every stage: the headline pair, then one row per configuration change."""
    g = Group("batch1")
    device, models = plan.device, plan.models
    head = models[0]
    us, seg = usseg_pipeline(f"usseg:{head.name}", head, device)
    if head.checkpoint is not None:
        ss = seed_style_pipeline(f"seed-style:{head.name}", head, device, seg.contract)
        g.pipelines.append(ss)
        g.ratio(g.row(us.name, "end-to-end"), g.row(ss.name, "end-to-end"), ENGINEERING, headline=True)
        for stage in ("preprocess", "inference", "postprocess"):
            g.ratio(g.row(us.name, stage), g.row(ss.name, stage), f"{ENGINEERING} (this stage alone)")
    else:
        g.notes.append(f"{head.name}: an exported model without its checkpoint, so no seed-style rows "
                       f"(give the .pt with --model for them)")
    g.pipelines.append(us)
    if head.checkpoint is not None:
        us.variants.append(bare_onnxruntime(head, seg, device))
        ss_name = f"seed-style:{head.name}"
        g.ratio(g.row(us.name, "inference", "onnxruntime"), g.row(ss_name, "inference"),
                "runtime: PyTorch eager -> a plain ONNX Runtime InferenceSession.run, same network and weights")
        g.ratio(g.row(us.name, "inference"), g.row(us.name, "inference", "onnxruntime"),
                "usseg's IO binding and preallocated buffers vs a plain InferenceSession.run, same model file")
        for precision in ("fp16", "int8"):
            if head.can_export(precision):
                us.variants.append(precision_variant(head, seg, device, precision))
                g.ratio(g.row(us.name, "inference", precision), g.row(us.name, "inference"),
                        f"precision: fp32 -> {precision}")
    for recipe in RECIPE_VARIANTS:
        us.variants.append(recipe_variant(head, recipe))
        g.ratio(g.row(us.name, "preprocess", recipe), g.row(us.name, "preprocess"),
                f"recipe: seed -> {recipe} (preprocessing alone)")
    previous = us
    for m in models[1:]:
        p, _ = usseg_pipeline(f"usseg:{m.name}", m, device)
        g.pipelines.append(p)
        g.ratio(g.row(p.name, "end-to-end"), g.row(previous.name, "end-to-end"), m.changes)
        previous = p
    frame = (plan.frames["height"], plan.frames["width"])
    for m in models:
        if not in_graph_worth_timing(m, plan):
            continue
        p, _ = usseg_pipeline(f"usseg-graph:{m.name}", m, device, graph=frame)
        g.pipelines.append(p)
        g.ratio(g.row(p.name, "end-to-end"), g.row(f"usseg:{m.name}", "end-to-end"),
                "preprocessing: cv2 on the host -> operators inside the ONNX graph (fed raw uint8 frames)")
    if not plan.on_gpu:
        g.notes.append("in-graph preprocessing is timed on the CPU only for recipes without non-local means: "
                       "the in-graph NLM is built for GPUs (about 10x cv2's time on a CPU)")
    if len(models) > 1 and head.checkpoint is not None:
        g.ratio(g.row(previous.name, "end-to-end"), g.row(f"seed-style:{head.name}", "end-to-end"),
                "all of the above at once: engineering, network, input size and recipe")
    for p in g.pipelines:
        if p.staged:
            g.consistency.append({"pipeline": p.name, "end_to_end": g.row(p.name, "end-to-end"),
                                  "stages": {s: g.row(p.name, s) for s in ("preprocess", "inference", "postprocess")}})
    return g


def throughput_group(plan: Plan, batch: int = 8) -> Group:
    """Frames/s at batch 1 and in the multi-frame mode (one call for ``batch`` frames), for the
    last model of the chain, with host and in-graph preprocessing."""
    g = Group("multi")
    m = plan.models[-1]
    if not m.can_export("fp32", "dynamic"):
        g.notes.append(f"{m.name}: no checkpoint, so no dynamic-batch export for the multi-frame mode")
        return g
    frame = (plan.frames["height"], plan.frames["width"])
    for graph in (None, frame):
        if graph is not None and not in_graph_worth_timing(m, plan, "dynamic"):
            continue
        impl = "usseg-graph" if graph else "usseg"
        one, _ = usseg_pipeline(f"{impl}:{m.name} x1", m, plan.device, graph=graph)
        many, _ = usseg_pipeline(f"{impl}:{m.name} x{batch}", m, plan.device, graph=graph, batch=batch)
        g.pipelines += [Pipeline(one.name, one.end_to_end, one.info), many]  # end to end only
        g.ratio(g.row(many.name, "end-to-end"), g.row(one.name, "end-to-end"),
                f"{batch} frames per call (multi-frame mode, dynamic-batch model) vs 1 (fixed-batch model)")
    return g


# -- rows ------------------------------------------------------------------------------------------------
def collect(group: Group, timing: GroupTiming, plan: Plan | None) -> dict[str, Any]:
    """The group's rows (figures from the timed calls), ratios, consistency and notes, as JSON."""
    weights = {m.name: m.weights for m in plan.models} if plan is not None else {}
    rows = []
    for p in group.pipelines:
        stages = ["end-to-end"] + (["preprocess", "inference", "postprocess"] if p.staged else [])
        keys = [(s, None, {}) for s in stages] + [(v.stage, v.name, v.info) for v in p.variants]
        for stage, variant, extra in keys:
            key = row_key(p.name, stage, variant)
            if key not in timing.samples:
                continue
            info = {**p.info, **extra}
            info["provider"] = info.pop("stage_providers", {}).get(stage, info["provider"])
            if variant is not None and not extra.get("variant"):
                info["variant"] = variant
            row = {"id": f"{group.name}/{key}", "group": group.name, "pipeline": p.name, "stage": stage, **info,
                   **summarise(timing.samples[key], p.batch).to_dict(), "weights": weights.get(info["model"], {}),
                   "labels": timing.class_shares(key), "calls_ms": [round(t, 4) for t in timing.samples[key]]}
            rows.append(row)
    consistency = []
    for c in group.consistency:  # with the median of the per-round sums, to tell skew from a real gap
        sums = timing.samples.get(row_key(c["pipeline"], ROUND_SUM))
        consistency.append({**c, "median_round_sum_ms": None if not sums else round(median(sums), 4)})
    return {"group": group.name, "rows": rows, "ratios": group.ratios, "consistency": consistency,
            "notes": group.notes, "load_before": timing.load_before, "load_after": timing.load_after,
            "seconds": round(timing.seconds, 1), "rounds": max((len(v) for v in timing.samples.values()), default=0)}

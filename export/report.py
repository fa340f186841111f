"""What usseg-export prints when it is done."""

from __future__ import annotations

from pathlib import Path


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def summary(out: Path, figures: dict) -> str:
    c = figures["contract"]
    spec = c.input
    batch = "dynamic" if spec.batch is None else str(spec.batch)
    out_shape = f"[{batch}, {spec.height}, {spec.width}] uint8" if c.output == "labels" else \
        f"[{batch}, {c.num_classes}, {spec.height}, {spec.width}] float32"
    network_input = (f"{spec.name} [{batch}, {spec.channels}, {spec.height}, {spec.width}] float32, "
                     f"recipe '{c.recipe.name}', {c.resize}")
    if c.frame is not None:
        network_input = (f"{c.frame.name} [{batch}, 1, {c.frame.height}, {c.frame.width}] uint8 raw frames; "
                         f"recipe '{c.recipe.name}' and {c.resize} to {spec.height}x{spec.width} in the graph")
    lines = [
        "",
        f"usseg export: success, {figures['seconds']:.1f} s, saved as {out} ({_mb(out)})",
        f"  precision   {figures['precision']}, opset {c.provenance.get('opset')}",
        f"  input       {network_input}",
        f"  output      {c.output_name} {out_shape} ({c.output})",
        f"  classes     {', '.join(c.classes)}",
    ]
    parity = figures.get("parity")
    if parity is None:
        lines.append("  parity      not verified (--no-verify)")
    else:
        delta = "-" if parity.max_abs_delta is None else f"{parity.max_abs_delta:.2e}"
        dice = "- (no structure in either)" if parity.dice_vs_reference is None else f"{parity.dice_vs_reference:.4f}"
        lines.append(f"  parity      vs {parity.reference}: max |delta| {delta}, labels agree "
                     f"{100 * parity.label_agreement:.4f} %, Dice {dice}")
    graph = figures.get("graph_parity")
    if graph is not None:
        lines.append(f"  in-graph    vs host preprocessing on {graph.frames} frames: labels agree "
                     f"{100 * graph.label_agreement:.4f} %, max |input delta| {graph.input_max_delta:.2e}")
    ensemble = figures.get("ensemble")
    if ensemble is not None:
        k = ensemble["folds"]
        lines.append(f"  ensemble    {k} folds, probabilities averaged: {ensemble['ms_per_frame']:.1f} ms per frame "
                     f"on this CPU (ONNX Runtime, batch 1, median of 20), {k} network passes; one fold alone "
                     f"(usseg export --model RUN/fold_0/best.pt) for real time")
    if figures.get("triton"):
        lines.append(f"  triton      {figures['triton']} (tritonserver --model-repository {figures['triton'].parent})")
    lines.append(f"next: usseg predict --model {out} IMAGES... --out result/")
    return "\n".join(lines)

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
    lines = [
        "",
        f"usseg-export: success, {figures['seconds']:.1f} s, saved as {out} ({_mb(out)})",
        f"  precision   {figures['precision']}, opset {c.provenance.get('opset')}",
        f"  input       {spec.name} [{batch}, {spec.channels}, {spec.height}, {spec.width}] float32, "
        f"recipe '{c.recipe.name}', {c.resize}",
        f"  output      {c.output_name} {out_shape} ({c.output})",
        f"  classes     {', '.join(c.classes)}",
    ]
    parity = figures.get("parity")
    if parity is None:
        lines.append("  parity      not verified (--no-verify)")
    else:
        delta = "-" if parity.max_abs_delta is None else f"{parity.max_abs_delta:.2e}"
        lines.append(f"  parity      vs {parity.reference}: max |delta| {delta}, labels agree "
                     f"{100 * parity.label_agreement:.4f} %, Dice {parity.dice_vs_reference:.4f}")
    if figures.get("triton"):
        lines.append(f"  triton      {figures['triton']} (tritonserver --model-repository {figures['triton'].parent})")
    lines.append(f"next: usseg-infer --model {out} IMAGES... --out result/")
    return "\n".join(lines)

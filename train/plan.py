"""A training plan from a data set fingerprint and the device: each decision a small rule with
one line of reason.

    plan = make_plan(fingerprint, Device.cpu(cores=2))
    plan.config        # a TrainConfig: what `usseg train --plan plan.json` trains
    plan.reasons       # {field: why}
    plan.candidates    # networks a time budget may choose among, narrowest first (budget.py)

Pure: no file, clock or GPU is touched here (plan_cli.py measures, times and writes). The rules
come from what was measured on this project's two data sets (docs/real-data.md, docs/ablation.md)
and from nnU-Net's habits (input size from the median frame, depth from the structures' size,
batch from memory); none of them looks at a test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .budget import PATIENCE_START
from .config import TrainConfig
from .fingerprint import Fingerprint

# Input pixels per frame: the demo's 240x320 on a CPU (it trains the phantom in minutes on two
# cores); on a GPU, frames up to 512x640 are kept at nearly full size.
PIXELS = {"cpu": 240 * 320, "cuda": 512 * 640}
THIN_MIN_PX = 5           # the thinnest structures (p5 of thickness) keep at least this many pixels
THIN_BOUNDARY_PX = 8      # structures thinner than this at input size get the boundary loss
MIN_DEPTH, MAX_DEPTH = 3, 6
BOTTLENECK_MIN_PX = 8     # the deepest feature map keeps at least this many pixels a side
CHANNEL_CAP = {"cpu": 256, "cuda": 512}
# Networks a budget chooses among, narrowest first: (first channels, residual units per level).
LADDER = {"cpu": ((8, 1), (16, 1), (16, 2), (24, 2), (32, 2)), "cuda": ((16, 2), (32, 2), (48, 2))}
DEFAULT_NETWORK = {"cpu": (16, 2), "cuda": (32, 2)}  # without a budget
TARGET_STEPS = 4000       # optimiser steps without a budget (the wide usgra-seg run peaked near 3,700)
VAL_TARGET = 20           # frames wanted in val when the data set has no val split
INTENSITY = {"intensity": 0.3, "brightness": 0.2, "contrast": 0.25, "gamma": 0.3}  # AugmentParams
BYTES_PER_ACTIVATION = 4 * 12  # float32, about a dozen stored tensors per conv level (fwd + bwd)


@dataclass(frozen=True)
class Device:
    """What the plan needs to know about the machine."""

    kind: str = "cpu"              # cpu | cuda
    memory_gib: float = 8.0        # for the batch size (GPU memory, or RAM for a CPU)
    cores: int = 1
    name: str = ""

    @classmethod
    def cpu(cls, cores: int = 1, memory_gib: float = 8.0) -> Device:
        return cls("cpu", memory_gib, cores, "cpu")


@dataclass(frozen=True)
class Plan:
    config: TrainConfig
    reasons: dict[str, str]
    candidates: list[dict[str, Any]] = field(default_factory=list)  # model_overrides, narrowest first
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A TrainConfig file (loads with --config / --plan) with the reasons and what it came from."""
        return {**self.config.to_dict(), "reasons": dict(self.reasons),
                "plan": {**self.info, "candidates": self.candidates}}


def receptive_field(depth: int, res_units: int, kernel: int = 3) -> int:
    """Theoretical receptive field (px of the input) of MONAI's UNet with ``depth`` stride-2
    levels and ``res_units`` convolutions per residual unit: each kxk convolution adds (k - 1)
    times the stride product before it; a transposed convolution adds one pixel of its input."""
    convs, rf, jump = max(res_units, 1), 1, 1
    for _ in range(depth):                 # encoder: a strided convolution, then the unit's others
        rf += (kernel - 1) * jump
        jump *= 2
        rf += (convs - 1) * (kernel - 1) * jump
    rf += convs * (kernel - 1) * jump      # bottom
    for _ in range(depth):                 # decoder: transposed convolution, then one convolution
        rf += jump
        jump //= 2
        rf += (kernel - 1) * jump if res_units > 0 else 0
    return rf


def _present(fp: Fingerprint) -> list:
    return [c for c in fp.class_stats if c.frames_present > 0]


def thinnest_at_input(fp: Fingerprint, scale: float) -> float | None:
    """Width in input pixels of the thinnest structures (p5 of thickness over the classes present)."""
    thin = [c.thickness_px["p5"] * scale for c in _present(fp) if c.thickness_px["p5"]]
    return min(thin) if thin else None


def thin_lines(fp: Fingerprint, scale: float) -> bool:
    """Structures thinner than THIN_BOUNDARY_PX at input size: the boundary loss on, intensity changes off."""
    thinnest = thinnest_at_input(fp, scale)
    return thinnest is not None and thinnest < THIN_BOUNDARY_PX


def pixel_budget_scale(fp: Fingerprint, device: Device) -> float:
    """Resize factor that gives the median frame the device's PIXELS, never above 1."""
    return min(1.0, math.sqrt(PIXELS[device.kind] / (fp.median_height * fp.median_width)))


def plan_scale(fp: Fingerprint, device: Device) -> tuple[float, str]:
    """Resize factor of the median frame: a pixel budget per device, raised so that the thinnest
    structures keep THIN_MIN_PX pixels, never above 1."""
    by_pixels = pixel_budget_scale(fp, device)
    thinnest = thinnest_at_input(fp, 1.0)
    by_thin = THIN_MIN_PX / thinnest if thinnest else 0.0
    scale = min(1.0, max(by_pixels, by_thin))
    why = f"{PIXELS[device.kind]:,} input pixels on a {device.kind.upper()}"
    if thinnest is not None:
        why += f"; the thinnest structures ({thinnest:.0f} px, p5) keep {thinnest * scale:.1f} px"
        if by_thin > by_pixels:
            why = f"raised so that the thinnest structures ({thinnest:.0f} px, p5) keep {THIN_MIN_PX} px"
    return scale, why


def plan_depth(fp: Fingerprint, scale: float, res_units: int) -> tuple[int, str]:
    """The fewest stride-2 levels whose receptive field covers the largest structure (p95 of the
    longest side), within [MIN_DEPTH, MAX_DEPTH] and a bottleneck of BOTTLENECK_MIN_PX or more."""
    extents = [c.extent_px["p95"] for c in _present(fp) if c.extent_px["p95"]]
    largest = (max(extents) if extents else 0.0) * scale
    short_side = min(fp.median_height, fp.median_width) * scale
    deepest = max(MIN_DEPTH, min(MAX_DEPTH, int(math.log2(max(short_side / BOTTLENECK_MIN_PX, 1)))))
    depth = next((d for d in range(MIN_DEPTH, deepest + 1) if receptive_field(d, res_units) >= largest), deepest)
    rf = receptive_field(depth, res_units)
    why = (f"{depth} levels: receptive field {rf} px covers the largest structure ({largest:.0f} px at input "
           f"size, p95)" if rf >= largest else
           f"{depth} levels (the most that keep a {BOTTLENECK_MIN_PX}-px bottleneck): receptive field {rf} px, "
           f"short of the largest structure ({largest:.0f} px)")
    return depth, why


def plan_size(fp: Fingerprint, scale: float, depth: int) -> tuple[int, int, str]:
    """Height and width at ``scale``, multiples of 2**depth, keeping the median aspect ratio."""
    step = 2 ** depth
    height = max(step, round(fp.median_height * scale / step) * step)
    width = max(step, round(height * fp.median_aspect / step) * step)
    why = (f"{height}x{width}: the median frame {fp.median_height:.0f}x{fp.median_width:.0f} (aspect "
           f"{fp.median_aspect:.3f}) at scale {scale:.2f}, multiples of {step} (aspect {width / height:.3f})")
    return height, width, why


def network(first: int, res_units: int, depth: int, cap: int, height: int, width: int) -> dict[str, Any]:
    """model_overrides of the 'wide' base for a UNet of ``depth`` levels from ``first`` channels."""
    channels = [min(first * 2 ** i, cap) for i in range(depth + 1)]
    return {"name": f"plan-{first}x{res_units}", "channels": channels, "strides": [2] * depth,
            "num_res_units": res_units, "height": height, "width": width}


def plan_network(fp: Fingerprint, device: Device, scale: float) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """The UNet at ``scale``: (model_overrides without a budget, the widths a budget chooses
    among narrowest first, the reason). Depth and input size follow from the scale."""
    first, res_units = DEFAULT_NETWORK[device.kind]
    depth, why_depth = plan_depth(fp, scale, res_units)
    height, width, why_size = plan_size(fp, scale, depth)
    cap = CHANNEL_CAP[device.kind]
    chosen = network(first, res_units, depth, cap, height, width)
    ladder = [network(f, r, depth, cap, height, width) for f, r in LADDER[device.kind]]
    why = (f"UNet {chosen['channels'][0]}..{chosen['channels'][-1]} channels, {res_units} residual units: "
           f"{'the width that beat the lite network by 0.11 mean Dice on real frames' if device.kind == 'cpu' else 'GPU default'}; "
           f"input {why_size}; depth {why_depth}")
    return chosen, ladder, why


def plan_batch(fp: Fingerprint, device: Device, overrides: dict[str, Any]) -> tuple[int, str]:
    """CPU: 4 (a CPU's throughput per frame hardly grows with the batch, so smaller batches give
    more steps per minute). GPU: the largest power of two that fits 40 % of the memory, at most 32
    and at most an eighth of the train frames."""
    if device.kind == "cpu":
        return 4, "4 on a CPU: more optimiser steps per minute than larger batches at the same frames per second"
    h, w = overrides["height"], overrides["width"]
    per_frame = sum(c * h * w / 4 ** i for i, c in enumerate(overrides["channels"])) * 2 * BYTES_PER_ACTIVATION
    fits = int(0.4 * device.memory_gib * 2**30 / per_frame)
    cap = min(32, fits, max(2, fp.train_frames // 8))
    batch = 2 ** int(math.log2(max(cap, 2)))
    return batch, (f"{batch}: about {per_frame / 2**20:.0f} MiB of activations per frame, 40 % of "
                   f"{device.memory_gib:.0f} GiB; at most an eighth of the {fp.train_frames} train frames")


def plan_augmentation(fp: Fingerprint, scale: float) -> tuple[dict[str, float], str]:
    """The seed's spatial transforms, with the scale range from how much structure sizes vary, and,
    unless the structures are thin lines, nnU-Net's habit of brightness, contrast and gamma changes
    on some frames: another probe, gain or patient shifts the grey levels, and a network that
    learnt one brightness per structure misses it (usgra-seg's darker nerves). On val they gained
    on usgra-seg's blobs and cost on the phantom's few-pixel lines (docs/real-data.md)."""
    ratios = [c.extent_px["p95"] / c.extent_px["p5"] for c in _present(fp) if c.extent_px["p5"]]
    spread = sorted(ratios)[len(ratios) // 2] if ratios else 1.0
    m = fp.frame_mean
    lines = thin_lines(fp, scale)
    scale_range = round(min(0.2, max(0.1, 0.1 * math.log2(max(spread, 1.0)))), 2)
    params = {"flip": 0.5, "scale": scale_range, **({} if lines else INTENSITY)}
    why = (f"mirror 0.5; scale +-{scale_range:.0%} (structure sizes vary {spread:.1f}x, p5-p95 of the longest side); "
           "the seed's affine, elastic and grid distortion; ")
    if lines:
        why += (f"no brightness or contrast change: the thinnest structures are {thinnest_at_input(fp, scale):.1f} px wide at input "
                "size, and on the phantom's lines they cost val Dice (0.886 with, 0.903 without)")
    else:
        why += ("on 30 % of the frames brightness +-0.2, contrast +-25 %, gamma 0.7-1.3, for other probes and gains "
                f"(frame brightness p5-p95 {m['p5']:.0f}-{m['p95']:.0f} grey here; usgra-seg best val 0.715 with, "
                "0.700 without, at 40 minutes)")
    return params, why


def plan_boundary_loss(fp: Fingerprint, scale: float) -> tuple[float, str]:
    """HausdorffDT blended in (0.2, capped and guarded) only for thin structures: Dice barely moves
    when a few-pixel-wide line is off by a pixel, a boundary term does. Off for anything else: on
    the large, irregular blobs of real frames it made training collapse."""
    thinnest = thinnest_at_input(fp, scale)
    if thin_lines(fp, scale):
        return 0.2, (f"0.2 from 20 % to 60 % of the epochs: the thinnest structures are {thinnest:.1f} px wide at "
                     f"input size (< {THIN_BOUNDARY_PX}), where a boundary term helps (the phantom's lines trained "
                     "well with it); capped at hd_cap x DiceCE and switched off if val Dice falls by hd_guard")
    return 0.0, ("0, DiceCE only: the structures are at least "
                 f"{thinnest or 0:.0f} px wide at input size, and on such blobs the HausdorffDT blend made "
                 "training collapse (usgra-seg val Dice 0.385 -> 0.10, docs/real-data.md)")


def plan_epochs(steps_per_epoch: int) -> tuple[int, int, int, str]:
    """Without a budget: TARGET_STEPS optimiser steps, about VAL_TARGET validations, early stop
    after 30 % of them without gain."""
    epochs = max(1, math.ceil(TARGET_STEPS / max(steps_per_epoch, 1)))
    val_every = max(1, round(epochs / 20))
    patience = max(3, math.ceil(0.3 * math.ceil(epochs / val_every)))
    return epochs, val_every, patience, (f"{epochs} epochs of {steps_per_epoch} steps: {TARGET_STEPS} optimiser "
                                         "steps (no budget given; `usseg train --budget` fits them to the time you have)")


def make_plan(fp: Fingerprint, device: Device) -> Plan:
    """The plan for ``fp`` on ``device``; every field decided here has a line in ``reasons``."""
    reasons: dict[str, str] = {}
    scale, why_scale = plan_scale(fp, device)
    chosen, candidates, why_network = plan_network(fp, device, scale)
    reasons["model_overrides"] = f"{why_network}; {why_scale}"
    batch, reasons["batch_size"] = plan_batch(fp, device, chosen)
    has_val = fp.frames.get("val", 0) > 0
    val_fraction = 0.1 if has_val else min(0.2, max(0.1, VAL_TARGET / max(fp.train_frames, 1)))
    reasons["val_fraction"] = (f"the data set's own val split ({fp.frames['val']} frames)" if has_val else
                               f"{val_fraction:.2f} of the {fp.train_frames} train frames as val (about "
                               f"{VAL_TARGET}, 10-20 %), stratified on class presence")
    train_frames = fp.train_frames if has_val else round(fp.train_frames * (1 - val_fraction))
    epochs, val_every, patience, reasons["epochs"] = plan_epochs(math.ceil(train_frames / batch))
    reasons["val_every"] = f"every {val_every} epochs: about 20 validations"
    reasons["patience"] = (f"stop after {patience} validations (30 %) without a better mean val Dice, not before "
                           f"{PATIENCE_START:.0%} of the epochs (the cosine schedule's low-rate end is where runs gained)")
    augmentation, reasons["augmentation"] = plan_augmentation(fp, scale)
    reasons["recipe"] = ("realtime (CLAHE + unsharp, no denoiser): NLM costs about 60 ms a frame and gained "
                         "nothing measurable on the phantom or on usgra-seg (docs/ablation.md)")
    hd_max, reasons["hd_max"] = plan_boundary_loss(fp, scale)
    reasons["schedule"] = "cosine to 0 at the last epoch, Adam at 1e-3 (the settings of every run measured here)"
    workers = 0 if device.kind == "cpu" else min(4, max(device.cores - 1, 0))
    reasons["num_workers"] = (f"{workers}: loader workers slowed training on 2 CPU cores" if device.kind == "cpu"
                              else f"{workers} loader workers beside the GPU")
    cfg = TrainConfig(model="wide", model_overrides=chosen, recipe="realtime", epochs=epochs, batch_size=batch,
                      lr=1e-3, schedule="cosine", val_every=val_every, patience=patience,
                      patience_start=PATIENCE_START, num_workers=workers,
                      augment=True, augmentation=augmentation, hd_max=hd_max,
                      val_fraction=round(val_fraction, 3),
                      device=device.kind)
    info = {"data": fp.data, "data_id": fp.data_id, "device": {"kind": device.kind, "name": device.name,
                                                               "memory_gib": device.memory_gib, "cores": device.cores},
            "scale": round(scale, 4)}
    return Plan(cfg, reasons, candidates, info)

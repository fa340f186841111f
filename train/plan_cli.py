"""usseg plan: a data set fingerprint and a training plan, each decision with its reason.

    usseg plan --data DIR [--out DIR] [--device auto|cpu|cuda] [--spacing MM]

Writes fingerprint.json (measured facts of the train and val frames; of the test split only the
images are read, for the near-duplicate check)
and plan.json (a TrainConfig file with a line of reason per decision) into the data folder, or
into --out. Edit the plan if you like, then train from it:

    usseg train --data DIR --out RUN --plan DIR/plan.json [--budget 30m]

``usseg train`` without --profile, --config or --plan makes the same plan itself.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from usseg.runtime.cli import add_device_option, output_folder
from usseg.runtime.errors import UsageError
from usseg.runtime.fileio import make_dirs
from usseg.runtime.imageio import add_max_pixels_option
from usseg.runtime.provenance import usable_cores

from .config import DEVICES
from .fingerprint import Fingerprint, measure, write_fingerprint
from .io import DataError, set_max_pixels, write_json
from .leakage import Leakage
from .maskfolder import open_mask_folder
from .plan import Device, Plan, make_plan

log = logging.getLogger("usseg.plan")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="mask folder (images/, masks/, split.csv, classes.json)")
    p.add_argument("--out", type=output_folder, metavar="DIR",
                   help="where fingerprint.json and plan.json go (default: --data)")
    add_device_option(p, allowed=DEVICES)
    p.add_argument("--spacing", type=float, help="pixel spacing in mm, recorded in the fingerprint")
    add_max_pixels_option(p)


def detect_device(name: str = "auto") -> Device:
    """The device a run would use: a CUDA GPU's memory, or this machine's cores and RAM."""
    import torch

    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: torch {torch.__version__} sees no CUDA device; use --device cpu or auto")
    if kind in ("auto", "cuda") and torch.cuda.is_available():
        index = int(name.split(":")[1]) if ":" in name else 0
        props = torch.cuda.get_device_properties(index)
        return Device("cuda", props.total_memory / 2**30, usable_cores(), props.name)
    cores = usable_cores()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = 8.0
    return Device.cpu(cores, round(memory, 1))


def plan_data(data: Path, device: str = "auto", spacing: float | None = None) -> tuple[Fingerprint, Plan]:
    """Measure ``data`` and plan a run for ``device``."""
    if spacing is not None and not spacing > 0:
        raise UsageError(f"--spacing {spacing}: must be > 0 (mm per pixel)")
    folder = open_mask_folder(data)
    fp = measure(folder, spacing)
    facts = detect_device(device)
    plan = make_plan(fp, facts)
    log.info("fingerprint of %s: %d train / %d val frames measured (test masks not read), median %dx%d, classes %s",
             data, fp.frames["train"], fp.frames["val"], fp.median_height, fp.median_width,
             ", ".join(f"{c.name} {c.pixel_share:.2%}" for c in fp.class_stats))
    if fp.leakage is not None:
        leakage = Leakage(**fp.leakage)
        log.info("%s", leakage.summary())
        if leakage.warning():
            log.warning("%s", leakage.warning())
    return fp, plan


def write_plan(out: Path, fp: Fingerprint, plan: Plan, extra_reasons: dict[str, str] | None = None,
               config: Any = None) -> tuple[Path, Path]:
    """fingerprint.json and plan.json into ``out``; ``config`` and ``extra_reasons`` (a budget's
    fitting) replace the plan's own where given."""
    make_dirs(out)
    data = plan.to_dict()
    if config is not None:
        data.update(config.to_dict())
    data["reasons"].update(extra_reasons or {})
    write_fingerprint(out / "fingerprint.json", fp)
    write_json(out / "plan.json", data)
    return out / "fingerprint.json", out / "plan.json"


def run(args: argparse.Namespace) -> int:
    set_max_pixels(args.max_pixels)
    out = args.out or args.data
    if not os.access(out if out.exists() else out.parent, os.W_OK):
        raise DataError(f"{out}: not writable; give --out DIR for fingerprint.json and plan.json")
    fp, plan = plan_data(args.data, args.device, args.spacing)
    fp_path, plan_path = write_plan(out, fp, plan)
    for key, why in plan.reasons.items():
        log.info("%-15s %s", key, why)
    log.info("wrote %s and %s", fp_path, plan_path)
    log.info("next: usseg train --data %s --out RUN --plan %s [--budget 30m]", args.data, plan_path)
    return 0

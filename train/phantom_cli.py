"""usseg synth: write the synthetic spinal phantom as a seed-format data set.

    usseg synth --out data/phantom --count 70 --seed 1
    usseg synth --contact-sheet docs/phantom_contact_sheet.png --sample path/to/Image_97.png

The data set is ``OUT/images/<name>.png`` (8-bit grey) plus ``OUT/annotations.json``, written last,
so a directory with an annotations file is always complete.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from usseg.runtime.cli import add_out_option, alias_main
from usseg.runtime.errors import UsageError

from .phantom import PhantomConfig, contact_sheet, write_dataset

log = logging.getLogger("usseg.synth")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_out_option(p, "output folder (images/ and annotations.json)", required=False)
    p.add_argument("--count", type=int, default=70, help="number of frames (default 70, the size of the real set)")
    p.add_argument("--seed", type=int, default=0, help="random seed; frame i uses rng([seed, i])")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--missing-rate", type=float, default=0.15,
                   help="fraction of off-midline frames, annotated with an empty list")
    p.add_argument("--contact-sheet", type=Path, metavar="PNG",
                   help="also (or only) write a contact sheet of frames from this seed")
    p.add_argument("--sample", type=Path, help="a real frame to show in the contact sheet's first tile")


def run(args: argparse.Namespace) -> int:
    if args.out is None and args.contact_sheet is None:
        raise UsageError("nothing to do: give --out and/or --contact-sheet")
    if args.count < 1:
        raise UsageError(f"--count {args.count}: must be >= 1")
    if args.sample is not None and not args.sample.is_file():
        raise UsageError(f"--sample {args.sample}: no such file")
    try:
        cfg = PhantomConfig(height=args.height, width=args.width, missing_rate=args.missing_rate)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    summary = []
    if args.contact_sheet is not None:
        path = contact_sheet(args.contact_sheet, cfg, seed=args.seed, sample=args.sample)
        log.info("contact sheet written to %s", path)
        summary.append(f"contact sheet {path}")
    if args.out is not None:
        start = time.perf_counter()
        annotations = write_dataset(args.out, args.count, args.seed, cfg)
        seconds = time.perf_counter() - start
        empty = sum(1 for shapes in annotations.values() if not shapes)
        summary.insert(0, f"wrote {len(annotations)} frames {cfg.height}x{cfg.width} (seed {args.seed}, "
                          f"{empty} off-midline) to {args.out} in {seconds:.1f} s")
    print("; ".join(summary))
    return 0


main = alias_main("synth")


if __name__ == "__main__":
    raise SystemExit(main())

"""``usseg``: one command, a subcommand per stage, one meaning per shared option.

    usseg synth | prepare | plan | train | evaluate | export | predict | stream | bench | demo  [options]

Every subcommand lives in its stage's module, which defines ``add_arguments(parser)`` and
``run(args) -> int``; this module builds the parser, sets up logging and turns errors into one
line and an exit code (see :mod:`usseg.runtime.errors`). It imports a stage only when that stage
is run, so ``usseg predict`` never loads torch.

Shared options mean the same everywhere:
    --model   the thing being run (a checkpoint for evaluate/export, an .onnx model for predict/stream/bench)
    --out     always a folder
    --device  auto | cpu | cuda | cuda:N | tensorrt | tensorrt:N   (default auto)
    -v / -q   more / less logging
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import providers
from .errors import EXIT_SETUP, UssegError

log = logging.getLogger("usseg")


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    summary: str
    alias: str | None = None  # the older stand-alone script name, kept working


# In pipeline order: `usseg --help` lists them so.
COMMANDS: tuple[Command, ...] = (
    Command("synth", "usseg.train.phantom_cli", "write the built-in synthetic spinal phantom (seed format)",
            "usseg-synth"),
    Command("extract", "usseg.runtime.extract", "frames of a video, camera or DICOM cine as PNG files to label"),
    Command("prepare", "usseg.train.prepare", "annotations + images, or a mask folder -> a split mask folder",
            "usseg-prepare"),
    Command("plan", "usseg.train.plan_cli", "fingerprint a mask folder and plan its training, with reasons"),
    Command("train", "usseg.train.train_cli", "train a segmentation model on a mask folder", "usseg-train"),
    Command("evaluate", "usseg.train.evaluate", "score a checkpoint or an exported model on a split",
            "usseg-evaluate"),
    Command("export", "usseg.export.cli", "checkpoint -> ONNX model that carries its own contract", "usseg-export"),
    Command("predict", "usseg.runtime.infer", "segment image files and folders with an exported model",
            "usseg-infer"),
    Command("stream", "usseg.runtime.stream_cli", "segment a video, camera, image folder or DICOM cine live",
            "usseg-stream"),
    Command("bench", "usseg.benchmarks.cli", "benchmark against the seed-style pipeline on this machine",
            "usseg-bench"),
    Command("demo", "usseg.benchmarks.demo", "the whole pipeline on the phantom, in one command", "usseg-demo"),
)


def command(name: str) -> Command:
    for cmd in COMMANDS:
        if cmd.name == name:
            return cmd
    raise KeyError(name)


# -- shared options ---------------------------------------------------------------------------
def parse_device(text: str) -> str:
    """``--device``: the runtime's one device syntax (:func:`usseg.runtime.providers.parse_device`),
    as argparse's error with the valid forms; returns the text, normalised."""
    try:
        providers.parse_device(text)
    except providers.ProviderError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip().lower()


def add_device_option(p: argparse.ArgumentParser, allowed: tuple[str, ...] | None = None) -> None:
    """``--device``; ``allowed`` narrows the kinds a stage can use (training has no TensorRT)."""

    def checked(text: str) -> str:
        device = parse_device(text)
        if allowed is not None and device.split(":")[0] not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r}: this command runs on {', '.join(allowed)}")
        return device

    kinds = (providers.DEVICE_HELP if allowed is None else ", ".join(allowed)) + " (default auto)"
    p.add_argument("--device", type=checked, default="auto", metavar="DEVICE", help=kinds)


def output_folder(text: str) -> Path:
    """``--out``'s value: a folder, and not an option taken as one (``--out=--resume``)."""
    if text.startswith("-"):
        raise argparse.ArgumentTypeError(f"{text!r} looks like an option, not a folder (write ./{text} for a folder "
                                         f"of that name)")
    return Path(text)


def add_out_option(p: argparse.ArgumentParser, help: str, required: bool = True, default: Path | None = None) -> None:
    p.add_argument("--out", type=output_folder, required=required and default is None, default=default,
                   metavar="DIR", help=help + (f" (default {default})" if default is not None else ""))


def add_model_option(p: argparse.ArgumentParser, help: str, required: bool = True) -> None:
    p.add_argument("--model", type=Path, required=required, metavar="PATH", help=help)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """How a Segmenter runs an exported model (predict, stream)."""
    from .prepare import PREPROCESS

    p.add_argument("--preprocess", choices=PREPROCESS, default="auto",
                   help="where the recipe runs: auto (fused CUDA kernels when the device and recipe allow, "
                        "else the host), host, fused (default auto)")
    p.add_argument("--tta", action="store_true",
                   help="test-time flip: average the frame's and its mirror's scores (about twice the "
                        "inference time; logits/probs models only)")


def _add_logging_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more detail (-vv: debug)")
    group.add_argument("-q", "--quiet", action="count", default=0, help="warnings and errors only")


# -- logging ------------------------------------------------------------------------------------
class _Formatter(logging.Formatter):
    """``message`` for progress, ``warning: message`` / ``error: message`` for problems; other
    torchrun ranks tag their lines with the rank."""

    def __init__(self, rank: str | None) -> None:
        super().__init__()
        self.rank = rank

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.levelno <= logging.DEBUG:
            text += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        if self.rank is not None:
            text = f"[rank {self.rank}] {text}"
        return text


_HANDLER_MARK = "_usseg_handler"


def setup_logging(verbosity: int = 0) -> None:
    """One log format for every command: INFO by default, DEBUG with -vv, WARNING with -q; on
    torchrun ranks other than 0, warnings and errors only. Idempotent (tests call it many times)."""
    rank = os.environ.get("RANK")
    level = logging.INFO if verbosity == 0 else logging.DEBUG if verbosity > 1 else (
        logging.INFO if verbosity == 1 else logging.WARNING)
    if rank not in (None, "0"):
        level = max(level, logging.WARNING)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(rank if rank not in (None, "0") else None))
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    if root.level > logging.DEBUG or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    log.setLevel(level)


# -- building and running -----------------------------------------------------------------------
def build_parser(name: str, prog: str | None = None) -> argparse.ArgumentParser:
    cmd = command(name)
    module = importlib.import_module(cmd.module)
    p = argparse.ArgumentParser(prog=prog or f"usseg {name}", description=_description(module, cmd),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(p)
    _add_logging_options(p)
    return p


def _description(module, cmd: Command) -> str:
    doc = (module.__doc__ or cmd.summary).strip()
    return doc.split("\n\n")[0] if len(doc) > 600 else doc


def run_command(name: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` for one subcommand and run it: the exit-code rule in one place."""
    try:
        parser = build_parser(name, prog)
    except ModuleNotFoundError as exc:  # the stage's extra is not installed (--help included)
        setup_logging()
        return _missing_module(exc, name)
    args = parser.parse_args(argv)
    setup_logging(args.verbose - args.quiet)
    module = importlib.import_module(command(name).module)
    code = _exit_code(module, args, name)
    end_process = getattr(module, "end_process", None)  # a stage whose process must end its own way
    return code if end_process is None else end_process(code)


def _exit_code(module, args: argparse.Namespace, name: str) -> int:
    try:
        return int(module.run(args))
    except ModuleNotFoundError as exc:  # an extra a stage imports only when it runs
        return _missing_module(exc, name)
    except UssegError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except OSError as exc:  # a folder that cannot be written, a disk that is full: one line, not a traceback
        log.error("%s", os_error_message(exc))
        return EXIT_SETUP
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM where a command handles it so
        from .interrupt import EXIT_CODES, stopped_by

        log.error("interrupted (%s)", stopped_by(exc))
        return EXIT_CODES[stopped_by(exc)]


def _missing_module(exc: ModuleNotFoundError, name: str) -> int:
    from .extras import missing_extra

    missing = missing_extra(exc, name)
    if missing is None:
        raise exc
    log.error("%s", missing)
    return missing.exit_code


def os_error_message(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def usage() -> str:
    width = max(len(c.name) for c in COMMANDS)
    lines = ["usage: usseg COMMAND [options]   (usseg COMMAND --help for its options)", "",
             "Real-time spinal ultrasound segmentation: train with MONAI, export to ONNX, run on ONNX Runtime.",
             "", "commands, in pipeline order:"]
    lines += [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS]
    lines += ["", "exit codes: 0 ok, 1 some inputs failed (each one reported), 2 usage or set-up error"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else EXIT_SETUP
    if argv[0] == "--version":
        from .provenance import usseg_version

        print(f"usseg {usseg_version()}")
        return 0
    names = [c.name for c in COMMANDS]
    if argv[0] not in names:
        print(f"usseg: unknown command {argv[0]!r}; valid commands are {names} (usseg --help)", file=sys.stderr)
        return EXIT_SETUP
    return run_command(argv[0], argv[1:])


def alias_main(name: str):
    """The ``main`` of an older script name (``usseg-infer`` for ``usseg predict``...)."""

    def main_(argv: list[str] | None = None) -> int:
        return run_command(name, argv, prog=command(name).alias)

    return main_


if __name__ == "__main__":
    sys.exit(main())

"""The one `usseg` command: its listing, its shared options and its exit-code rule."""

import argparse
import logging
import subprocess
import sys

import pytest

from usseg.runtime import cli
from usseg.runtime.errors import UssegError

PIPELINE = ["synth", "extract", "prepare", "plan", "train", "evaluate", "export", "predict", "stream", "bench", "demo"]


def test_help_lists_the_pipeline_in_order(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert [name for name in listed if name in PIPELINE] == PIPELINE
    assert "exit codes: 0 ok, 1 some inputs failed" in out


@pytest.mark.parametrize("name", PIPELINE)
def test_every_subcommand_has_help_with_the_shared_logging_options(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: usseg {name}")
    assert "--verbose" in out and "--quiet" in out


def test_unknown_command_is_a_usage_error(capsys):
    assert cli.main(["segment"]) == 2
    assert "unknown command 'segment'" in capsys.readouterr().err
    assert cli.main([]) == 2


@pytest.mark.parametrize("name, option, meaning", [
    ("predict", "--out", "folder"), ("stream", "--out", "folder"), ("evaluate", "--out", "folder"),
    ("export", "--out", "folder"), ("train", "--out", "folder"), ("bench", "--out", "folder"),
    ("predict", "--model", ".onnx"), ("stream", "--model", ".onnx"), ("evaluate", "--model", "checkpoint"),
    ("export", "--model", "checkpoint"),
])
def test_shared_options_mean_the_same_everywhere(name, option, meaning):
    help_text = next(a.help for a in cli.build_parser(name)._actions if option in a.option_strings)
    assert meaning in help_text


@pytest.mark.parametrize("name", ["predict", "stream", "evaluate", "train", "bench", "demo"])
def test_device_defaults_to_auto_everywhere(name):
    action = next(a for a in cli.build_parser(name)._actions if "--device" in a.option_strings)
    assert action.default == "auto"


@pytest.mark.parametrize("text, expected", [
    ("auto", "auto"), ("CPU", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1"), ("tensorrt:0", "tensorrt:0"),
])
def test_device_syntax(text, expected):
    assert cli.parse_device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "cpu:0", "auto:1", "cuda:x", "cuda:"])
def test_bad_devices_are_refused_with_the_valid_forms(text):
    with pytest.raises(argparse.ArgumentTypeError, match="valid devices are auto"):
        cli.parse_device(text)


def test_training_refuses_tensorrt_at_parse_time(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--data", "d", "--out", "o", "--device", "tensorrt"])
    assert exc.value.code == 2
    assert "this command runs on auto, cpu, cuda" in capsys.readouterr().err


class _Stage:
    """A stand-in stage module whose run raises what the test asks for."""

    error: BaseException | None = None

    @staticmethod
    def add_arguments(p):
        p.add_argument("--x")

    @classmethod
    def run(cls, args):
        if cls.error is not None:
            raise cls.error
        return 1


@pytest.mark.parametrize("error, code, message", [
    (None, 1, None),
    (UssegError("data/x.png: not a readable image"), 2, "error: data/x.png: not a readable image"),
    (PermissionError(13, "Permission denied", "/out/results.json"), 2, "error: /out/results.json: Permission denied"),
    (KeyboardInterrupt(), 130, "error: interrupted (Ctrl-C)"),
])
def test_errors_become_one_line_and_an_exit_code(monkeypatch, capsys, error, code, message):
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: _Stage)
    monkeypatch.setattr(_Stage, "error", error)
    assert cli.run_command("predict", ["--x", "1"]) == code
    err = capsys.readouterr().err
    if message is None:
        assert err == ""
    else:
        assert err.strip() == message  # one line, no traceback


def test_log_format_is_plain_for_progress_and_tagged_for_problems(capsys):
    cli.setup_logging(0)
    log = logging.getLogger("usseg.test")
    log.info("step done")
    log.warning("something odd")
    assert capsys.readouterr().err.splitlines() == ["step done", "warning: something odd"]
    cli.setup_logging(-1)
    log.info("hidden")
    assert capsys.readouterr().err == ""
    cli.setup_logging(0)


def test_old_script_names_run_the_same_parser():
    from usseg.runtime import infer

    with pytest.raises(SystemExit) as exc:
        infer.main(["--help"])
    assert exc.value.code == 0


@pytest.mark.parametrize("name", ["predict", "stream"])
def test_runtime_commands_do_not_load_the_training_stack(name):
    code = (f"import sys\nfrom usseg.runtime import cli\ncli.build_parser({name!r})\n"
            "print(sorted(m for m in ('torch', 'monai', 'albumentations') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

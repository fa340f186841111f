"""README.md's examples run: every ```python block is executed against a real model, and every
usseg command line shown is parsed by the real parser, so README and code cannot drift apart."""

import re
import shlex
from pathlib import Path

import cv2
import pytest

from usseg.runtime import cli

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
PYTHON_BLOCKS = re.findall(r"^```python\n(.*?)^```", TEXT, flags=re.S | re.M)
SCRIPTS = {c.alias: c.name for c in cli.COMMANDS if c.alias}


def command_lines() -> list[str]:
    """Indented lines that run a usseg command (the `usseg X`, `usseg-X` and torchrun forms),
    with their `\\` continuations joined and comments dropped."""
    lines, joined = [], ""
    for raw in TEXT.splitlines():
        if not raw.startswith("    "):
            joined = ""
            continue
        line = joined + raw.strip()
        if line.endswith("\\"):
            joined = line[:-1] + " "
            continue
        joined = ""
        words = shlex.split(line, comments=True)
        if words and (words[0] == "usseg" or words[0] in SCRIPTS or
                      (words[0] == "torchrun" and "usseg.train.train_cli" in words)):
            lines.append(line)
    return lines


def parse(line: str):
    words = shlex.split(line, comments=True)
    if words[0] == "torchrun":
        name, argv = "train", words[words.index("usseg.train.train_cli") + 1:]
    elif words[0] == "usseg":
        name, argv = words[1], words[2:]
    else:
        name, argv = SCRIPTS[words[0]], words[1:]
    return cli.build_parser(name).parse_args(argv)


def test_readme_shows_commands_of_every_stage():
    shown = {shlex.split(line)[1] for line in command_lines() if line.startswith("usseg ")}
    assert {"synth", "prepare", "train", "evaluate", "export", "predict", "stream", "bench"} <= shown


def test_readme_lists_every_subcommand_in_the_clis_order():
    listed = re.search(r"lists them in pipeline order:\s+([a-z,\s]+)\)", TEXT).group(1)
    assert listed.split() == [f"{c.name}," for c in cli.COMMANDS[:-1]] + [cli.COMMANDS[-1].name]


@pytest.mark.parametrize("line", command_lines())
def test_every_command_line_parses(line):
    args = parse(line)  # argparse exits (and the test fails) on an unknown option or a bad value
    assert hasattr(args, "verbose")


@pytest.fixture
def readme_folder(tmp_path, tiny_onnx, phantom_data, monkeypatch):
    """A working folder with what the examples name: model.onnx, sweep.mp4 and a `frame`."""
    from usseg.train.maskfolder import open_mask_folder

    (tmp_path / "model.onnx").write_bytes(Path(tiny_onnx).read_bytes())
    folder = open_mask_folder(phantom_data)
    frames = [folder.load(i)[0] for i in folder.ids("test")]
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(tmp_path / "sweep.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h), isColor=False)
    for image in frames:
        writer.write(image)
    writer.release()
    monkeypatch.chdir(tmp_path)
    return {"frame": frames[0], "frames": len(frames)}


def test_the_runtime_example_runs(readme_folder):
    block = next(b for b in PYTHON_BLOCKS if "Segmenter(" in b)
    scope = {"frame": readme_folder["frame"]}
    exec(compile(block, "README.md", "exec"), scope)
    result = scope["result"]
    assert result.labels.shape == readme_folder["frame"].shape[:2]
    assert result.lines_mm is not None and "total" in result.timings
    assert scope["item"].index == readme_folder["frames"] - 1  # the stream went through the whole sweep


def test_the_triton_example_runs(tiny_run, phantom_data, tmp_path):
    from test_triton import FakeTriton

    from usseg.export.cli import main as export_main
    from usseg.train.maskfolder import open_mask_folder

    block = next(b for b in PYTHON_BLOCKS if "TritonSegmenter(" in b)
    repo = tmp_path / "repo"
    assert export_main(["--model", str(tiny_run / "best.pt"), "--out", str(tmp_path), "--triton", str(repo),
                        "--no-verify"]) == 0
    folder = open_mask_folder(phantom_data)
    frame = folder.load(folder.ids("test")[0])[0]
    with FakeTriton(repo / "usseg") as server:
        code = block.replace('"localhost:8000"', repr(server.url))  # the example's server is this fake one
        scope = {"frame": frame}
        exec(compile(code, "README.md", "exec"), scope)
    assert scope["result"].labels.shape == frame.shape[:2]
    assert server.inferences == 1


def test_every_python_block_is_covered():
    assert len(PYTHON_BLOCKS) == 2, "a new README example needs a test above"

"""Every place the docs point to exists: the file paths named in the Markdown files and in the
docstrings (``runtime/engine.py``, ``docs/gpu.md``, ``train/phantom/``), and the
modules and names of dotted references (``usseg.runtime.segmenter.FramePipeline``). A module that
moves or a function that is renamed fails here until its pointers move with it."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("runtime", "train", "export", "benchmarks", "tests", "docs", "configs")  # the repository's own
PACKAGES = {"runtime": "runtime", "train": "train", "export": "export", "benchmarks": "benchmarks"}  # usseg.X -> folder
# A path rooted at one of those folders, not part of a longer path or URL, nor what a command line
# writes (``--out DIR``); it names a file (an extension), a folder (a trailing slash) or a glob, so a
# TensorBoard tag such as train/loss is not taken for one, nor a sentence's full stop for part of it.
PATH = re.compile(rf"(?<![\w./-])(?<!--out )(?<!-o )((?:{'|'.join(FOLDERS)})/[\w./*-]*(?:\.\w+|/|\*))(?![\w/-])")
DOTTED = re.compile(rf"(?<![\w.])usseg\.((?:{'|'.join(PACKAGES)})(?:\.\w+)*)")


def tracked(pattern: str) -> list[Path]:
    """The repository's own files: git's list in a clone; in a copy without .git (an unpacked
    archive), every file outside hidden folders, the virtual environment and the outputs."""
    if (ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", pattern], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]
    skip = {"runs", "build", "dist", "node_modules", "__pycache__"}
    return sorted(p for p in ROOT.rglob(pattern) if p.is_file()
                  and not any(part.startswith(".") or part in skip or part.endswith(".egg-info")
                              for part in p.relative_to(ROOT).parts[:-1]))


def texts() -> list[tuple[str, str]]:
    """(where, text) of every Markdown file and every docstring of the repository's Python files."""
    found = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in tracked("*.md")]
    for path in tracked("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    line = getattr(node, "lineno", 1)
                    found.append((f"{path.relative_to(ROOT)}:{line}", doc))
    return found


def path_exists(text: str) -> bool:
    return any(ROOT.glob(text.rstrip("/"))) if "*" in text else (ROOT / text).exists()


def top_level_names(module: Path) -> set[str]:
    """What a module defines or imports at its top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def dotted_problem(reference: str) -> str | None:
    """Why ``usseg.<reference>`` points nowhere: its modules must exist, and the first name after
    them must be defined at the top level of the last one (what follows, an attribute, is not checked)."""
    parts = reference.split(".")
    folder = ROOT / PACKAGES[parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        if (folder / part).is_dir():
            folder = folder / part
            continue
        module = folder / f"{part}.py"
        if module.is_file():
            rest = parts[i + 1:]
            if rest and rest[0] not in top_level_names(module):
                return f"{module.relative_to(ROOT)} has no {rest[0]!r}"
            return None
        init = folder / "__init__.py"
        if init.is_file() and part in top_level_names(init):
            return None
        return f"no module or name {'.'.join(parts[:i + 1])!r}"
    return None


def test_the_scan_finds_the_pointers_it_checks():
    # the scan itself works: it sees paths and dotted names in Markdown and in docstrings
    everything = texts()
    assert any(w == "docs/ARCHITECTURE.md" for w, _ in everything)
    paths = {m for _, text in everything for m in PATH.findall(text)}
    assert {"runtime/segmenter.py", "docs/gpu.md"} <= paths
    assert any(PATH.findall(t) for w, t in everything if w.endswith(".py") or ".py:" in w)
    assert PATH.findall("see ../sibling/docs/DESIGN.md, https://x.org/runtime/a.py and runtime/b.py.") == ["runtime/b.py"]
    assert PATH.findall("tags train/loss and val/x; train/phantom/ and docs/bench/gpu-*; --out docs/x.png") == [
        "train/phantom/", "docs/bench/gpu-*"]
    assert dotted_problem("runtime.segmenter.Segmenter") is None and dotted_problem("runtime.cuda") is None
    assert dotted_problem("runtime.segmenter.no_such_name") == "runtime/segmenter.py has no 'no_such_name'"
    assert dotted_problem("runtime.no_such_module") == "no module or name 'runtime.no_such_module'"


@pytest.mark.parametrize("kind", ["paths", "dotted"])
def test_every_pointer_in_docs_and_docstrings_exists(kind):
    missing = []
    for where, text in texts():
        if kind == "paths":
            missing += [f"{where}: {p}" for p in PATH.findall(text) if not path_exists(p)]
        else:
            missing += [f"{where}: usseg.{ref} ({why})" for ref in DOTTED.findall(text)
                        if (why := dotted_problem(ref)) is not None]
    assert missing == []

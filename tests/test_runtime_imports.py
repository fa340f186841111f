"""The runtime never loads the training stack: every module of usseg.runtime is imported in a
fresh interpreter, none may fail, and none may bring torch, MONAI, albumentations, iterstrat,
scikit-image or scikit-learn with it."""

import subprocess
import sys

HEAVY = ("torch", "monai", "albumentations", "iterstrat", "skimage", "sklearn")

CODE = f"""
import importlib, pkgutil, sys
import usseg.runtime as runtime
names = sorted(m.name for m in pkgutil.walk_packages(runtime.__path__, "usseg.runtime."))
for name in names:
    importlib.import_module(name)
print(len(names))
print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))
"""


def test_every_runtime_module_imports_without_the_training_stack():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    count, heavy = out.stdout.strip().splitlines()[-2:]
    assert int(count) >= 15  # the walk found the package's modules, not an empty path
    assert heavy == "[]", heavy


def test_segmenter_is_exported_lazily():
    code = ("import sys, usseg.runtime as r\nprint('onnxruntime' in sys.modules)\n"
            "r.Segmenter\nprint('onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]

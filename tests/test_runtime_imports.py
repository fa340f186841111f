import subprocess
import sys

HEAVY = ("torch", "monai", "albumentations", "iterstrat", "skimage", "sklearn")


def test_runtime_imports_no_training_stack():
    code = (
        "import sys, usseg.runtime, usseg.runtime.contract, usseg.runtime.preprocess\n"
        "import importlib.util as u\n"
        "for name in ('usseg.runtime.postprocess', 'usseg.runtime.segmenter', 'usseg.runtime.infer',"
        " 'usseg.runtime.stream'):\n"
        "    if u.find_spec(name) is not None:\n"
        "        __import__(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

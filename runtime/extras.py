"""Which optional part of usseg (``pip install "usseg[EXTRA]"``) brings a module a command imports,
so that a runtime-only install answers ``usseg train`` with the extra to install, not a traceback."""

from __future__ import annotations

from .errors import UssegError

# import name -> extra (pyproject.toml's optional dependencies; tests/test_hostile_cli.py keeps them in step)
EXTRAS = {
    "torch": "train", "monai": "train", "albumentations": "train", "iterstrat": "train", "scipy": "train",
    "skimage": "train", "tensorboard": "train", "onnxscript": "train", "matplotlib": "train", "markdown": "train",
    "nh3": "train", "sklearn": "train", "pycocotools": "train", "defusedxml": "train", "onnxruntime": "cpu",
    "pydicom": "dicom", "nibabel": "nifti", "tritonclient": "triton", "numba_cuda": "gpu",
}


class MissingExtra(UssegError):
    """A command needs an optional part of usseg that is not installed."""


def missing_extra(exc: ModuleNotFoundError, command: str) -> MissingExtra | None:
    """The MissingExtra for a module an extra brings; None for any other missing module (a bug)."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    install = ('pip install "usseg[cpu]" (or "usseg[gpu]" on a GPU machine)' if extra == "cpu"
               else f'pip install "usseg[{extra}]"')
    return MissingExtra(f"usseg {command} needs the '{extra}' extra ({module} is not installed): {install}")

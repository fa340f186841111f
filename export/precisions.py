"""The one table of export precisions: it drives the CLI choices, verification and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    name: str
    # Minimum mean Dice of this precision's labels against fp32's labels (None: compare to torch).
    min_dice_vs_fp32: float | None
    # Minimum share of pixels whose label equals the PyTorch checkpoint's (fp32 only).
    min_label_agreement: float | None
    needs_calibration: bool
    description: str
    file_name: str  # default file name in the output folder

    @property
    def flag(self) -> str:
        """The command-line switch that picks it (``--fp16``); fp32 is the default."""
        return f"--{self.name}"


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", None, 0.9999, False, "float32 weights and activations", "model.onnx"),
    "fp16": Precision("fp16", 0.99, None, False, "float16 weights and activations, float32 input/output",
                      "model-fp16.onnx"),
    "int8": Precision("int8", 0.97, None, True, "static QDQ int8, calibrated on training frames",
                      "model-int8.onnx"),
}

DEFAULT_PRECISION = "fp32"

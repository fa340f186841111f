"""usseg.export: checkpoint -> self-describing ONNX model, parity check, fp16, int8, Triton repository."""

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch

from usseg.export.cli import main as export_main
from usseg.export.pipeline import verify_model
from usseg.export.verify import VerificationError, label_dice
from usseg.runtime.contract import METADATA_KEY, Contract
from usseg.train.checkpoint import checkpoint_contract, load_checkpoint, model_from_checkpoint


def contract_of(path):
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return Contract.from_json(meta[METADATA_KEY])


def assert_contract_round_trips(onnx_path, ckpt_path, output="logits", batch=1, precision="fp32"):
    exported = contract_of(onnx_path)
    original = checkpoint_contract(load_checkpoint(ckpt_path))
    assert exported.classes == original.classes and exported.recipe == original.recipe
    assert exported.postprocess == original.postprocess
    assert exported.input == replace(original.input, batch=batch)
    assert exported.output == output
    assert exported.provenance["precision"] == precision
    assert exported.provenance["data_fingerprint"] == original.provenance["data_fingerprint"]


def test_fp32_export_is_checked_and_carries_the_contract(tiny_onnx, tiny_run):
    model = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops and "Dropout" not in ops  # folded / stripped
    assert_contract_round_trips(tiny_onnx, tiny_run / "best.pt")


@pytest.mark.parametrize("flags,precision", [(["--fp16"], "fp16"), (["--int8"], "int8")])
def test_lower_precisions_pass_their_dice_gate(tiny_run, phantom_data, tmp_path, capsys, flags, precision):
    out = tmp_path / f"{precision}.onnx"
    if precision == "int8":
        flags = flags + ["--calibration", str(phantom_data)]
    assert export_main([str(tiny_run / "best.pt"), "-o", str(out), "--frames", str(phantom_data)] + flags) == 0
    printed = capsys.readouterr().out
    assert f"precision   {precision}" in printed and "vs fp32" in printed
    assert_contract_round_trips(out, tiny_run / "best.pt", precision=precision)
    types = {i.data_type for i in onnx.load(str(out)).graph.initializer}
    if precision == "fp16":
        assert onnx.TensorProto.FLOAT16 in types
    else:
        assert {n.op_type for n in onnx.load(str(out)).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}


def test_labels_output_dynamic_batch_and_triton_repository(tiny_run, phantom_data, tmp_path):
    out = tmp_path / "labels.onnx"
    repo = tmp_path / "triton"
    assert export_main([str(tiny_run / "best.pt"), "-o", str(out), "--frames", str(phantom_data),
                        "--output", "labels", "--batch", "dynamic", "--triton", str(repo)]) == 0
    c = contract_of(out)
    assert_contract_round_trips(out, tiny_run / "best.pt", output="labels", batch=None)
    config = (repo / "usseg" / "config.pbtxt").read_text()
    assert (repo / "usseg" / "1" / "model.onnx").read_bytes() == out.read_bytes()
    assert f"dims: [ 1, {c.input.height}, {c.input.width} ]" in config
    assert f"dims: [ {c.input.height}, {c.input.width} ]" in config and "TYPE_UINT8" in config
    assert "max_batch_size: 16" in config
    # The contract inside config.pbtxt is the same document.
    value = config.split("string_value: ", 1)[1].rsplit(" }", 1)[0]
    assert Contract.from_json(json.loads(value)) == c


def test_verification_fails_on_a_perturbed_model(tiny_onnx, tiny_run, phantom_data, tmp_path):
    model = onnx.load(str(tiny_onnx))
    weights = [t for t in model.graph.initializer if len(t.dims) == 4]
    w = onnx.numpy_helper.to_array(weights[-1]).copy()
    w *= -3.0  # flip and scale the last convolution
    weights[-1].CopyFrom(onnx.numpy_helper.from_array(w, weights[-1].name))
    bad = tmp_path / "perturbed.onnx"
    onnx.save(model, str(bad))
    state = load_checkpoint(tiny_run / "best.pt")
    torch_model = model_from_checkpoint(state)
    contract = contract_of(tiny_onnx)
    with pytest.raises(VerificationError, match=r"fp32: labels agree with pytorch on .* need >= 99.99"):
        verify_model(torch_model, bad, bad, contract, "fp32", phantom_data)
    # The unperturbed model passes the same check.
    parity = verify_model(torch_model, tiny_onnx, tiny_onnx, contract, "fp32", phantom_data)
    assert parity.label_agreement >= 0.9999 and parity.max_abs_delta < 1e-3


def test_label_dice_by_hand():
    ref = np.zeros((1, 4, 4), np.uint8)
    ref[0, :2, :2] = 1  # 4 pixels of class 1
    pred = ref.copy()
    pred[0, 0, 0] = 0   # 3 of them found
    assert label_dice(pred, ref, 4) == pytest.approx(2 * 3 / 7)
    assert label_dice(ref, ref, 4) == 1.0
    empty = np.zeros_like(ref)
    assert label_dice(empty, empty, 4) is None  # undefined, not a perfect score


def bad_checkpoint_cases(tmp_path, tiny_run):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((tiny_run / "best.pt").read_bytes()[:500])
    other = tmp_path / "other.pt"
    state = load_checkpoint(tiny_run / "best.pt")
    state["model_config"] = {**state["model_config"], "channels": [8, 16, 32], "name": "wider"}
    torch.save(state, other)
    not_ours = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, not_ours)
    return [
        # (checkpoint, output, words in the error)
        (tmp_path / "missing.pt", tmp_path / "m.onnx", "checkpoint not found"),
        (corrupt, tmp_path / "m.onnx", "not a readable usseg checkpoint"),
        (other, tmp_path / "m.onnx", "weights do not fit model configuration 'wider'"),
        (not_ours, tmp_path / "m.onnx", "missing key(s)"),
        (tiny_run / "best.pt", corrupt, "exists and is not a folder"),
        (tiny_run / "best.pt", corrupt / "m.onnx", "cannot create the output folder"),
    ]


def test_bad_inputs_give_clear_errors_and_leave_no_file(tiny_run, tmp_path, caplog):
    for ckpt, out, words in bad_checkpoint_cases(tmp_path, tiny_run):
        caplog.clear()
        assert export_main([str(ckpt), "-o", str(out), "--no-verify"]) == 2
        assert words in caplog.text, (ckpt, caplog.text)
        assert not out.exists() or out.suffix == ".pt"  # the existing file given as --out stays as it was
    assert export_main([str(tiny_run / "best.pt"), "-o", str(tmp_path / "q.onnx"), "--int8"]) == 2
    assert "--int8 needs --calibration" in caplog.text
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []

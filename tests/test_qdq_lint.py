"""The rule checker on hand-built graphs, one broken rule each."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesmlp.errors import InputError
from edgesmlp.quantization.qdq_lint import lint_model, lint_qdq


def init(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def qdq(tensor, scale=0.1, zp=np.int8(0), zp_dtype=np.int8, name=None, with_zp=True):
    name = name or tensor
    inputs = [tensor, f"{name}_s"] + ([f"{name}_z"] if with_zp else [])
    inits = [init(f"{name}_s", scale)] + ([init(f"{name}_z", zp, zp_dtype)] if with_zp else [])
    nodes = [helper.make_node("QuantizeLinear", inputs, [f"{name}_q"], name=f"{name}_Q"),
             helper.make_node("DequantizeLinear", [f"{name}_q", *inputs[1:]], [f"{name}_dq"], name=f"{name}_DQ")]
    return nodes, inits


def weight(name, shape, axis=0, per_channel=True):
    w = np.ones(shape, np.int8)
    scale = np.full(shape[axis] if per_channel else (), 0.01, np.float32)
    zp = np.zeros(scale.shape, np.int8)
    return ([helper.make_node("DequantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_dq"],
                              name=f"{name}_DQ", axis=axis)],
            [init(name, w, np.int8), init(f"{name}_s", scale), init(f"{name}_z", zp, np.int8)])


def conv_model(x_nodes, x_inits, x_name="x_dq", w_axis=0, w_per_channel=True, float_weight=False, opset=17,
               extra_nodes=(), extra_inits=(), output="y"):
    if float_weight:
        w_nodes, w_inits, w_in = [], [init("w", np.ones((4, 3, 1, 1)))], "w"
    else:
        w_nodes, w_inits = weight("w", (4, 3, 1, 1), w_axis, w_per_channel)
        w_in = "w_dq"
    conv = helper.make_node("Conv", [x_name, w_in], ["y"], name="conv")
    graph = helper.make_graph(
        [*x_nodes, *w_nodes, conv, *extra_nodes], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [*x_inits, *w_inits, *extra_inits],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def rules(model):
    return {(v.rule, v.node) for v in lint_model(model)}


def test_clean_graph_passes():
    assert lint_model(conv_model(*qdq("x"))) == []


def test_uint8_zero_point():
    nodes, inits = qdq("x", zp=np.uint8(128), zp_dtype=np.uint8)
    found = rules(conv_model(nodes, inits))
    assert ("unsigned-int8", "x_Q") in found and ("zero-point", "x_Q") in found


def test_missing_zero_point_defaults_to_uint8():
    assert ("unsigned-int8", "x_Q") in rules(conv_model(*qdq("x", with_zp=False)))


def test_nonzero_signed_zero_point():
    assert ("zero-point", "x_DQ") in rules(conv_model(*qdq("x", zp=np.int8(3))))


def test_float_weight():
    assert ("weight-not-quantized", "conv") in rules(conv_model(*qdq("x"), float_weight=True))


def test_wrong_weight_axis_and_per_tensor_weight():
    assert ("weight-axis", "conv") in rules(conv_model(*qdq("x"), w_axis=1))
    found = {(v.severity, v.rule) for v in lint_model(conv_model(*qdq("x"), w_per_channel=False))}
    assert ("warning", "per-tensor-weight") in found


def test_float_activation_input_is_a_warning():
    found = {(v.severity, v.rule, v.node) for v in lint_model(conv_model([], [], x_name="x", extra_nodes=[
        *qdq("y", name="yq")[0]], extra_inits=qdq("y", name="yq")[1], output="yq_dq"))}
    assert ("warning", "input-not-quantized", "conv") in found


def test_per_channel_activation_scale():
    nodes, inits = qdq("x", scale=np.full(3, 0.1, np.float32), zp=np.zeros(3, np.int8))
    for n in nodes:
        n.attribute.append(helper.make_attribute("axis", 1))
    assert ("per-channel-activation", "x_Q") in rules(conv_model(nodes, inits))


def test_concat_scale_mismatch():
    a_nodes, a_inits = qdq("x", scale=0.1, name="a")
    b_nodes, b_inits = qdq("x", scale=0.2, name="b")
    cat = helper.make_node("Concat", ["a_dq", "b_dq"], ["cat"], name="cat", axis=1)
    w_nodes, w_inits = weight("w", (4, 6, 1, 1))
    c_nodes, c_inits = qdq("cat")
    conv = helper.make_node("Conv", ["cat_dq", "w_dq"], ["y"], name="conv")
    graph = helper.make_graph([*a_nodes, *b_nodes, cat, *c_nodes, *w_nodes, conv], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [*a_inits, *b_inits, *w_inits, *c_inits])
    found = lint_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert any(v.rule == "concat-scale" and v.node == "cat" and "0.1" in v.message for v in found)


def test_qdq_before_an_op_tensorrt_runs_in_float():
    nodes, inits = qdq("y", name="yq")
    erf = helper.make_node("Erf", ["yq_dq"], ["z"], name="gelu_erf")
    model = conv_model(*qdq("x"), extra_nodes=[*nodes, erf], extra_inits=inits, output="z")
    found = lint_model(model)
    assert any(v.rule == "qdq-before-float-op" and v.node == "yq_DQ" and "gelu_erf" in v.message for v in found)


def test_dangling_quantize():
    nodes, inits = qdq("x")
    relu = helper.make_node("Relu", ["x_q"], ["r"], name="relu_on_int8")
    found = rules(conv_model(nodes, inits, extra_nodes=[relu]))
    assert ("dangling-qdq", "x_Q") in found


def test_dequantize_of_a_float_tensor():
    dq = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["x_dq"], name="orphan_DQ")
    found = rules(conv_model([dq], [init("s", 0.1), init("z", 0, np.int8)]))
    assert ("dangling-qdq", "orphan_DQ") in found


def test_old_opset():
    assert ("opset", "(model)") in rules(conv_model(*qdq("x"), opset=11))


def test_unfused_residual_add():
    nodes, inits = qdq("x")
    add = helper.make_node("Add", ["y", "x"], ["out"], name="residual_add")
    found = {(v.severity, v.rule, v.node) for v in lint_model(conv_model(nodes, inits, extra_nodes=[add],
                                                                         output="out"))}
    assert ("warning", "residual-not-quantized", "residual_add") in found


def test_not_a_qdq_model(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(InputError, match="not a Q/DQ model"):
        lint_qdq(path)


@pytest.mark.parametrize("content, pattern", [(None, "no such file"), (b"garbage bytes", "not a readable ONNX")])
def test_malformed_input(tmp_path, content, pattern):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=pattern):
        lint_qdq(path)


def test_onnxruntime_default_quantizer_output_is_flagged(tmp_path):
    """A real third-party Q/DQ model: ORT's quantize_static defaults (asymmetric activations, per-tensor
    weights) break TensorRT's rules, and the checker says so."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    w_inits = [init("w", np.random.default_rng(0).standard_normal((4, 3, 1, 1)))]
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    graph = helper.make_graph([conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], w_inits)
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([{"x": np.random.default_rng(i).standard_normal((1, 3, 4, 4)).astype(np.float32)}
                              for i in range(4)])

        def get_next(self):
            return next(self.data, None)

    out = tmp_path / "ort_qdq.onnx"
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ)
    found = {(v.rule, v.node) for v in lint_qdq(out)}
    assert ("zero-point", "x_QuantizeLinear") in found and ("per-tensor-weight", "conv") in found


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("form", ["deploy", "reference"])
def test_modelopt_output_has_no_errors(form):
    """NVIDIA ModelOpt's ONNX INT8 of the bundled model (scripts/make_modelopt_fixture.py): what TensorRT builds
    as it is. Its weight quantizers (Q of a float constant, per channel) and its Q/DQ before the norms are
    deliberate: at most warnings, never errors."""
    findings = lint_qdq(FIXTURES / f"modelopt_int8_{form}.onnx")
    assert [str(f) for f in findings if f.severity == "error"] == []
    assert {f.rule for f in findings} <= {"qdq-before-float-op", "input-not-quantized", "weight-not-quantized"}


def test_a_weight_quantizer_may_be_per_channel_and_its_axis_is_still_checked():
    def model(axis):
        w = init("w", np.random.default_rng(0).standard_normal((4, 3, 1, 1)))
        scale, zp = init("ws", np.full(4 if axis == 0 else 3, 0.01)), init("wz", np.zeros(4 if axis == 0 else 3), np.int8)
        q = helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["w_q"], name="w_Q", axis=axis)
        dq = helper.make_node("DequantizeLinear", ["w_q", "ws", "wz"], ["w_dq2"], name="w_DQ2", axis=axis)
        x_nodes, x_inits = qdq("x")
        conv = helper.make_node("Conv", ["x_dq", "w_dq2"], ["y"], name="conv")
        graph = helper.make_graph([*x_nodes, q, dq, conv], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [*x_inits, w, scale, zp])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    assert lint_model(model(0)) == []
    assert ("weight-axis", "conv") in rules(model(1))


def test_fp16_typed_graphs_are_checked_alike_and_need_opset_19():
    """A FLOAT16-typed Q/DQ graph (strongly typed TensorRT's input, as ModelOpt and quantization/fp16.py write it) passes
    the same rules; its FLOAT16 scales exist only from opset 19, so an older opset is an error."""
    from edgesmlp.quantization.fp16 import to_fp16
    from edgesmlp.quantization.qdq_lint import float_types

    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    typed, _ = to_fp16(conv_model(*qdq("x")), x)
    assert lint_model(typed) == [] and float_types(typed)["FLOAT16"] > 0
    typed.opset_import[0].version = 17
    assert rules(typed) == {("opset", "(model)")}
    assert "FLOAT16 Q/DQ scales need opset 19" in lint_model(typed)[0].message
    broken, _ = to_fp16(conv_model(*qdq("x", zp=np.int8(3))), x)  # every other rule still holds
    assert ("zero-point", "x_Q") in rules(broken)


def test_every_rule_has_a_severity_and_a_reference():
    from edgesmlp.quantization.qdq_lint import RULES

    assert {severity for severity, _ in RULES.values()} == {"error", "warning"}
    assert all("TensorRT" in ref or "ONNX" in ref for _, ref in RULES.values())

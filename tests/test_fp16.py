"""FP16-typed graphs for strongly typed TensorRT (quantization/fp16.py), checked with ONNX Runtime on this CPU.

ONNX Runtime's CPU provider runs an FP16 graph's ops in FP32 and drops the casts between them, so the numbers
here come from ``emulate_fp16``, which rounds every FP16 tensor as a strongly typed engine holds it; how fast a
real engine runs them is measured on the device.
"""

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgesmlp import bundled
from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.config import ModelConfig
from edgesmlp.deploy import to_deploy
from edgesmlp.export import export_onnx
from edgesmlp.model import sMLPNet
from edgesmlp.quantization.fp16 import emulate_fp16, to_fp16
from edgesmlp.quantization.qdq import WEIGHTED, quantize_qdq, tensor_types
from edgesmlp.quantization.qdq_lint import float_types, lint_model
from edgesmlp.runtimes.onnxruntime import cpu_session
from tests.conftest import randomize_norms

MODELOPT = "tests/fixtures/modelopt_int8_deploy.onnx"  # ModelOpt's ONNX PTQ of the bundled deploy form, FP16 default
GLYPH = ModelConfig(dim=16, depths=(1, 1, 2, 1), alpha=2, num_classes=62, image_size=32)  # glyph-sized, untrained


def graphs(folder, model, reference, size, calibration):
    export_onnx(model, folder / "fp32.onnx", size, dynamic_batch=True, reference=reference)
    quantize_qdq(folder / "fp32.onnx", folder / "int8.onnx", calibration)
    out = {}
    for name in ("fp32", "int8"):
        typed, typing = to_fp16(onnx.load(str(folder / f"{name}.onnx")), calibration)
        onnx.save(typed, str(folder / f"{name}_fp16.onnx"))
        out[name] = typing
    return out


@pytest.fixture(scope="module")
def bundled_graphs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp16")
    ckpt = load_checkpoint()
    calibration = bundled.split_tensors("calib")[0].numpy()[:128]
    return folder, graphs(folder, to_deploy(ckpt.model), ckpt.model, 32, calibration)


@pytest.fixture(scope="module")
def glyph_graphs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("glyph")
    torch.manual_seed(0)
    model = randomize_norms(sMLPNet(GLYPH))
    calibration = np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(np.float32)
    return folder, graphs(folder, to_deploy(model), model, 32, calibration)


def logits(path, x):
    """The graph at ``path`` on ONNX Runtime, an FP16-typed one through its FP16 emulation."""
    model = onnx.load(str(path))
    if any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer):
        model = emulate_fp16(model)
    return cpu_session(model.SerializeToString(), unfused=True).run(None, {model.graph.input[0].name: x})[0]


def test_the_emulation_rounds_and_overflows_as_fp16_does():
    """x -> FP16 -> x * x -> FLOAT: ONNX Runtime as written returns FP32's squares; emulated, FP16's (inf past
    65504, 3.1416 rounded to 3.1406 before it is squared)."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16), helper.make_node("Mul", ["h", "h"], ["sq"]),
         helper.make_node("Cast", ["sq"], ["y"], to=TensorProto.FLOAT)], "square",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    x = np.array([3.14159265, 300.0, 1000.0], np.float32)
    with np.errstate(over="ignore"):
        fp16 = (x.astype(np.float16) * x.astype(np.float16)).astype(np.float32)
    as_written = cpu_session(model.SerializeToString()).run(None, {"x": x})[0]
    emulated = cpu_session(emulate_fp16(model).SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(emulated, fp16)  # [9.867, inf, inf]
    assert np.isfinite(as_written).all()  # why the emulation is needed


def cosine(a, b):
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def computed_types(path) -> Counter:
    """(op type, output type) of every node that computes (Q/DQ and Casts aside)."""
    model = onnx.load(str(path))
    types = tensor_types(model)
    return Counter((n.op_type, types[n.output[0]]) for n in model.graph.node
                   if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast"))


def test_every_float_tensor_is_fp16_as_in_modelopts_graph(bundled_graphs):
    """Node for node, every op that ModelOpt's FP16-default ONNX PTQ of the same model computes in FLOAT16 computes in
    FLOAT16 here too; the only FLOAT tensors left are the graph's input and output (cast once each)."""
    folder, typing = bundled_graphs
    assert typing["int8"].fp32_nodes == {} == typing["fp32"].fp32_nodes  # the bundled model's tensors stay < 512
    theirs = computed_types(MODELOPT)
    assert {t for _, t in theirs} == {TensorProto.FLOAT16}
    for name in ("int8_fp16", "fp32_fp16"):
        ours = computed_types(folder / f"{name}.onnx")
        assert ours == theirs, name  # same ops, same counts, all FLOAT16
        model = onnx.load(str(folder / f"{name}.onnx"))
        assert float_types(model)["FLOAT"] == 2  # the input and the logits
        assert {i.data_type for i in model.graph.initializer} <= {TensorProto.FLOAT16, TensorProto.INT8,
                                                                   TensorProto.INT64}
        assert [n.op_type for n in model.graph.node].count("Cast") == 2
        assert model.opset_import[0].version >= 19  # FLOAT16 Q/DQ scales
    assert lint_model(onnx.load(str(folder / "int8_fp16.onnx"))) == []


@pytest.mark.parametrize("which", ["bundled", "glyph"])
def test_fp16_graphs_match_their_fp32_twins(which, bundled_graphs, glyph_graphs, request):
    """The FP16-typed float graph within FP16 rounding of its FP32 twin (0.2% of the logits' range); the FP16-typed
    INT8 graph as close to FP32 as the FP32-typed INT8 graph is: FP16 between the INT8 layers adds no INT8 error."""
    folder, _ = bundled_graphs if which == "bundled" else glyph_graphs
    x = (bundled.split_tensors("val")[0].numpy() if which == "bundled"
         else np.random.default_rng(1).standard_normal((256, 3, 32, 32)).astype(np.float32))
    fp32, fp16 = logits(folder / "fp32.onnx", x), logits(folder / "fp32_fp16.onnx", x)
    int8, int8_fp16 = logits(folder / "int8.onnx", x), logits(folder / "int8_fp16.onnx", x)
    span = np.abs(fp32).max()
    assert np.abs(fp16 - fp32).max() <= 2e-3 * span and cosine(fp16, fp32) > 0.99999
    assert (fp16.argmax(1) == fp32.argmax(1)).mean() >= 0.99
    assert cosine(int8_fp16, fp32) >= cosine(int8, fp32) - 1e-3
    assert np.abs(int8_fp16 - fp32).mean() <= 1.5 * np.abs(int8 - fp32).mean()
    if which == "bundled":  # trained: the logits have clear winners
        assert (int8_fp16.argmax(1) == int8.argmax(1)).mean() >= 0.99


def overflowing_norm(scale: float):
    """x -> Mul(scale) -> LayerNorm's variance path (Sub mean, Pow 2, ReduceMean, Sqrt) -> Div: what an sMLPNet
    channel norm exports to, fed activations large enough that their squares pass FP16's 65504."""
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["big"], name="grow"),
        helper.make_node("ReduceMean", ["big", "axes"], ["mean"], name="mean", keepdims=1),
        helper.make_node("Sub", ["big", "mean"], ["dev"], name="sub"),
        helper.make_node("Pow", ["dev", "two"], ["sq"], name="pow"),
        helper.make_node("ReduceMean", ["sq", "axes"], ["var"], name="var", keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="add_eps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="sqrt"),
        helper.make_node("Div", ["dev", "std"], ["y"], name="div"),
    ]
    inits = [numpy_helper.from_array(np.float32(v), n) for n, v in (("k", scale), ("two", 2.0), ("eps", 1e-6))]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    graph = helper.make_graph(nodes, "norm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_nodes_whose_tensors_pass_512_stay_fp32_with_their_reason():
    """Activations below 512 stay FP16, but the norm's square of them (past 100,000) overflows FP16: the variance
    path is kept FP32, each node named with the value that put it there, and the output matches FP32. Typed FP16
    throughout (data_max=inf), the same graph returns inf/NaN."""
    model = overflowing_norm(120.0)
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    want = logits_of(model, x)
    typed, typing = to_fp16(model, x)
    assert set(typing.fp32_nodes) == {"pow", "var", "add_eps", "sqrt"}
    assert "over 512" in typing.fp32_nodes["pow"] and "'sq' reaches" in typing.fp32_nodes["pow"]
    types = tensor_types(typed)
    assert types["sq"] == TensorProto.FLOAT and types["var"] == TensorProto.FLOAT
    np.testing.assert_allclose(logits_of(emulate_fp16(typed), x), want, atol=5e-3)
    naive, none = to_fp16(model, x, data_max=float("inf"))
    assert none.fp32_nodes == {}
    broken = logits_of(emulate_fp16(naive), x)  # the variance is inf, so every output is 0
    assert np.abs(broken - want).max() > 1.0


def logits_of(model, x):
    return cpu_session(model.SerializeToString()).run(None, {"x": x})[0]


def test_a_qdq_pair_follows_the_layer_it_feeds(tmp_path):
    """Where a quantized layer must stay FP32, its input Q/DQ stays FP32 with it: no Cast sits between a
    DequantizeLinear and the Conv or MatMul TensorRT fuses it into, and the lint stays clean."""
    torch.manual_seed(0)
    model = randomize_norms(sMLPNet(GLYPH))
    export_onnx(to_deploy(model), tmp_path / "fp32.onnx", 32, dynamic_batch=True, reference=model)
    graph = onnx.load(str(tmp_path / "fp32.onnx"))
    stem = next(n for n in graph.graph.node if n.op_type == "Conv").input[1]
    weight = next(i for i in graph.graph.initializer if i.name == stem)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1000, stem))  # its output passes 512
    onnx.save(graph, str(tmp_path / "fp32.onnx"))
    x = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
    quantize_qdq(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", x)
    typed, typing = to_fp16(onnx.load(str(tmp_path / "int8.onnx")), x)
    ops = {n.name: n.op_type for n in typed.graph.node}
    kept = Counter(ops[name] for name in typing.fp32_nodes)
    assert kept["Conv"] >= 1 and kept["DequantizeLinear"] >= 1 and kept["QuantizeLinear"] >= 1
    producer = {o: n for n in typed.graph.node for o in n.output}
    for n in typed.graph.node:
        if n.op_type in WEIGHTED:
            for name in n.input[:2]:
                assert producer[name].op_type != "Cast", (n.name, name) if name in producer else None
    assert [v for v in lint_model(typed) if v.severity == "error"] == []
    assert not any(v.rule == "qdq-before-float-op" for v in lint_model(typed))
    onnx.save(typed, str(tmp_path / "int8_fp16.onnx"))
    assert np.isfinite(logits(tmp_path / "int8_fp16.onnx", x)).all()

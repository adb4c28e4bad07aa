"""Per-layer sensitivity and the per-block cosine on the real INT8 graphs of the bundled model: the Q/DQ graph in
ONNX Runtime, and NNCF's INT8 IR in OpenVINO."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from edgesmlp import bundled
from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.cli import app
from tests import browser
from edgesmlp.deploy import to_deploy
from edgesmlp.export import export_onnx
from edgesmlp.quantization.partial import QDQPartial, quantized_nodes, with_layers_in_float
from edgesmlp.quantization.qdq import QDQConfig, quantize_qdq
from edgesmlp.quantization.sensitivity import block_cosines, divergence, expected_agreement, per_layer


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The bundled model's FP32 ONNX, its Q/DQ graph, and a copy where one layer's input range is sabotaged
    (scale / 40: most of the activation clips), so the layer to blame is known."""
    folder = tmp_path_factory.mktemp("sens")
    ckpt = load_checkpoint()
    export_onnx(to_deploy(ckpt.model), folder / "fp32.onnx", 32, dynamic_batch=True, reference=ckpt.model)
    xc, _ = bundled.split_tensors("calib")
    quantize_qdq(folder / "fp32.onnx", folder / "int8.onnx", xc.numpy()[:64], QDQConfig())
    qdq = onnx.load(str(folder / "int8.onnx"))
    producer = {o: n for n in qdq.graph.node for o in n.output}
    inits = {i.name: i for i in qdq.graph.initializer}
    victim = [n for n in quantized_nodes(qdq) if n.op_type == "Conv"][12]  # a layer deep in the network
    q = producer[producer[victim.input[0]].input[0]]  # its input's QuantizeLinear
    scale = inits[q.input[1]]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) / 40, scale.name))
    onnx.save(qdq, str(folder / "broken.onnx"))
    xv, _ = bundled.split_tensors("val")
    return folder, victim.name, xv.numpy()[:200]


def test_each_layer_in_float_is_a_valid_graph_that_removes_its_own_error(graphs):
    folder, victim, _ = graphs
    broken, fp32 = onnx.load(str(folder / "broken.onnx")), onnx.load(str(folder / "fp32.onnx"))
    for node in quantized_nodes(broken):
        onnx.checker.check_model(with_layers_in_float(broken, fp32, [node.name]))
    fixed = with_layers_in_float(broken, fp32, [victim])
    assert victim not in {n.name for n in quantized_nodes(fixed)}


def test_every_layer_in_float_is_exactly_fp32(graphs):
    """The rewiring reaches every quantizer: Concat inputs that share a scale, and the residual Q/DQ that
    exists only so TensorRT can fuse the Add into the layer's Conv."""
    folder, _, x = graphs
    graph = QDQPartial(onnx.load(str(folder / "fp32.onnx")), onnx.load(str(folder / "int8.onnx")))
    reference = graph.reference(x)
    assert np.abs(graph.logits(x) - reference).max() > 1e-3
    assert np.array_equal(graph.logits(x, frozenset(layer.name for layer in graph.layers)), reference)


def test_the_sabotaged_layer_ranks_first(graphs):
    folder, victim, x = graphs
    fp32 = onnx.load(str(folder / "fp32.onnx"))
    base, rows = per_layer(QDQPartial(fp32, onnx.load(str(folder / "broken.onnx"))), x)
    assert rows[0].layer == victim
    assert rows[0].kl_gain > 0.5 * base.kl  # it carries most of the error
    assert rows[0].alone_kl > 10 * rows[1].alone_kl  # and does it by itself
    assert max(r.kl_gain for r in rows[1:]) < 0.1 * rows[0].kl_gain
    assert len(rows) == len(quantized_nodes(onnx.load(str(folder / "broken.onnx"))))
    healthy, _ = per_layer(QDQPartial(fp32, onnx.load(str(folder / "int8.onnx"))), x)
    assert healthy.kl < base.kl and healthy.agreement >= base.agreement


def test_block_cosines_show_where_the_error_starts(graphs):
    folder, _, x = graphs
    fp32 = onnx.load(str(folder / "fp32.onnx"))
    good = dict(block_cosines(fp32, onnx.load(str(folder / "int8.onnx")), x))
    bad = block_cosines(fp32, onnx.load(str(folder / "broken.onnx")), x)
    assert len(bad) == 2 * len(load_checkpoint().model.token_mix)  # two residual sums per block
    drops = [good[name] - cos for name, cos in bad]
    first = next(i for i, d in enumerate(drops) if d > 1e-3)
    assert all(d <= 1e-6 for d in drops[:first]) and first > 0  # identical before the sabotaged layer


def test_sensitivity_command(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["sensitivity", "-o", str(tmp_path / "s"), "--images", "100", "--calib-size", "32",
                                 "--top", "5"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s" / "sensitivity.json").read_text())
    assert report["schema"] == "edgesmlp.sensitivity/1" and report["data"]["val_images"] == 100
    assert len(report["layers"]) == 35 and report["blocks"]
    gains = [r["alone_kl"] for r in report["layers"]]
    assert gains == sorted(gains, reverse=True)
    page = (tmp_path / "s" / "sensitivity.html").read_text()
    assert page.count("<figure") == 2 and report["layers"][0]["module"] in page
    table = [line for line in result.stdout.splitlines() if not line.startswith(("wrote ", "--ignore "))]
    assert "rank" in result.stdout and max(map(len, table)) <= 80
    refused = runner.invoke(app, ["sensitivity", "-t", "onnxruntime", "-o", str(tmp_path / "t")])
    assert refused.exit_code == 2 and "jetson" in refused.output and not (tmp_path / "t").exists()
    seen = browser.look(page, tmp_path)
    browser.assert_readable(seen)
    assert seen["charts"][0]["ticks"][1][-1] == report["layers"][0]["module"]  # the most sensitive on top
    assert "What to keep in float" in seen["text"] and "A negative" in seen["text"]


def test_openvino_layers_in_float_are_fp32_and_rank_like_ignored_scope(tmp_path):
    """NNCF's IR rewired: every layer in float gives FP32's logits exactly (f32); one layer in float gives what
    NNCF's own ignored scope for that layer gives, within the noise of re-quantizing."""
    import openvino as ov  # noqa: F401

    from edgesmlp.export import to_openvino
    from edgesmlp.quantization.openvino_partial import OpenVINOPartial
    from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig, quantize_openvino

    ckpt = load_checkpoint()
    fp32 = to_openvino(to_deploy(ckpt.model), 3, 32, batch=-1)
    calib = bundled.split_tensors("calib")[0].numpy()[:64]
    x = bundled.split_tensors("val")[0].numpy()[:64]
    graph = OpenVINOPartial(fp32, quantize_openvino(fp32, calib, OpenVINOPTQConfig()))
    reference = graph.reference(x)
    ops = {layer.op for layer in graph.layers}
    assert ops >= {"Conv", "DWConv", "MatMul", "MVN"} and "Add" not in ops  # the sums stay float by default
    every = graph.with_layers_in_float([layer.name for layer in graph.layers])
    assert np.array_equal(graph._run(every, x, "f32"), reference)
    layer = next(layer for layer in graph.layers if layer.module.endswith("fc2"))
    ours = graph.logits(x, frozenset([layer.name]))
    nncf = OpenVINOPartial(fp32, quantize_openvino(fp32, calib, OpenVINOPTQConfig(ignored=(layer.name,)))).logits(x)
    assert np.abs(ours - nncf).max() < 0.2 * np.abs(graph.logits(x) - reference).max() + 1e-3


@pytest.mark.parametrize("fuse", ["matmul", "conv"])
def test_openvino_partial_sees_through_the_channels_last_fuse(fuse):
    """On the graph OpenVINO INT8 really calibrates (channels-last, fused either way), every layer in float is
    FP32 bit for bit, and a fuse alone in float is exactly what NNCF's ignored scope for it ships. With the conv
    fuse the Concat's quantizers sit behind a Transpose and a repeated FakeQuantize; leaving them quantized made
    sensitivity and the budget search misjudge every fuse."""
    from edgesmlp.quantization.openvino_partial import OpenVINOPartial
    from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig, calibration_graph, quantize_openvino

    config = OpenVINOPTQConfig(fuse=fuse)
    fp32 = calibration_graph(to_deploy(load_checkpoint().model), 3, 32, config)
    calib = bundled.split_tensors("calib")[0].numpy()[:64]
    x = bundled.split_tensors("val")[0].numpy()[:64]
    graph = OpenVINOPartial(fp32, quantize_openvino(fp32, calib, config))
    reference = graph.reference(x)
    every = graph.with_layers_in_float([layer.name for layer in graph.layers])
    assert np.array_equal(graph._run(every, x, "f32"), reference)
    fuses = [layer for layer in graph.layers if layer.module.startswith("token_mix.") and
             (layer.module.endswith(".fuse") or layer.module.endswith("MatMul_2"))]
    # The 1x1-grid stage keeps the MatMul fuse (deploy.set_channels_last).
    assert [layer.op for layer in fuses] == ["Conv"] * 4 + ["MatMul"] if fuse == "conv" else ["MatMul"] * 5
    last = fuses[-2]
    ours = graph.logits(x, frozenset([last.name]))
    ignored = quantize_openvino(fp32, calib, OpenVINOPTQConfig(fuse=fuse, ignored=(last.name,)))
    assert np.array_equal(ours, OpenVINOPartial(fp32, ignored).logits(x))
    assert not np.array_equal(ours, graph.logits(x))


def test_expected_agreement_is_smooth_where_counting_is_not():
    """On 300 images, counted agreement jumps by whole flips; the margin-noise estimate varies half as much from
    sample to sample and is centred on the agreement of a large set. It is 100 for identical logits."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(100_000, 10)) * 3
    assert expected_agreement(reference[:300], reference[:300]) == 100.0
    logits = reference + rng.normal(size=reference.shape) * 0.05
    truth = divergence(reference, logits).agreement
    samples = [divergence(reference[i : i + 300], logits[i : i + 300]) for i in range(0, 30_000, 300)]
    counted, expected = np.array([d.agreement for d in samples]), np.array([d.expected_agreement for d in samples])
    assert expected.std() < 0.6 * counted.std()  # about half, measured
    assert abs(expected.mean() - truth) < 0.1


def test_openvino_sensitivity_command(tmp_path):
    result = CliRunner().invoke(app, ["sensitivity", "-t", "openvino", "-o", str(tmp_path / "s"), "--images", "64",
                                      "--calib-size", "32", "--top", "5"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s" / "sensitivity.json").read_text())
    from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig, TokenMixing

    # NNCF also quantizes the norms' inputs; the 10 axial MatMuls are layers where they are INT8 (this CPU's default)
    floor = 35 if OpenVINOPTQConfig().token_mixing is TokenMixing.int8 else 25
    assert report["target"] == "openvino" and len(report["layers"]) > floor
    assert len(report["blocks"]) == 2 * len(load_checkpoint().model.token_mix)
    assert max(map(len, (line for line in result.stdout.splitlines() if not line.startswith(("wrote ", "--ignore "))))) <= 80

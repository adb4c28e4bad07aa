"""Per-layer sensitivity and the per-block cosine on the real Q/DQ graph of the bundled model, run in ONNX Runtime."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from edgesmlp import bundled
from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.cli import app
from edgesmlp.deploy import to_deploy
from edgesmlp.export import export_onnx
from edgesmlp.quantize.qdq import QDQConfig, quantize_qdq
from edgesmlp.quantize.sensitivity import block_cosines, per_layer, quantized_layers, with_layer_in_float


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
    victim = [n for n in quantized_layers(qdq) if n.op_type == "Conv"][12]  # a layer deep in the network
    q = producer[producer[victim.input[0]].input[0]]  # its input's QuantizeLinear
    scale = inits[q.input[1]]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) / 40, scale.name))
    onnx.save(qdq, str(folder / "broken.onnx"))
    xv, _ = bundled.split_tensors("val")
    return folder, victim.name, xv.numpy()[:200]


def test_each_layer_in_float_is_a_valid_graph_that_removes_its_own_error(graphs):
    folder, victim, _ = graphs
    broken, fp32 = onnx.load(str(folder / "broken.onnx")), onnx.load(str(folder / "fp32.onnx"))
    for node in quantized_layers(broken):
        onnx.checker.check_model(with_layer_in_float(broken, fp32, node.name))
    fixed = with_layer_in_float(broken, fp32, victim)
    assert victim not in {n.name for n in quantized_layers(fixed)}


def test_the_sabotaged_layer_ranks_first(graphs):
    folder, victim, x = graphs
    fp32 = onnx.load(str(folder / "fp32.onnx"))
    base, rows = per_layer(fp32, onnx.load(str(folder / "broken.onnx")), x)
    assert rows[0].layer == victim
    assert rows[0].kl_gain > 0.5 * base.kl  # it carries most of the error
    assert rows[0].kl_gain > 10 * rows[1].kl_gain
    assert len(rows) == len(quantized_layers(onnx.load(str(folder / "broken.onnx"))))
    healthy, _ = per_layer(fp32, onnx.load(str(folder / "int8.onnx")), x)
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
    gains = [r["kl_gain"] for r in report["layers"]]
    assert gains == sorted(gains, reverse=True)
    page = (tmp_path / "s" / "sensitivity.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and report["layers"][0]["module"] in page
    table = [line for line in result.stdout.splitlines() if not line.startswith("wrote ")]
    assert "rank" in result.stdout and max(map(len, table)) <= 80
    refused = runner.invoke(app, ["sensitivity", "-t", "openvino", "-o", str(tmp_path / "t")])
    assert refused.exit_code == 2 and "jetson" in refused.output and not (tmp_path / "t").exists()

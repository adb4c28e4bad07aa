import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgesmlp import bundled
from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.deploy import to_deploy
from edgesmlp.export import export_onnx
from edgesmlp.quantization.calibrate import CalibMethod, amax_from_histogram
from edgesmlp.quantization.qdq import QDQConfig, plan_qdq, quantize_qdq
from edgesmlp.quantization.qdq_lint import lint_qdq
from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    ckpt = load_checkpoint()
    path = tmp_path_factory.mktemp("qdq") / "fp32.onnx"
    export_onnx(to_deploy(ckpt.model), path, 32, dynamic_batch=True, reference=ckpt.model)
    return path


@pytest.fixture(scope="module")
def data():
    xc, _ = bundled.split_tensors("calib")
    xv, yv = bundled.split_tensors("val")
    return xc.numpy(), xv.numpy(), yv.numpy()


def test_plan_covers_every_weighted_op_concat_and_residual(fp32_onnx):
    model = onnx.load(str(fp32_onnx))
    plan = plan_qdq(model)
    ops = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert len(plan.weights) == len(ops)  # one constant weight per op
    assert len(plan.shared) == 5  # one Concat per block
    assert len(plan.residuals) == 10  # token- and channel-mix Add of each of 5 blocks
    axes = {}
    nodes = {n.name: n for n in model.graph.node}
    for node, index, axis in plan.weights:
        axes[(nodes[node].op_type, index)] = axis
    assert axes == {("Conv", 1): 0, ("MatMul", 1): -1, ("MatMul", 0): 0, ("Gemm", 1): 0}


@pytest.mark.parametrize("method", ["max", "percentile", "mse"])
def test_qdq_model_is_accurate_and_clean(fp32_onnx, data, tmp_path, method):
    xc, xv, yv = data
    out = tmp_path / "int8.onnx"
    summary = quantize_qdq(fp32_onnx, out, xc, QDQConfig(method=method))
    assert summary.concat_groups == 5 and summary.residuals == 10
    assert lint_qdq(out) == []
    reference = OnnxRuntimeRunner(fp32_onnx)(xv)
    got = OnnxRuntimeRunner(out)(xv)
    assert (got.argmax(1) == yv).mean() * 100 >= (reference.argmax(1) == yv).mean() * 100 - 0.5
    assert (got.argmax(1) == reference.argmax(1)).mean() >= 0.99


def test_rules_hold_in_the_written_graph(fp32_onnx, data, tmp_path):
    out = tmp_path / "int8.onnx"
    quantize_qdq(fp32_onnx, out, data[0][:50])
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any()
        if n.op_type == "Concat":
            scales = {float(inits[producer[i].input[1]]) for i in n.input}
            assert len(scales) == 1, n.name
    weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]
    assert weights and all(abs(numpy_helper.to_array(w)).max() <= 127 for w in weights)
    assert not [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4
                and i.name.endswith("weight")]  # no float weights left behind
    assert out.stat().st_size < fp32_onnx.stat().st_size / 2.5


def test_calibration_methods_on_a_known_distribution():
    rng = np.random.default_rng(0)
    values = np.abs(np.concatenate([rng.standard_normal(200_000), [40.0]]))  # one outlier
    amax = float(values.max())
    hist = np.histogram(values, bins=2048, range=(0, amax))[0].astype(float)
    assert amax_from_histogram(hist, amax, CalibMethod.max) == amax
    p = amax_from_histogram(hist, amax, CalibMethod.percentile, 99.9)
    assert abs(p - np.percentile(values, 99.9)) < 2 * amax / 2048
    assert 2.0 < amax_from_histogram(hist, amax, CalibMethod.entropy) < 10.0  # KL clips the lone outlier

    def mse(clip):
        step = clip / 127
        return float(((values - np.clip(np.round(values / step), 0, 127) * step) ** 2).sum())

    chosen = amax_from_histogram(hist, amax, CalibMethod.mse)
    assert mse(chosen) <= min(mse(amax), mse(p), mse(2.0)) * 1.01  # MSE's pick beats the other ranges


def test_entropy_does_not_collapse_to_the_smallest_range():
    """KL must compare the clipped reference with a candidate built without the outliers; otherwise the
    first candidate (128 bins) matches exactly and every tensor is clipped to 1/16 of its range."""
    values = np.abs(np.random.default_rng(1).standard_normal(100_000))
    amax = float(values.max())
    hist = np.histogram(values, bins=2048, range=(0, amax))[0].astype(float)
    clip = amax_from_histogram(hist, amax, CalibMethod.entropy)
    assert clip > 0.4 * amax  # a Gaussian's KL clip keeps most of its range


def _optimized_ops(path, tmp_path) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime actually runs (after its Q/DQ fusions)."""
    from collections import Counter

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def test_onnxruntime_placement_runs_every_conv_and_matmul_in_integers(fp32_onnx, data, tmp_path):
    """With TensorRT's placement ONNX Runtime runs each Conv and MatMul in float between a DQ and a float
    consumer; with ONNX Runtime's (a Q after each op, u8 activations and left weights) every one of them
    fuses into QLinearConv / QLinearMatMul, and the u8 rewrite changes no quantized value."""
    from edgesmlp.quantization.qdq import to_unsigned_activations
    from edgesmlp.targets.onnxruntime import OnnxRuntimeConfig

    xc, xv, _ = data
    model = onnx.load(str(fp32_onnx))
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    matmuls = sum(n.op_type == "MatMul" for n in model.graph.node)
    quantize_qdq(fp32_onnx, tmp_path / "trt.onnx", xc[:64])
    quantize_qdq(fp32_onnx, tmp_path / "s8.onnx", xc[:64], OnnxRuntimeConfig().qdq)  # this CPU's weight bits
    onnx.save(to_unsigned_activations(onnx.load(str(tmp_path / "s8.onnx"))), str(tmp_path / "u8.onnx"))

    trt = _optimized_ops(tmp_path / "trt.onnx", tmp_path)
    assert trt["Conv"] > 0 and trt["QLinearConv"] == 0  # float Convs: what the onnxruntime target shipped before
    u8 = _optimized_ops(tmp_path / "u8.onnx", tmp_path)
    assert u8["QLinearConv"] == convs and u8["Conv"] == 0
    assert u8["QLinearMatMul"] == matmuls and u8["MatMul"] == 0
    s8_logits = OnnxRuntimeRunner(tmp_path / "s8.onnx", 2)(xv[:64])
    u8_logits = OnnxRuntimeRunner(tmp_path / "u8.onnx", 2)(xv[:64])
    # the same quantized values; only the integer kernels' requantize rounding differs from float emulation
    assert np.abs(s8_logits - u8_logits).max() <= 0.02 * np.abs(s8_logits).max()
    assert (s8_logits.argmax(1) == u8_logits.argmax(1)).all()
    fp32 = OnnxRuntimeRunner(fp32_onnx, 2)(xv)
    agree = (OnnxRuntimeRunner(tmp_path / "u8.onnx", 2)(xv).argmax(1) == fp32.argmax(1)).mean()
    assert agree >= 0.99


def test_onnxruntime_placement_is_not_the_jetson_graph(fp32_onnx, data, tmp_path):
    """The extra output Q/DQ are for ONNX Runtime only: the default (Jetson) graph keeps TensorRT's rules."""
    xc = data[0][:32]
    quantize_qdq(fp32_onnx, tmp_path / "trt.onnx", xc)
    assert not [f for f in lint_qdq(tmp_path / "trt.onnx") if f.severity == "error"]
    assert "quantize_outputs" in QDQConfig().to_dict() and not QDQConfig().quantize_outputs
    plan = plan_qdq(onnx.load(str(fp32_onnx)), quantize_residuals=False, quantize_outputs=True)
    assert not plan.residuals
    produced = {n.output[0] for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type in ("Conv", "MatMul")}
    assert produced <= set(plan.edges)


def _session_logits(path, x, optimize: bool) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if not optimize:  # every Q/DQ pair executed as written, in float: what the graph means
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {session.get_inputs()[0].name: x[i:i + 100]})[0]
                           for i in range(0, len(x), 100)])


def _ort_int8(fp32_onnx, xc, path, weight_bits: int):
    from edgesmlp.quantization.qdq import to_unsigned_activations
    from edgesmlp.runtimes.onnxruntime import wants_unsigned_activations
    from edgesmlp.targets.onnxruntime import OnnxRuntimeConfig, ort_placement

    quantize_qdq(fp32_onnx, path, xc, ort_placement(QDQConfig(weight_bits=weight_bits)))
    if wants_unsigned_activations():
        onnx.save(to_unsigned_activations(onnx.load(str(path))), str(path))
    assert OnnxRuntimeConfig().qdq.weight_bits in (7, 8)
    return path


def test_onnxruntime_integer_kernels_compute_the_graph_on_this_cpu(fp32_onnx, data, tmp_path):
    """With the weight bits the onnxruntime target picks for this CPU, ONNX Runtime's fused integer kernels keep the
    class the Q/DQ graph computes (executed unfused, in float) on 99% of the images. On x86 without VNNI, 8-bit weights
    do not (their u8 x s8 products saturate: 96.8% on an AVX2 EPYC); 7-bit weights do."""
    from edgesmlp.timing import weight_bits_for_this_cpu

    xc, xv, _ = data
    path = _ort_int8(fp32_onnx, xc[:128], tmp_path / "int8.onnx", weight_bits_for_this_cpu())
    fused, written = _session_logits(path, xv, True), _session_logits(path, xv, False)
    assert (fused.argmax(1) == written.argmax(1)).mean() >= 0.99


@pytest.mark.skipif("not __import__('edgesmlp.timing', fromlist=['x']).x86_without_vnni()",
                    reason="this CPU has VNNI (or is not x86): ONNX Runtime's u8 x s8 kernels do not saturate here")
def test_eight_bit_weights_saturate_on_x86_without_vnni(fp32_onnx, data, tmp_path):
    """Why 7 bits on this CPU: with 8-bit weights the fused kernels lose the class the graph computes."""
    xc, xv, _ = data
    path = _ort_int8(fp32_onnx, xc[:128], tmp_path / "int8.onnx", 8)
    fused, written = _session_logits(path, xv, True), _session_logits(path, xv, False)
    assert (fused.argmax(1) == written.argmax(1)).mean() < 0.99


def test_weight_bits(fp32_onnx, data, tmp_path):
    from edgesmlp.errors import ConfigError
    from edgesmlp.quantization.qdq import weight_bits_of

    for bits, qmax in ((7, 63), (8, 127)):
        quantize_qdq(fp32_onnx, tmp_path / f"{bits}.onnx", data[0][:16], QDQConfig(weight_bits=bits))
        model = onnx.load(str(tmp_path / f"{bits}.onnx"))
        weights = [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8
                   and i.dims]
        assert weights and max(np.abs(w).max() for w in weights) == qmax  # each channel's largest weight hits qmax
        assert weight_bits_of(model) == bits and QDQConfig(weight_bits=bits).to_dict()["weight_bits"] == bits
    with pytest.raises(ConfigError, match="--weight-bits must be 7 or 8"):
        QDQConfig(weight_bits=6)


def test_onnxruntime_weight_bits_follow_the_cpu(monkeypatch, fp32_onnx, data, tmp_path):
    """7 bits on x86 without VNNI, 8 with it; --weight-bits wins; and a folder with 8-bit weights benched on a CPU
    that saturates says so."""
    import platform

    import edgesmlp.timing
    from edgesmlp.targets.base import RunSettings, TargetOptions
    from edgesmlp.targets.onnxruntime import TARGET

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(edgesmlp.timing, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert edgesmlp.timing.x86_without_vnni() and TARGET.config_from(TargetOptions()).qdq.weight_bits == 7
    assert TARGET.config_from(TargetOptions(weight_bits=8)).qdq.weight_bits == 8
    folder = tmp_path / "onnxruntime"
    folder.mkdir()
    (folder / "model_fp32.onnx").write_bytes(fp32_onnx.read_bytes())
    _ort_int8(fp32_onnx, data[0][:16], folder / "model_int8.onnx", 8)
    logged = []
    build = TARGET.load(folder, TARGET.config_from(TargetOptions()), RunSettings(), logged.append)
    assert "8-bit weights" in build.variants[1].note and any("--weight-bits 7" in n for n in build.notes)
    assert logged and logged[0].startswith("warning: this CPU has no VNNI")
    monkeypatch.setattr(edgesmlp.timing, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert not edgesmlp.timing.x86_without_vnni() and TARGET.config_from(TargetOptions()).qdq.weight_bits == 8
    build = TARGET.load(folder, TARGET.config_from(TargetOptions()), RunSettings(), logged.append)
    assert not any("VNNI" in n for n in build.notes) and len(logged) == 1

"""The engine builder and runner against the recording TensorRT stand-in (tests/tensorrt_standin.py).

These check the TensorRT API calls edgesmlp makes for 10.x and 11.x, not TensorRT itself: real
engines are built and measured on the device (see the Jetson bundle's README).
"""

import numpy as np
import pytest

from edgesmlp.quantization.fp16 import write_fp16
from edgesmlp.runtimes.tensorrt import EngineBuildError, EngineConfig, EngineRunner, build_engine, strongly_typed
from tests.tensorrt_standin import make_tensorrt

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def qdq_onnx(tmp_path_factory):
    from edgesmlp import bundled
    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import export_onnx
    from edgesmlp.quantization.qdq import quantize_qdq

    folder = tmp_path_factory.mktemp("trt")
    ckpt = load_checkpoint()
    export_onnx(to_deploy(ckpt.model), folder / "fp32.onnx", 32, dynamic_batch=True, reference=ckpt.model)
    x, _ = bundled.split_tensors("calib")
    quantize_qdq(folder / "fp32.onnx", folder / "int8.onnx", x.numpy()[:64])
    write_fp16(folder / "fp32.onnx", folder / "fp16.onnx", x.numpy()[:64])
    write_fp16(folder / "int8.onnx", folder / "int8_fp16.onnx", x.numpy()[:64])
    return folder


def names(calls, kind):
    return [c for c in calls if c[0] == kind]


def test_tensorrt_10_uses_precision_flags(qdq_onnx, tmp_path):
    trt = make_tensorrt("10.3.0")
    assert not strongly_typed(trt)
    cache = tmp_path / "timing.cache"
    engine = build_engine(qdq_onnx / "int8.onnx", EngineConfig("int8", SHAPE, timing_cache=cache), trt)
    assert names(trt.calls, "create_network") == [("create_network", 0)]
    assert {c[1] for c in names(trt.calls, "set_flag")} == {"FP16", "INT8"}
    assert ("set_memory_pool_limit", "WORKSPACE", 1024 << 20) in trt.calls
    assert ("set_shape", "input", (1, *SHAPE), (1, *SHAPE), (32, *SHAPE)) in trt.calls
    assert names(trt.calls, "set_timing_cache") and cache.read_bytes()
    assert engine.startswith(b"tensorrt-standin-engine:")


def test_tensorrt_10_fp16_engine(qdq_onnx):
    trt = make_tensorrt("10.3.0")
    build_engine(qdq_onnx / "fp32.onnx", EngineConfig("fp16", SHAPE), trt)
    assert {c[1] for c in names(trt.calls, "set_flag")} == {"FP16"}


@pytest.mark.parametrize("version", ["10.12.0", "10.13.2", "11.0.0"])
def test_strongly_typed_from_10_12(qdq_onnx, version):
    """The stand-in refuses precision flags on a strongly typed network, as TensorRT does, and 11.x has no FP16/INT8
    flags at all: these builds pass only because the builder sets none. The FP16 engine comes from the FP16-typed
    graph; an FP32-typed one is refused with the file to use instead."""
    trt = make_tensorrt(version)
    flag = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    for precision, source in (("int8", "int8_fp16.onnx"), ("fp16", "fp16.onnx"), ("int8", "int8.onnx")):
        assert build_engine(qdq_onnx / source, EngineConfig(precision, SHAPE), trt).startswith(b"tensorrt-standin")
    assert names(trt.calls, "create_network") == [("create_network", flag)] * 3
    assert names(trt.calls, "set_flag") == [] and names(trt.calls, "error") == []
    with pytest.raises(EngineBuildError, match="typed FP32.*model_fp16.onnx"):
        build_engine(qdq_onnx / "fp32.onnx", EngineConfig("fp16", SHAPE), trt)


def test_the_standin_refuses_precision_flags_on_a_strongly_typed_network(qdq_onnx):
    """What keeps the test above honest: a builder that set FP16 on a strongly typed network gets no engine."""
    trt = make_tensorrt("10.12.0")
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, trt.Logger()).parse_from_file(str(qdq_onnx / "int8_fp16.onnx"))
    config = builder.create_builder_config()
    config.add_optimization_profile(builder.create_optimization_profile())
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None and names(trt.calls, "error")


@pytest.mark.parametrize("version", ["10.3.0", "10.12.0"])
def test_each_engine_runs_in_the_precision_its_build_asks(qdq_onnx, device_standins, monkeypatch, version):
    """Weakly typed (10.3): the FP32-typed graphs with the FP16 flag; strongly typed (10.12): the FP16-typed graphs.
    Either way the float layers of both engines run FP16 and the INT8 graph's weighted layers INT8, and the engines
    compute what the graphs do."""
    import sys

    from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner

    trt = make_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    typed = strongly_typed(trt)
    x = np.random.default_rng(0).standard_normal((4, *SHAPE)).astype(np.float32)
    for precision, source in (("fp16", "fp16.onnx" if typed else "fp32.onnx"),
                              ("int8", "int8_fp16.onnx" if typed else "int8.onnx")):
        runner = EngineRunner(build_engine(qdq_onnx / source, EngineConfig(precision, SHAPE), trt), trt)
        ran = {layer.precision for layer in runner.profile(x[:1], runs=1).layers}
        assert ran == {"fp16" if precision == "fp16" else "int8"}, (source, ran)
        np.testing.assert_allclose(runner(x), OnnxRuntimeRunner(qdq_onnx / source)(x), rtol=1e-5, atol=1e-5)


def test_dla_with_gpu_fallback(qdq_onnx):
    trt = make_tensorrt("10.3.0")
    build_engine(qdq_onnx / "int8.onnx", EngineConfig("int8", SHAPE, dla_core=0), trt)
    assert ("set_flag", "GPU_FALLBACK") in trt.calls


def test_parse_failure_is_clear(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(EngineBuildError, match="could not parse.*bad.onnx"):
        build_engine(bad, EngineConfig("int8", SHAPE), make_tensorrt())


def test_runner_matches_onnxruntime_on_the_qdq_graph(qdq_onnx, device_standins):
    from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner

    trt = device_standins
    engine = build_engine(qdq_onnx / "int8.onnx", EngineConfig("int8", SHAPE), trt)
    runner = EngineRunner(engine, trt)
    x = np.random.default_rng(0).standard_normal((5, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(runner(x), OnnxRuntimeRunner(qdq_onnx / "int8.onnx")(x), rtol=1e-5, atol=1e-5)
    assert ("execute_async_v3", (5, *SHAPE)) in trt.calls
    assert len(runner.time_ms(x[:1], iters=3, warmup=1)) == 3


def test_runner_refuses_a_foreign_engine(device_standins):
    with pytest.raises(EngineBuildError, match="rebuild it on this device"):
        EngineRunner(b"an engine from another GPU", device_standins)


def test_no_cuda_runtime_is_a_clear_error(monkeypatch, tmp_path):
    from edgesmlp.errors import MissingDependencyError
    from edgesmlp.runtimes import cuda

    monkeypatch.setenv("EDGESMLP_CUDART", str(tmp_path / "missing-libcudart.so"))
    cuda.library.cache_clear()
    try:
        assert cuda.device_count() == 0
        with pytest.raises(MissingDependencyError, match="libcudart.*EDGESMLP_CUDART"):
            cuda.Stream()
    finally:
        cuda.library.cache_clear()


def test_missing_tensorrt_says_what_to_do(monkeypatch):
    import sys

    from edgesmlp.errors import MissingDependencyError
    from edgesmlp.runtimes.tensorrt import require_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match="tensorrt.*JetPack"):
        require_tensorrt()


def test_profile_reads_precision_off_the_engine_and_times_each_layer(qdq_onnx, device_standins):
    """Engines are built DETAILED, so the inspector names each layer's input type: the INT8 layers are those
    the engine says read Int8. Layer times come from an IProfiler on the context (made up by the stand-in)."""
    trt = device_standins
    engine = build_engine(qdq_onnx / "int8.onnx", EngineConfig("int8", SHAPE), trt)
    assert ("profiling_verbosity", "DETAILED") in trt.calls
    runner = EngineRunner(engine, trt)
    profile = runner.profile(np.zeros((1, *SHAPE), np.float32), runs=3)
    assert ("get_engine_information", "JSON") in trt.calls and runner.context.profiler is None
    assert len(names(trt.calls, "execute_async_v3")) == 3
    precisions = {layer.precision for layer in profile.layers}
    assert precisions == {"int8"} and len(profile.layers) == 35  # every weighted layer of the Q/DQ graph
    fp32 = EngineRunner(build_engine(qdq_onnx / "fp32.onnx", EngineConfig("fp32", SHAPE), trt), trt)
    assert {layer.precision for layer in fp32.profile(np.zeros((1, *SHAPE), np.float32), runs=1).layers} == {"fp32"}
    assert profile.by_type()[0]["share"] > 0 and "TensorRT" in profile.source

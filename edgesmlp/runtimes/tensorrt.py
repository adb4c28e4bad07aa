"""TensorRT engines from ONNX with the Python API: build (10.x and 11.x), load, run, time.

* TensorRT 10.0-10.11 build "weakly typed": precision comes from builder flags (FP16, INT8).
* TensorRT >= 10.12 deprecated weak typing and 11.x removed the flags: networks are strongly typed and
  precision comes from the graph itself (the Q/DQ nodes make the INT8 layers, FLOAT16 tensors the FP16
  ones). We set STRONGLY_TYPED from 10.12 on (required on 10.x, ignored by 11.x) and set no precision
  flags; an FP16 engine there needs an FP16-typed graph (the bundle's ``model_fp16.onnx``).

Device buffers, the stream and the timing events come from :mod:`edgesmlp.runtimes.cuda` (the CUDA
runtime library through ctypes), so the device side needs neither torch nor cuda-python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesmlp.errors import EngineBuildError, MissingDependencyError
from edgesmlp.runtimes import cuda
from edgesmlp.runtimes.base import LayerTime, Profile, Runner, precision_of

STRONG_TYPING_FROM = (10, 12)


def require_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError(
            "tensorrt", "building and running TensorRT engines",
            "use JetPack's TensorRT on a Jetson, or NVIDIA's tensorrt wheels on an x86 GPU host",
        ) from None
    return tensorrt


def version(trt) -> tuple[int, int]:
    parts = str(trt.__version__).split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def strongly_typed(trt) -> bool:
    return version(trt) >= STRONG_TYPING_FROM


@dataclass(frozen=True)
class EngineConfig:
    precision: str  # int8 (from a Q/DQ ONNX), fp16 or fp32
    input_shape: tuple[int, int, int]  # C, H, W
    max_batch: int = 32
    opt_batch: int = 1
    workspace_mb: int = 1024
    dla_core: int | None = None  # Jetson Orin/Xavier DLA, with GPU fallback
    timing_cache: Path | None = None
    input_name: str = "input"
    detailed_profile: bool = True  # ProfilingVerbosity.DETAILED: the engine inspector names each layer's types


def build_engine(onnx_path: str | Path, config: EngineConfig, trt=None) -> bytes:
    """Parse ``onnx_path`` and return a serialized engine (bytes)."""
    trt = trt or require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    typed = strongly_typed(trt)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors or 'no detail given'}")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    if config.detailed_profile:  # costs nothing at run time; `bench --profile` reads it back
        builder_config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not typed:
        if config.precision in ("fp16", "int8"):
            builder_config.set_flag(trt.BuilderFlag.FP16)  # layers left in float run in FP16
        if config.precision == "int8":
            builder_config.set_flag(trt.BuilderFlag.INT8)
    elif config.precision == "fp16" and not float16_typed(onnx_path):
        raise EngineBuildError(
            f"TensorRT {trt.__version__} builds strongly typed networks, and {onnx_path} is typed FP32: an FP16 "
            "engine needs an FP16-typed ONNX (the Jetson bundle's model_fp16.onnx, or ModelOpt AutoCast's output)"
        )
    profile = builder.create_optimization_profile()
    c, h, w = config.input_shape
    profile.set_shape(config.input_name, (1, c, h, w), (config.opt_batch, c, h, w), (config.max_batch, c, h, w))
    builder_config.add_optimization_profile(profile)
    if config.dla_core is not None:
        builder_config.default_device_type = trt.DeviceType.DLA
        builder_config.DLA_core = config.dla_core
        builder_config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_bytes = config.timing_cache.read_bytes() if config.timing_cache and config.timing_cache.exists() else b""
    builder_config.set_timing_cache(builder_config.create_timing_cache(cache_bytes), ignore_mismatch=True)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build a {config.precision} engine from {onnx_path}; "
                               "run with the TensorRT logger at VERBOSE for the reason")
    if config.timing_cache is not None:
        config.timing_cache.write_bytes(bytes(builder_config.get_timing_cache().serialize()))
    return bytes(serialized)


def float16_typed(onnx_path: str | Path) -> bool:
    """Whether the ONNX at ``onnx_path`` holds FLOAT16 weights: what a strongly typed network runs in FP16."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def _datatype(text: str) -> str:
    """The precision named in an inspector format, e.g. "Thirty-two wide channel vectorized row major Int8 format"."""
    return next((p for p in map(precision_of, text.split()) if p != "-"), "-")


class EngineRunner(Runner):
    """``runner(x) -> logits`` on a deserialized engine, with device buffers grown to the largest batch seen."""

    def __init__(self, engine_bytes: bytes, trt=None):
        self.trt = trt or require_tensorrt()
        self.runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise EngineBuildError("TensorRT could not load the engine: it was built for another GPU or TensorRT "
                                   "version; rebuild it on this device")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        self.input = next(n for n in names if modes[n] == self.trt.TensorIOMode.INPUT)
        self.output = next(n for n in names if modes[n] == self.trt.TensorIOMode.OUTPUT)
        self.stream = cuda.Stream()
        self.buffers: dict[str, cuda.DeviceBuffer] = {}

    def _buffer(self, name: str, nbytes: int) -> cuda.DeviceBuffer:
        if name not in self.buffers or self.buffers[name].nbytes < nbytes:
            self.buffers[name] = cuda.DeviceBuffer(nbytes)
            self.context.set_tensor_address(name, self.buffers[name].ptr)
        return self.buffers[name]

    def _prepare(self, x: np.ndarray) -> tuple[int, ...]:
        """Upload ``x`` and bind both tensors; return the output shape."""
        self.context.set_input_shape(self.input, tuple(x.shape))
        out_shape = tuple(self.context.get_tensor_shape(self.output))
        self._buffer(self.input, x.nbytes).upload(x, self.stream)
        self._buffer(self.output, int(np.prod(out_shape)) * 4)
        return out_shape

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.address):
            raise EngineBuildError("TensorRT failed to execute the engine")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out_shape = self._prepare(np.ascontiguousarray(x, np.float32))
        self._enqueue()
        return self.buffers[self.output].download(np.empty(out_shape, np.float32), self.stream)

    def profile(self, x: np.ndarray, runs: int = 20) -> Profile:
        """Per-layer device time from TensorRT's IProfiler, and each layer's precision from the engine inspector
        (the data type of its first input, as built: INT8 is read off the engine, not assumed)."""
        import json

        trt = self.trt
        times: dict[str, list[float]] = {}

        class Recorder(trt.IProfiler):
            def __init__(self):
                trt.IProfiler.__init__(self)  # pybind11 trampolines need the base initialised

            def report_layer_time(self, layer_name, ms):
                times.setdefault(layer_name, []).append(ms)

        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        described = {}
        for layer in info.get("Layers", []):
            if isinstance(layer, dict):
                inputs = layer.get("Inputs") or [{}]
                described[layer.get("Name", "")] = (layer.get("LayerType", "?"), layer.get("TacticName", ""),
                                                    _datatype(str(inputs[0].get("Format/Datatype", ""))))
        self._prepare(np.ascontiguousarray(x, np.float32))
        recorder = Recorder()
        self.context.profiler = recorder
        try:
            for _ in range(runs):
                self._enqueue()
                self.stream.synchronize()
        finally:
            self.context.profiler = None
        layers = tuple(LayerTime(name, *described.get(name, ("?", "", "-")), sum(t) / len(t)) for name, t in times.items())
        return Profile(layers, runs, len(x), f"TensorRT {trt.__version__} IProfiler and engine inspector")

    def time_ms(self, x: np.ndarray, iters: int, warmup: int) -> list[float]:
        """Per-run device time: CUDA events around each enqueue (the input already on the device)."""
        self._prepare(np.ascontiguousarray(x, np.float32))
        for _ in range(warmup):
            self._enqueue()
        self.stream.synchronize()
        start, end, samples = cuda.Event(), cuda.Event(), []
        for _ in range(iters):
            start.record(self.stream)
            self._enqueue()
            end.record(self.stream)
            samples.append(end.elapsed_ms(start))
        return samples

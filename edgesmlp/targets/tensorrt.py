"""TensorRT engines from ONNX with the Python API: build (10.x and 11.x), load, run, time.

* TensorRT 10.0-10.11 build "weakly typed": precision comes from builder flags (FP16, INT8).
* TensorRT >= 10.12 deprecated weak typing and 11.x removed the flags: networks are strongly typed and
  precision comes from the graph itself (the Q/DQ nodes make the INT8 layers). We set STRONGLY_TYPED
  from 10.12 on (required on 10.x, ignored by 11.x) and set no precision flags.

Device buffers are torch CUDA tensors, and latency is timed with CUDA events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesmlp.errors import EdgesmlpError, InputError, MissingDependencyError

STRONG_TYPING_FROM = (10, 12)


class EngineBuildError(EdgesmlpError):
    """TensorRT could not parse the ONNX or build an engine from it."""


def require_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError(
            "tensorrt", "building and running TensorRT engines",
            "use JetPack's TensorRT on a Jetson, or NVIDIA's tensorrt wheels on an x86 GPU host",
        ) from None
    return tensorrt


def require_cuda():
    import torch

    if not torch.cuda.is_available():
        raise InputError("TensorRT engines need an NVIDIA GPU, and torch sees none: run this on the Jetson (or a "
                         "GPU host) with a CUDA build of torch")


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
    if not typed:
        if config.precision in ("fp16", "int8"):
            builder_config.set_flag(trt.BuilderFlag.FP16)  # layers left in float run in FP16
        if config.precision == "int8":
            builder_config.set_flag(trt.BuilderFlag.INT8)
    elif config.precision == "fp16":
        raise EngineBuildError(
            f"TensorRT {trt.__version__} builds strongly typed networks: an FP16 engine needs an FP16 ONNX "
            "(convert it with ModelOpt AutoCast); build the FP32 or INT8 engine instead"
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


class EngineRunner:
    """``runner(x) -> logits`` on a deserialized engine; buffers are torch tensors on ``device``."""

    def __init__(self, engine_bytes: bytes, trt=None, device: str = "cuda"):
        import torch

        self.trt = trt or require_tensorrt()
        self.torch, self.device = torch, device
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

    def _stream(self) -> int:
        return self.torch.cuda.current_stream().cuda_stream if self.device == "cuda" else 0

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def _enqueue(self, x):
        self.context.set_input_shape(self.input, tuple(x.shape))
        out_shape = tuple(self.context.get_tensor_shape(self.output))
        out = self.torch.empty(out_shape, dtype=self.torch.float32, device=self.device)
        self.context.set_tensor_address(self.input, x.data_ptr())
        self.context.set_tensor_address(self.output, out.data_ptr())
        if not self.context.execute_async_v3(self._stream()):
            raise EngineBuildError("TensorRT failed to execute the engine")
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        device_x = self.torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        out = self._enqueue(device_x)
        self._sync()
        return out.cpu().numpy()

    def time_ms(self, x: np.ndarray, iters: int = 50, warmup: int = 10) -> list[float]:
        """Per-run device time: CUDA events around each enqueue (input already on the device)."""
        device_x = self.torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        for _ in range(warmup):
            self._enqueue(device_x)
        self._sync()
        samples = []
        for _ in range(iters):
            if self.device == "cuda":
                start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
                start.record()
                self._enqueue(device_x)
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                self._enqueue(device_x)
                samples.append((time.perf_counter() - t) * 1e3)
        return samples

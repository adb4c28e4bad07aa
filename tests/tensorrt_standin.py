"""A recording stand-in for the ``tensorrt`` module, for machines without TensorRT or a GPU.

It implements the slice of TensorRT's documented Python API (10.x / 11.x) that edgesmlp uses,
checks the arguments of every call, and records them in ``calls``. ``make_tensorrt("11.0.0")`` has
no FP16/INT8 builder flags, as TensorRT 11 does not. A strongly typed network refuses precision flags,
as TensorRT does (the build returns None), and runs its float layers in the type the ONNX gives them. Its "engine" runs the parsed ONNX with ONNX
Runtime, reading and writing through the raw tensor addresses the runner sets, so the runner's
buffer handling is checked on real numbers. It is not TensorRT: nothing here says how fast or how
accurate a real engine is.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import types

import numpy as np

MAGIC = b"tensorrt-standin-engine:"


def make_tensorrt(version: str = "10.3.0"):
    calls: list[tuple] = []
    major, minor = (int(p) for p in version.split(".")[:2])
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # libraries probe find_spec("tensorrt")
    trt.__version__ = version
    trt.calls = calls

    class Logger:
        WARNING, INFO, VERBOSE = 2, 3, 4

        def __init__(self, severity=2):
            calls.append(("Logger", severity))

    flag_names = ["GPU_FALLBACK", "REFIT"] + ([] if major >= 11 else ["FP16", "INT8"])
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flag_names)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"], start=1)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"])
    trt.DeviceType = enum.IntEnum("DeviceType", ["GPU", "DLA"])
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"])
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", ["ONELINE", "JSON"])

    class IProfiler:
        def __init__(self):
            self.initialised = True

        def report_layer_time(self, layer_name, ms):
            raise NotImplementedError

    trt.IProfiler = IProfiler

    class Network:
        def __init__(self, flags):
            self.flags, self.onnx = flags, None

    class OnnxParser:
        def __init__(self, network, logger):
            assert isinstance(network, Network) and isinstance(logger, Logger)
            self.network, self.errors = network, []

        def parse_from_file(self, path):
            import onnx

            calls.append(("parse_from_file", path))
            try:
                onnx.checker.check_model(onnx.load(path))
            except Exception as e:  # noqa: BLE001
                self.errors = [f"In node -1: {type(e).__name__}"]
                return False
            self.network.onnx = path
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data) or b"cache"

        def serialize(self):
            return memoryview(self.data)

    class Profile:
        def set_shape(self, name, minimum, opt, maximum):
            assert all(len(s) == 4 for s in (minimum, opt, maximum)) and minimum <= opt <= maximum
            calls.append(("set_shape", name, tuple(minimum), tuple(opt), tuple(maximum)))

    class BuilderConfig:
        def __init__(self):
            self.flags, self.profiles, self.cache = set(), [], None
            self.default_device_type, self.DLA_core = trt.DeviceType.GPU, -1
            self._verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY

        @property
        def profiling_verbosity(self):
            return self._verbosity

        @profiling_verbosity.setter
        def profiling_verbosity(self, value):
            assert isinstance(value, trt.ProfilingVerbosity)
            calls.append(("profiling_verbosity", value.name))
            self._verbosity = value

        def set_memory_pool_limit(self, pool, size):
            assert isinstance(pool, trt.MemoryPoolType) and isinstance(size, int) and size > 0
            calls.append(("set_memory_pool_limit", pool.name, size))

        def set_flag(self, flag):
            assert isinstance(flag, trt.BuilderFlag)
            calls.append(("set_flag", flag.name))
            self.flags.add(flag.name)

        def add_optimization_profile(self, profile):
            assert isinstance(profile, Profile)
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            assert isinstance(data, (bytes, bytearray))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            assert isinstance(cache, TimingCache)
            calls.append(("set_timing_cache", ignore_mismatch))
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            assert isinstance(logger, Logger)

        def create_network(self, flags=0):
            assert isinstance(flags, int)
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            assert network.onnx is not None, "build before a successful parse"
            assert config.profiles, "a dynamic-batch ONNX needs an optimization profile"
            if config.default_device_type == trt.DeviceType.DLA:
                assert "GPU_FALLBACK" in config.flags and config.DLA_core >= 0
            typed = bool(network.flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            if typed and config.flags & {"FP16", "INT8", "BF16"}:
                calls.append(("error", "precision flags are not allowed on a strongly typed network"))
                return None
            calls.append(("build_serialized_network", sorted(config.flags)))
            record = {"onnx": network.onnx, "flags": sorted(config.flags), "typed": typed,
                      "float16": _float16_typed(network.onnx),
                      "detailed": config.profiling_verbosity == trt.ProfilingVerbosity.DETAILED}
            return memoryview(MAGIC + json.dumps(record).encode())

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self._profiler = engine, {}, {}, None

        @property
        def profiler(self):
            return self._profiler

        @profiler.setter
        def profiler(self, value):
            assert value is None or (isinstance(value, IProfiler) and getattr(value, "initialised", False)), \
                "a profiler must be an initialised trt.IProfiler"
            self._profiler = value

        def set_input_shape(self, name, shape):
            assert name == "input" and len(shape) == 4
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            assert name == "logits" and "input" in self.shapes, "input shape must be set first"
            return (self.shapes["input"][0], self.engine.classes)

        def set_tensor_address(self, name, address):
            assert isinstance(address, int) and address != 0
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle):
            assert isinstance(stream_handle, int)
            assert set(self.addresses) == {"input", "logits"}, "every I/O tensor needs an address"
            shape = self.shapes["input"]
            count = int(np.prod(shape))
            x = np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.addresses["input"])).reshape(shape)
            logits = self.engine.session.run(None, {"input": x.copy()})[0]
            out = np.ctypeslib.as_array((ctypes.c_float * logits.size).from_address(self.addresses["logits"]))
            out[:] = logits.ravel()
            calls.append(("execute_async_v3", shape))
            if self._profiler is not None:  # a made-up time per layer: the stand-in measures nothing
                for layer in self.engine.layers():
                    self._profiler.report_layer_time(layer["Name"], 0.01)
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self, record):
            import onnx
            import onnxruntime as ort

            self.record = record
            self.session = ort.InferenceSession(record["onnx"], providers=["CPUExecutionProvider"])
            dims = onnx.load(record["onnx"]).graph.output[0].type.tensor_type.shape.dim
            self.classes = dims[-1].dim_value

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def create_execution_context(self):
            return Context(self)

        def create_engine_inspector(self):
            return Inspector(self)

        def layers(self) -> list[dict]:
            """What a DETAILED inspector says of each weighted layer: INT8 where it reads a DequantizeLinear; else
            the graph's float type on a strongly typed engine, FP16 on a weakly typed one built with the FP16 flag."""
            import onnx

            graph = onnx.load(self.record["onnx"]).graph
            producer = {o: n.op_type for n in graph.node for o in n.output}
            record = self.record
            half = record["float16"] if record["typed"] else "FP16" in record["flags"]
            return [{"Name": n.name, "LayerType": "CaskConvolution" if n.op_type == "Conv" else "CaskGemmMatrixMultiply",
                     "TacticName": "standin", "Inputs": [{"Format/Datatype": "Row major linear " + (
                         "Int8" if producer.get(n.input[0]) == "DequantizeLinear" else "FP16" if half else "FP32")}]}
                    for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]

    class Inspector:
        def __init__(self, engine):
            self.engine, self.execution_context = engine, None

        def get_engine_information(self, format):
            assert isinstance(format, trt.LayerInformationFormat)
            assert self.execution_context is None or isinstance(self.execution_context, Context)
            calls.append(("get_engine_information", format.name))
            layers = self.engine.layers()
            if not self.engine.record.get("detailed"):
                layers = [layer["Name"] for layer in layers]  # LAYER_NAMES_ONLY, as TensorRT does
            return json.dumps({"Layers": layers, "Bindings": ["input", "logits"]})

    class Runtime:
        def __init__(self, logger):
            assert isinstance(logger, Logger)

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(MAGIC):
                return None
            return Engine(json.loads(data[len(MAGIC):]))

    for cls in (Logger, OnnxParser, Builder, Runtime):
        setattr(trt, cls.__name__, cls)
    return trt


def _float16_typed(path) -> bool:
    import onnx

    return any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(path).graph.initializer)

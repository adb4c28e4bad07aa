"""ONNX Runtime on the CPU: runs FP32 graphs and executes Q/DQ graphs (the INT8 accuracy proxy for TensorRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesmlp.errors import workstation_extra
from edgesmlp.runtimes.base import Runner


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise workstation_extra("onnxruntime", "running ONNX models on the CPU") from None
    return onnxruntime


def cpu_session(model: str | Path | bytes, threads: int = 0):
    """An ONNX Runtime CPU session for a path or serialized model, quiet unless something fails."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


class OnnxRuntimeRunner(Runner):
    """``runner(x) -> logits`` for an ONNX file with a dynamic (or matching) batch dimension."""

    def __init__(self, path: str | Path, threads: int = 0):
        self.session = cpu_session(path, threads)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]


def cpu_has_int8_dot_product() -> bool:
    """VNNI or AMX: fast signed x signed INT8 on x86. Without it ONNX Runtime wants u8 activations."""
    from edgesmlp.timing import cpu_flags

    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})

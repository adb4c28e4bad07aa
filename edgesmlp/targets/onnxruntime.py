"""ONNX Runtime on the CPU: runs FP32 graphs and executes Q/DQ graphs (the INT8 accuracy proxy for TensorRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class OnnxRuntimeRunner:
    """``runner(x) -> logits`` for an ONNX file with a dynamic (or matching) batch dimension."""

    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]

"""OpenVINO on Intel (and other x86) CPUs: read and save IR, compile, run.

Both precisions are compiled with INFERENCE_PRECISION_HINT=f32: on CPUs with bf16 support OpenVINO's
default is bf16, which would make "FP32" numbers neither FP32 nor comparable across machines; INT8
models get the same hint, so only the quantized layers differ from FP32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesmlp.errors import MissingDependencyError
from edgesmlp.runtimes.base import Runner

INSTALL = "pip install 'edgesmlp[workstation]'"


def require_openvino():
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError("openvino", "the OpenVINO target", INSTALL) from None
    return openvino


def read_ir(xml: Path):
    return require_openvino().Core().read_model(str(xml))


def save_ir(model, path: Path) -> None:
    """Write model.xml + model.bin; weights stay as they are (no FP16 compression of FP32 weights)."""
    require_openvino().save_model(model, str(path), compress_to_fp16=False)


def ir_size_mb(xml_path: Path) -> float:
    return (xml_path.stat().st_size + xml_path.with_suffix(".bin").stat().st_size) / 1e6


class OpenVINORunner(Runner):
    """A compiled model at one static batch size: ``runner(x) -> logits``.

    Always one stream (the LATENCY hint): with NUM_STREAMS=2, OpenVINO 2026.4 gave INT8 logits that
    differ from its single-stream ones (cosine 0.991 vs 0.9999 on the bundled model), and accuracy
    must be measured in the configuration that is timed.
    """

    def __init__(self, model, batch: int, threads: int = 0):
        ov = require_openvino()
        shaped = model.clone()
        dims = shaped.inputs[0].get_partial_shape()
        shaped.reshape({shaped.inputs[0]: [batch, *(dims[i].get_length() for i in range(1, len(dims)))]})
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.batch = batch
        self.request = ov.Core().compile_model(shaped, "CPU", config).create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer({0: x})[0].copy()

"""OpenVINO on Intel (and other x86) CPUs: convert, save IR, compile, run.

FP32 is compiled with INFERENCE_PRECISION_HINT=f32: on CPUs with bf16 support OpenVINO's default is
bf16, which would make "FP32" numbers neither FP32 nor comparable across machines. INT8 models get the
same hint, so only the quantized layers differ from FP32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgesmlp.errors import MissingDependencyError

INSTALL = "pip install 'edgesmlp[openvino]'"


def require_openvino():
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError("openvino", "the OpenVINO target", INSTALL) from None
    return openvino


def to_openvino(model: torch.nn.Module, in_chans: int, image_size: int):
    """Convert a PyTorch module to an ov.Model with a dynamic batch dimension."""
    ov = require_openvino()
    example = torch.zeros(1, in_chans, image_size, image_size)
    converted = ov.convert_model(model.eval(), example_input=example, input=[-1, in_chans, image_size, image_size])
    converted.inputs[0].get_tensor().set_names({"input"})
    converted.outputs[0].get_tensor().set_names({"logits"})
    return converted


def save_ir(model, path: Path) -> None:
    """Write model.xml + model.bin; weights stay as they are (no FP16 compression of FP32 weights)."""
    ov = require_openvino()
    ov.save_model(model, str(path), compress_to_fp16=False)


class OpenVINORunner:
    """A compiled model at one static batch size: ``runner(x) -> logits``."""

    def __init__(self, model, batch: int, threads: int = 0, latency: bool = True):
        ov = require_openvino()
        shaped = model.clone()
        dims = shaped.inputs[0].get_partial_shape()
        shaped.reshape({shaped.inputs[0]: [batch, *(dims[i].get_length() for i in range(1, len(dims)))]})
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY" if latency else "THROUGHPUT"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.batch = batch
        self.request = ov.Core().compile_model(shaped, "CPU", config).create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer({0: x})[0].copy()


def ir_size_mb(xml_path: Path) -> float:
    return (xml_path.stat().st_size + xml_path.with_suffix(".bin").stat().st_size) / 1e6

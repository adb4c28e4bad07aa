"""ONNX Runtime on the CPU: runs FP32 graphs and executes Q/DQ graphs (the INT8 accuracy proxy for TensorRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def cpu_session(model: str | Path | bytes, threads: int = 0):
    """An ONNX Runtime CPU session for a path or serialized model, quiet unless something fails."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


class OnnxRuntimeRunner:
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


def available() -> str | None:
    return None


def bench_build(job, folder: Path, log):
    """FP32 ONNX of the shipped form, and its TensorRT-rule Q/DQ INT8 (u8 activations on CPUs without VNNI)."""
    import time

    import onnx

    from edgesmlp.export import export_onnx
    from edgesmlp.quantize.qdq import QDQConfig, quantize_qdq, to_unsigned_activations
    from edgesmlp.targets.base import Build, Variant, calibration_array, folder_size_mb

    folder.mkdir(parents=True, exist_ok=True)
    c = job.ckpt.config
    export_onnx(job.model, folder / "model_fp32.onnx", c.image_size, c.in_chans, dynamic_batch=True,
                reference=job.ckpt.model)
    start = time.perf_counter()
    quantize_qdq(folder / "model_fp32.onnx", folder / "model_int8.onnx", calibration_array(job),
                 job.options.get("qdq") or QDQConfig())
    signed = cpu_has_int8_dot_product()
    if not signed:
        onnx.save(to_unsigned_activations(onnx.load(str(folder / "model_int8.onnx"))), str(folder / "model_int8.onnx"))
    seconds = time.perf_counter() - start
    threads = job.options.get("threads", 0)

    def runner(path):
        return lambda batch, latency: OnnxRuntimeRunner(path, threads)

    kind = "s8 activations (VNNI CPU)" if signed else "u8 activations (CPU without VNNI)"
    return Build([
        Variant("fp32", "ONNX Runtime CPU", runner(folder / "model_fp32.onnx"), folder_size_mb(folder / "model_fp32.onnx")),
        Variant("int8", "ONNX Runtime CPU", runner(folder / "model_int8.onnx"), folder_size_mb(folder / "model_int8.onnx"),
                seconds, note=f"Q/DQ graph, {kind}"),
    ], [f"ONNX Runtime INT8 uses {kind}: on AVX2 CPUs without VNNI, signed activations ran slower than FP32."])

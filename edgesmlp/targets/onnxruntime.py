"""ONNX Runtime on the CPU (x86 or ARM): the FP32 ONNX of the shipped form and its Q/DQ INT8.

The INT8 graph is the TensorRT-rule Q/DQ graph; on CPUs without a signed INT8 dot product (no VNNI or
AMX) its activations are rewritten to u8 (exact), which ONNX Runtime runs far faster there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edgesmlp.errors import InputError
from edgesmlp.quantize.qdq import QDQConfig
from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner, cpu_has_int8_dot_product
from edgesmlp.targets.base import Build, Job, Log, RunSettings, Target, TargetOptions, Variant, size_mb

RUNTIME = "ONNX Runtime CPU"
FP32_ONNX = "model_fp32.onnx"
INT8_ONNX = "model_int8.onnx"  # this target's own INT8 (activation signedness chosen for this CPU)
BUNDLE_INT8_ONNX = "model_int8_qdq.onnx"  # a Jetson bundle's Q/DQ graph, read by `bench --from`
EMULATED = "emulated (ONNX Runtime CPU)"


@dataclass(frozen=True)
class OnnxRuntimeConfig:
    qdq: QDQConfig = QDQConfig()

    def to_dict(self) -> dict:
        return self.qdq.to_dict()


def _runner(path: Path, run: RunSettings):
    return lambda batch: OnnxRuntimeRunner(path, run.cpu_threads)


def _signedness() -> tuple[bool, str]:
    signed = cpu_has_int8_dot_product()
    return signed, "s8 activations (VNNI CPU)" if signed else "u8 activations (CPU without VNNI)"


class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    summary = "ONNX Runtime on any CPU (x86, ARM): FP32 ONNX and Q/DQ INT8 ONNX"
    config_type = OnnxRuntimeConfig
    reads = ("onnxruntime", "jetson")

    def config_from(self, options: TargetOptions) -> OnnxRuntimeConfig:
        return OnnxRuntimeConfig(QDQConfig.chosen(options.calib_method, options.percentile))

    def available(self) -> str | None:
        import importlib.util

        return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed: pip install onnxruntime"

    def build(self, job: Job, folder: Path, log: Log) -> Build:
        import onnx

        from edgesmlp.export import export_onnx
        from edgesmlp.quantize.qdq import quantize_qdq, to_unsigned_activations

        c = job.ckpt.config
        export_onnx(job.model, folder / FP32_ONNX, c.image_size, c.in_chans, dynamic_batch=True,
                    reference=job.ckpt.model)
        start = time.perf_counter()
        quantize_qdq(folder / FP32_ONNX, folder / INT8_ONNX, job.calibration, job.config.qdq)
        signed, kind = _signedness()
        if not signed:
            onnx.save(to_unsigned_activations(onnx.load(str(folder / INT8_ONNX))), str(folder / INT8_ONNX))
        seconds = time.perf_counter() - start
        build = self.load(folder, job.config, job.run, log)
        build.variants[1].quantize_seconds = seconds
        return build

    def load(self, folder: Path, config: OnnxRuntimeConfig, run: RunSettings, log: Log) -> Build:
        """This target's own folder, or a Jetson bundle (whose Q/DQ graph is the TensorRT emulation)."""
        if not (folder / FP32_ONNX).is_file():
            raise InputError(f"{folder} has no {FP32_ONNX}: point --from at a quantize output with ONNX models")
        if (folder / INT8_ONNX).is_file():
            int8, runtime, note = folder / INT8_ONNX, RUNTIME, f"Q/DQ graph, {_signedness()[1]}"
        else:
            int8, runtime, note = folder / BUNDLE_INT8_ONNX, EMULATED, "the Jetson bundle's Q/DQ graph (s8 activations)"
        return Build([
            Variant("fp32", RUNTIME, _runner(folder / FP32_ONNX, run), size_mb(folder / FP32_ONNX)),
            Variant("int8", runtime, _runner(int8, run), size_mb(int8), note=note),
        ], [f"ONNX Runtime INT8 uses {_signedness()[1]}: on AVX2 CPUs without VNNI, signed activations ran slower "
            "than FP32."])


TARGET = OnnxRuntimeTarget()

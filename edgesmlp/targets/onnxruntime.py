"""ONNX Runtime on the CPU (x86 or ARM): the FP32 ONNX of the shipped form and its Q/DQ INT8.

The INT8 graph has ONNX Runtime's own placement, not TensorRT's: a Q/DQ after each quantized Conv /
MatMul / Gemm too, so ONNX Runtime fuses each into QLinearConv / QLinearMatMul (with TensorRT's
placement it ran every Conv in float between a DQ and a float consumer, slower than FP32:
benchmarks/results/onnxruntime_int8.md), and no
Q/DQ on the residual Adds (ONNX Runtime fuses no Add into a Conv; they only cost a requantize). On x86
its activations (and the left weight of ``P @ x``) are u8 (exact: zero point 128), the only kind
ONNX Runtime's x86 integer kernels take fast; on x86 CPUs without VNNI, whose u8 x s8 kernels saturate, the
signed weights are 7-bit (``timing.x86_without_vnni``) unless ``--weight-bits`` says otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgesmlp.artifacts import atomic_file
from edgesmlp.errors import InputError
from edgesmlp.precision import Precision
from edgesmlp.quantization.qdq import QDQConfig
from edgesmlp.quantization.qdq_lint import require_qdq
from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner, emulation_runner, wants_unsigned_activations
from edgesmlp.timing import weight_bits_for_this_cpu, x86_without_vnni
from edgesmlp.targets.base import (WEIGHT_BITS_ABOUT, Build, Job, Log, Option, RunSettings, Target, TargetOptions,
                                   Variant, qdq_options, size_mb)

RUNTIME = "ONNX Runtime CPU"
FP32_ONNX = "model_fp32.onnx"
INT8_ONNX = "model_int8.onnx"  # this target's own INT8 (activation signedness chosen for this CPU)
BUNDLE_INT8_ONNX = "model_int8_qdq.onnx"  # a Jetson bundle's Q/DQ graph, read by `bench --from`
EMULATED = "emulated (ONNX Runtime CPU)"


def ort_placement(qdq: QDQConfig) -> QDQConfig:
    """The user's calibration choices, with ONNX Runtime's placement (see the module docstring)."""
    return replace(qdq, quantize_outputs=True, quantize_residuals=False)


def _for_this_cpu(qdq: QDQConfig, weight_bits: int | None = None) -> QDQConfig:
    """ONNX Runtime's placement, and the weight bits given (None: the ones this CPU computes exactly)."""
    return replace(ort_placement(qdq), weight_bits=weight_bits_for_this_cpu() if weight_bits is None else weight_bits)


@dataclass(frozen=True)
class OnnxRuntimeConfig:
    qdq: QDQConfig = field(default_factory=lambda: _for_this_cpu(QDQConfig()))

    def to_dict(self) -> dict:
        return self.qdq.to_dict()


def _runner(path: Path, run: RunSettings, emulated: bool = False):
    """ONNX Runtime on ``path``; ``emulated``: the Q/DQ graph's own math (``emulation_runner``), for a Jetson bundle."""
    make = emulation_runner if emulated else OnnxRuntimeRunner
    return lambda batch: make(path, run.cpu_threads)


SATURATION_NOTE = ("this CPU has no VNNI, and {file} has 8-bit weights: ONNX Runtime's u8 x s8 kernels "
                   "saturate here, so its INT8 accuracy is below what the graph computes elsewhere. For this kind "
                   "of CPU, quantize with --weight-bits 7 (the default when quantizing on one).")


def _weight_bits(path: Path) -> int:
    import onnx

    from edgesmlp.quantization.qdq import weight_bits_of

    return weight_bits_of(onnx.load(str(path)))


def _signedness() -> tuple[bool, str]:
    signed = not wants_unsigned_activations()
    return signed, "s8 activations (ARM)" if signed else "u8 activations (x86)"


class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    summary = "ONNX Runtime on any CPU (x86, ARM): FP32 ONNX and Q/DQ INT8 ONNX"
    config_type = OnnxRuntimeConfig
    title = "ONNX Runtime"
    options = (*qdq_options(), Option("weight_bits", "weight_bits", int, "7 or 8 in the Q/DQ graph.", "[7|8]",
                                      about=WEIGHT_BITS_ABOUT))

    def config_from(self, options: TargetOptions) -> OnnxRuntimeConfig:
        return OnnxRuntimeConfig(_for_this_cpu(QDQConfig.chosen(options.calib_method, options.percentile),
                                               options.weight_bits))

    def available(self) -> str | None:
        import importlib.util

        return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed: pip install onnxruntime"

    def build(self, job: Job, folder: Path, log: Log) -> Build:
        import onnx

        from edgesmlp.export import export_onnx
        from edgesmlp.quantization.qdq import quantize_qdq, to_unsigned_activations

        c = job.ckpt.config
        export_onnx(job.model, folder / FP32_ONNX, c.image_size, c.in_chans, dynamic_batch=True,
                    reference=job.ckpt.model)
        start = time.perf_counter()
        quantize_qdq(folder / FP32_ONNX, folder / INT8_ONNX, job.calibration, job.config.qdq)
        if not _signedness()[0]:
            unsigned = to_unsigned_activations(onnx.load(str(folder / INT8_ONNX)))
            with atomic_file(folder / INT8_ONNX) as tmp:
                onnx.save(unsigned, str(tmp))
        seconds = time.perf_counter() - start
        build = self.load(folder, job.config, job.run, log)
        build.variants[1].quantize_seconds = seconds
        return build

    def load(self, folder: Path, config: OnnxRuntimeConfig, run: RunSettings, log: Log) -> Build:
        """This target's own folder, or a Jetson bundle (whose Q/DQ graph is the TensorRT emulation)."""
        if not (folder / FP32_ONNX).is_file():
            raise InputError(f"{folder} has no {FP32_ONNX}: point --from at a quantize output with ONNX models")
        notes = [f"ONNX Runtime INT8 uses ONNX Runtime's Q/DQ placement (QLinearConv, QLinearMatMul) with "
                 f"{_signedness()[1]}; the Jetson graph keeps TensorRT's."]
        if (folder / INT8_ONNX).is_file():
            int8, runtime = folder / INT8_ONNX, RUNTIME
            bits = _weight_bits(int8)
            note = f"Q/DQ graph, {_signedness()[1]}, {bits}-bit weights"
            if bits == 8 and x86_without_vnni():
                notes.append(SATURATION_NOTE.format(file=int8.name))
                log(f"warning: {notes[-1]}")
        else:
            int8, runtime, note = folder / BUNDLE_INT8_ONNX, EMULATED, "the Jetson bundle's Q/DQ graph (s8 activations)"
        require_qdq(int8)
        return Build([
            Variant(Precision.fp32, RUNTIME, _runner(folder / FP32_ONNX, run), size_mb(folder / FP32_ONNX)),
            Variant(Precision.int8, runtime, _runner(int8, run, emulated=runtime == EMULATED), size_mb(int8), note=note),
        ], notes)


TARGET = OnnxRuntimeTarget()

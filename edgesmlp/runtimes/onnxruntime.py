"""ONNX Runtime on the CPU: runs FP32 graphs and executes Q/DQ graphs (the INT8 accuracy proxy for TensorRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesmlp.errors import workstation_extra
from edgesmlp.runtimes.base import LayerTime, Profile, Runner, precision_of


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise workstation_extra("onnxruntime", "running ONNX models on the CPU") from None
    return onnxruntime


def cpu_session(model: str | Path | bytes, threads: int = 0, profile_prefix: str | None = None,
                unfused: bool = False):
    """An ONNX Runtime CPU session for a path or serialized model, quiet unless something fails. ``unfused``: no
    graph optimization, so every Q/DQ pair runs as written, in float (the graph's exact math, no integer kernels)."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Threads stop spinning when a run ends: spinning, they took the cores of the runtime that ran next
    # (benchmarks/results/evaluation_overhead.md: no cost to its own batch-1 latency).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if unfused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


class OnnxRuntimeRunner(Runner):
    """``runner(x) -> logits`` for an ONNX file with a dynamic (or matching) batch dimension."""

    def __init__(self, path: str | Path, threads: int = 0, unfused: bool = False):
        self.path, self.threads = path, threads
        self.session = cpu_session(path, threads, unfused=unfused)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]

    def profile(self, x: np.ndarray, runs: int = 20) -> Profile:
        """ONNX Runtime's profiler on a second session of the same file: each node's kernel time; its precision is
        what the kernel read (``QLinearConv`` or an int8 input: int8), after ONNX Runtime's own fusions."""
        import json
        import os
        import tempfile

        folder = tempfile.mkdtemp()
        session = cpu_session(self.path, self.threads, profile_prefix=os.path.join(folder, "ort"))
        session.run(None, {self.input: x})  # warm-up
        for _ in range(runs):
            session.run(None, {self.input: x})
        trace = Path(session.end_profiling())
        try:
            events = json.loads(trace.read_text())
        finally:
            trace.unlink(missing_ok=True)
            os.rmdir(folder)
        totals: dict[tuple[str, str, str, str], list[float]] = {}
        for e in events:
            if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
                continue
            args = e.get("args", {})
            types = [next(iter(t)) for t in args.get("input_type_shape", []) if isinstance(t, dict) and t]
            op = args.get("op_name", "?")
            precision = "int8" if op.startswith("QLinear") or "Integer" in op or any(
                t in ("int8", "uint8") for t in types[:1]) else precision_of(types[0]) if types else "-"
            key = (e["name"].removesuffix("_kernel_time"), op, args.get("provider", "CPU"), precision)
            totals.setdefault(key, []).append(e["dur"] / 1e3)
        layers = tuple(LayerTime(name, op, provider, precision, sum(t) / max(len(t), 1))
                       for (name, op, provider, precision), t in totals.items())
        return Profile(layers, runs, len(x), "ONNX Runtime profiler (enable_profiling)")


def wants_unsigned_activations() -> bool:
    """On x86 ONNX Runtime's integer kernels are u8 activations x s8 weights (VPMADDUBSW, VNNI's VPDPBUSD):
    s8 activations ran slower than u8 even on a VNNI CPU (benchmarks/results/onnxruntime_int8.md).
    On ARM the signed graph (ONNX Runtime's default S8S8, SDOT) stays."""
    from edgesmlp.timing import is_x86

    return is_x86()


def emulation_session(model: str | Path | bytes, threads: int = 0):
    """A session that computes what a TensorRT-rule Q/DQ graph means, as the accuracy proxy for TensorRT's INT8.
    Where this CPU's integer kernels saturate (``timing.x86_without_vnni``) its Q/DQ pairs run unfused, in float:
    fused there, a random sMLPNet's logits moved far from QAT's fake quantization of the same graph; unfused, they
    match it to float rounding (tests/test_qdq.py)."""
    from edgesmlp.timing import x86_without_vnni

    return cpu_session(model, threads, unfused=x86_without_vnni())


def emulation_runner(path: str | Path, threads: int = 0) -> OnnxRuntimeRunner:
    """:func:`emulation_session` as a runner."""
    from edgesmlp.timing import x86_without_vnni

    return OnnxRuntimeRunner(path, threads, unfused=x86_without_vnni())

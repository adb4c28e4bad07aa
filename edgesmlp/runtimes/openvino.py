"""OpenVINO on Intel (and other x86) CPUs: read and save IR, compile, run.

Both precisions are compiled with INFERENCE_PRECISION_HINT=f32: on CPUs with bf16 support OpenVINO's
default is bf16, which would make "FP32" numbers neither FP32 nor comparable across machines; INT8
models get the same hint, so only the quantized layers differ from FP32.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgesmlp.errors import MissingDependencyError
from edgesmlp.runtimes.base import LayerTime, Profile, Runner, precision_of

INSTALL = "pip install 'edgesmlp[workstation]'"


def require_openvino():
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError("openvino", "the OpenVINO target", INSTALL) from None
    return openvino


def read_ir(xml: Path):
    return require_openvino().Core().read_model(str(xml))


def model_cache_dir() -> Path:
    """Where compiled OpenVINO models are cached between runs: the user's cache folder (XDG_CACHE_HOME)."""
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgesmlp" / "openvino"


def save_ir(model, path: Path) -> None:
    """Write model.xml + model.bin; weights stay as they are (no FP16 compression of FP32 weights). The names
    OpenVINO generates (``Constant_18980``: a counter over the whole process) are numbered in graph order, so the
    same model saves to the same bytes in any process."""
    for i, op in enumerate(model.get_ordered_ops()):
        if re.fullmatch(rf"{re.escape(op.get_type_name())}_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_{i}")
    model.set_friendly_name("Model")
    require_openvino().save_model(model, str(path), compress_to_fp16=False)


def default_precision_name(value) -> str:
    """OpenVINO's element type as the short name users see: bf16, f16, f32."""
    text = str(getattr(value, "get_type_name", lambda: value)()).lower()
    return {"bf16": "bf16", "bfloat16": "bf16", "f16": "f16", "float16": "f16", "f32": "f32", "float32": "f32"}.get(
        text, text)


def resolved_default_precision() -> str:
    """What OpenVINO's CPU plugin compiles a float model in when nothing is asked for (bf16 or f32)."""
    ov = require_openvino()
    return default_precision_name(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))


def ir_size_mb(xml_path: Path) -> float:
    return (xml_path.stat().st_size + xml_path.with_suffix(".bin").stat().st_size) / 1e6


def static_batch(model) -> int | None:
    """The model's batch size when its input fixes one, else None (a dynamic batch)."""
    first = model.inputs[0].get_partial_shape()[0]
    return first.get_length() if first.is_static else None


def with_batch(model, batch: int):
    """``model`` itself when its static batch is ``batch``, else a copy reshaped to it (-1: dynamic)."""
    if static_batch(model) == batch or (batch == -1 and static_batch(model) is None):
        return model
    shaped = model.clone()
    dims = shaped.inputs[0].get_partial_shape()
    shaped.reshape({shaped.inputs[0]: [batch, *(dims[i].get_length() for i in range(1, len(dims)))]})
    return shaped


def compile_error(model) -> str | None:
    """None when the CPU plugin compiles ``model`` at batch 1, else the first line of its error that says why."""
    ov = require_openvino()
    try:
        ov.Core().compile_model(with_batch(model, 1), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        return next((line for line in reversed(lines) if not line.startswith("Exception from")), lines[-1])
    return None


class OpenVINORunner(Runner):
    """A compiled model at one static batch size: ``runner(x) -> logits``.

    A model whose static batch is ``batch`` is compiled exactly as shipped; any other is reshaped first
    (as ``benchmark_app -shape`` does). ``precision`` "f32" pins INFERENCE_PRECISION_HINT; None leaves the
    CPU's default (bf16 on bf16-capable CPUs), and ``inference_precision`` says what it resolved to.

    Always one stream (the LATENCY hint): OpenVINO 2026.4 compiles an INT8 Concat holding a left-operand
    MatMul (every sMLP block's ``P @ x``) into wrong logits on about half of its 2-stream compilations
    (benchmarks/openvino_streams_repro.py reproduces it in 53 ops), and accuracy must be measured in the
    configuration that is timed. Throughput (``images_per_second``) runs as many streams as the THROUGHPUT
    hint would, each a single-stream model compiled on its own, which computes exactly these logits.
    """

    def __init__(self, model, batch: int, threads: int = 0, precision: str | None = "f32",
                 cache_dir: Path | None = None):
        model = with_batch(model, batch)
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.batch, self.model, self.config, self.cache_dir = batch, model, config, cache_dir

    @functools.cached_property
    def _compiled(self):
        """The single-stream compilation, made when first used: a runner whose calls all go to its stream pool
        (evaluation and throughput where the THROUGHPUT hint picks several streams) never compiles it."""
        return self._core().compile_model(self.model, "CPU", self.config)

    @functools.cached_property
    def request(self):
        return self._compiled.create_infer_request()

    @functools.cached_property
    def inference_precision(self) -> str:
        return default_precision_name(self._compiled.get_property("INFERENCE_PRECISION_HINT"))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer({0: x})[0].copy()

    def _core(self):
        """A Core that reads and writes compiled blobs in ``cache_dir`` (OpenVINO's model cache), if one is given."""
        core = require_openvino().Core()
        if self.cache_dir is not None:
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
        return core

    @functools.cached_property
    def throughput_streams(self) -> int:
        """How many streams OpenVINO's THROUGHPUT hint picks for this model, threads and CPU (one compilation)."""
        config = {k: v for k, v in self.config.items() if k != "PERFORMANCE_HINT"}
        compiled = self._core().compile_model(self.model, "CPU", {**config, "PERFORMANCE_HINT": "THROUGHPUT"})
        return int(compiled.get_property("NUM_STREAMS"))

    @functools.cached_property
    def _pool(self) -> list:
        """The stream pool ``images_per_second`` runs, compiled once per runner."""
        return self.stream_pool(self.throughput_streams)

    def stream_pool(self, streams: int) -> list:
        """``streams`` infer requests on as many single-stream models compiled separately, each with its share of
        the threads and pinning off: OpenVINO's streams without its multi-stream compilation, which computes
        wrong INT8 logits on sMLPNet (see the class docstring; each of these computes what this runner does)."""
        import os

        threads = self.config.get("INFERENCE_NUM_THREADS") or os.cpu_count() or 1
        config = {**self.config, "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": max(1, threads // streams),
                  "ENABLE_CPU_PINNING": False}
        return [self._core().compile_model(self.model, "CPU", config).create_infer_request() for _ in range(streams)]

    def prepare(self) -> "OpenVINORunner":
        """Compile what ``run_all`` and the throughput column will use: the stream pool if the THROUGHPUT hint picks
        several streams, else the single-stream model."""
        if self.throughput_streams > 1:
            self._pool  # noqa: B018 - compiled on first use
        else:
            self._compiled  # noqa: B018
        return self

    def run_all(self, batches: list[np.ndarray], done: Callable[[], None] = lambda: None) -> list[np.ndarray]:
        """One batch in flight per stream of the pool ``images_per_second`` runs, so that evaluation goes at the
        throughput the report states; each stream computes exactly this runner's logits."""
        if self.throughput_streams <= 1:
            return super().run_all(batches, done)
        pool, outputs = self._pool, []
        for start in range(0, len(batches), len(pool)):
            wave = list(zip(pool, batches[start : start + len(pool)]))
            for request, x in wave:
                request.start_async({0: x})
            for request, _ in wave:
                request.wait()
                outputs.append(request.get_output_tensor(0).data.copy())
                done()
        return outputs

    def images_per_second(self, x: np.ndarray, seconds: float) -> float:
        """Throughput as OpenVINO's THROUGHPUT hint would give it: one batch in flight per stream it picks, on
        a stream pool (``stream_pool``) when that is more than one."""
        import time

        if self.throughput_streams <= 1:
            return super().images_per_second(x, seconds)
        pool = self._pool
        for request in pool:  # warm-up
            request.infer({0: x})
        rounds, start = 0, time.perf_counter()
        while rounds < 3 or time.perf_counter() - start < seconds:
            for request in pool:
                request.start_async({0: x})
            for request in pool:
                request.wait()
            rounds += 1
        return rounds * len(pool) * len(x) / (time.perf_counter() - start)

    def profile(self, x: np.ndarray, runs: int = 20) -> Profile:
        """OpenVINO's performance counters (PERF_COUNT) on the same model and settings, compiled once more: each
        executed node, its exec type (``brgconv_avx512_1x1_I8``: an INT8 1x1 conv) and its mean time."""
        compiled = self._core().compile_model(self.model, "CPU", {**self.config, "PERF_COUNT": True})
        request = compiled.create_infer_request()
        request.infer({0: x})  # warm-up
        totals: dict[tuple[str, str, str], float] = {}
        for _ in range(runs):
            request.infer({0: x})
            for p in request.profiling_info:
                if p.status == p.Status.EXECUTED:
                    key = (p.node_name, p.node_type, p.exec_type)
                    totals[key] = totals.get(key, 0.0) + p.real_time.total_seconds() * 1e3
        layers = tuple(LayerTime(name, op, kernel, precision_of(kernel), ms / runs)
                       for (name, op, kernel), ms in totals.items())
        return Profile(layers, runs, len(x), "OpenVINO performance counters (PERF_COUNT)")

"""What every runtime hands the jobs: a runner, ``runner(x) -> logits``, that also times itself.

A host runtime (ONNX Runtime, OpenVINO, PyTorch) is timed around the call with ``perf_counter``; a
device runtime (TensorRT) overrides :meth:`Runner.time_ms` to time on the device, without host copies.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LayerTime:
    """One executed layer, as the runtime's own profiler reports it."""

    name: str
    op: str  # the runtime's layer type (OpenVINO's node type, ONNX Runtime's op, TensorRT's layer type)
    kernel: str  # what ran it (OpenVINO's exec type, ONNX Runtime's provider, TensorRT's tactic)
    precision: str  # the precision it executed in: int8, bf16, fp16, fp32 (or "-" where the runtime does not say)
    ms: float  # mean time per inference


@dataclass(frozen=True)
class Profile:
    """Where one inference's time goes, per layer, averaged over ``runs`` inferences at batch ``batch``."""

    layers: tuple[LayerTime, ...]
    runs: int
    batch: int
    source: str  # which profiler measured it

    def by_type(self) -> list[dict]:
        """Time per (op type, precision), largest first, with its share of the total."""
        total = sum(layer.ms for layer in self.layers) or 1.0
        groups: dict[tuple[str, str], list[LayerTime]] = defaultdict(list)
        for layer in self.layers:
            groups[(layer.op, layer.precision)].append(layer)
        rows = [{"op": op, "precision": precision, "count": len(ls), "ms": sum(x.ms for x in ls),
                 "share": sum(x.ms for x in ls) / total} for (op, precision), ls in groups.items()]
        return sorted(rows, key=lambda r: r["ms"], reverse=True)

    def to_dict(self) -> dict:
        return {"source": self.source, "runs": self.runs, "batch": self.batch,
                "total_ms": sum(layer.ms for layer in self.layers), "by_type": self.by_type(),
                "layers": [asdict(layer) for layer in self.layers]}


def precision_of(text: str) -> str:
    """A kernel or type name's precision: ``brgconv_avx512_1x1_I8`` -> int8, ``jit_avx512_bf16`` -> bf16."""
    token = text.lower().replace("-", "_").split("_")[-1]
    return {"i8": "int8", "u8": "int8", "int8": "int8", "uint8": "int8", "bf16": "bf16", "f16": "fp16",
            "fp16": "fp16", "half": "fp16", "f32": "fp32", "fp32": "fp32", "float": "fp32"}.get(token, "-")


class Runner(ABC):
    """A compiled model at one batch size (or a dynamic one)."""

    @abstractmethod
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits for the float32 NCHW batch ``x``."""

    def prepare(self) -> "Runner":
        """Compile now what ``run_all`` needs beyond this runner (nothing here), so evaluation times only runs."""
        return self

    def run_all(self, batches: list[np.ndarray], done: Callable[[], None] = lambda: None) -> list[np.ndarray]:
        """Logits for each of ``batches``, run the way the throughput column runs them (one at a time here; a
        runtime with streams keeps one in flight per stream); ``done()`` after each batch."""
        outputs = []
        for x in batches:
            outputs.append(self(x))
            done()
        return outputs

    def time_ms(self, x: np.ndarray, iters: int, warmup: int) -> list[float]:
        """Milliseconds per call, after ``warmup`` untimed calls."""
        for _ in range(warmup):
            self(x)
        samples = []
        for _ in range(iters):
            start = time.perf_counter()
            self(x)
            samples.append((time.perf_counter() - start) * 1e3)
        return samples

    def profile(self, x: np.ndarray, runs: int = 20) -> Profile | None:
        """Per-layer time and executed precision from the runtime's own profiler (None: it has none)."""
        return None

    def images_per_second(self, x: np.ndarray, seconds: float) -> float:
        """Throughput on batches like ``x`` for a wall-clock budget: the batch over the median call, one call in
        flight (a runtime with streams overrides it)."""
        samples = sorted(self.time_for(x, seconds))
        return len(x) / (samples[len(samples) // 2] / 1e3)

    def time_for(self, x: np.ndarray, seconds: float, min_iters: int = 3, max_iters: int = 100_000) -> list[float]:
        """Milliseconds per call for a wall-clock budget (as benchmark_app -t does), at least ``min_iters``."""
        samples: list[float] = []
        start = time.perf_counter()
        while len(samples) < min_iters or (time.perf_counter() - start < seconds and len(samples) < max_iters):
            samples += self.time_ms(x, 1, 0)
        return samples


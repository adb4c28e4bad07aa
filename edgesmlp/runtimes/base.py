"""What every runtime hands the jobs: a runner, ``runner(x) -> logits``, that also times itself.

A host runtime (ONNX Runtime, OpenVINO, PyTorch) is timed around the call with ``perf_counter``; a
device runtime (TensorRT) overrides :meth:`Runner.time_ms` to time on the device, without host copies.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np


class Runner(ABC):
    """A compiled model at one batch size (or a dynamic one)."""

    @abstractmethod
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits for the float32 NCHW batch ``x``."""

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

    def time_for(self, x: np.ndarray, seconds: float, min_iters: int = 3, max_iters: int = 100_000) -> list[float]:
        """Milliseconds per call for a wall-clock budget (as benchmark_app -t does), at least ``min_iters``."""
        samples: list[float] = []
        start = time.perf_counter()
        while len(samples) < min_iters or (time.perf_counter() - start < seconds and len(samples) < max_iters):
            samples += self.time_ms(x, 1, 0)
        return samples


class FunctionRunner(Runner):
    """Any ``f(x) -> logits`` as a runner (PyTorch eager, tests)."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]):
        self.fn = fn

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(x))

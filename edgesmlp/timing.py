"""Latency measurement: warm-up, perf_counter, interleaved rounds, medians and paired ratios.

The machines we measure on are shared and noisy, so candidates are timed in interleaved rounds
(A B C, C A B, ...) and compared by the median of per-round ratios rather than by one long run each.
"""

from __future__ import annotations

import functools
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass


UNSTABLE_IQR = 0.25


@dataclass(frozen=True)
class Timing:
    samples_ms: tuple[float, ...]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def p90(self) -> float:
        return self.quantile(0.9)

    @property
    def iqr(self) -> float:
        """p75 - p25: how much the middle half of the samples spread, the measurement's noise."""
        return self.quantile(0.75) - self.quantile(0.25)

    @property
    def unstable(self) -> bool:
        """Too noisy to compare: the middle half spreads over a quarter of the median."""
        return self.iqr > UNSTABLE_IQR * self.p50


def time_calls(fn: Callable[[], object], iters: int) -> list[float]:
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def interleaved(
    candidates: dict[str, Callable[[], object]], rounds: int = 5, iters: int = 10, warmup: int = 3, seed: int = 0
) -> tuple[dict[str, Timing], list[dict[str, float]]]:
    """Time every candidate in ``rounds`` shuffled rounds; return timings and per-round medians."""
    for fn in candidates.values():
        time_calls(fn, warmup)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    per_round: list[dict[str, float]] = []
    names = list(candidates)
    for _ in range(rounds):
        rng.shuffle(names)
        medians = {}
        for name in names:
            got = time_calls(candidates[name], iters)
            samples[name] += got
            medians[name] = statistics.median(got)
        per_round.append(medians)
    return {name: Timing(tuple(s)) for name, s in samples.items()}, per_round


def paired_ratio(per_round: list[dict[str, float]], slow: str, fast: str) -> float:
    """Median over rounds of slow/fast: > 1 means ``fast`` is faster."""
    return statistics.median(r[slow] / r[fast] for r in per_round)


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, ISA flags) from /proc/cpuinfo, read once per process."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())  # the first core's values
    except OSError:
        pass
    return fields.get("model name") or platform.processor() or platform.machine(), frozenset(fields.get("flags", "").split())


def cpu_flags() -> frozenset[str]:
    return _cpuinfo()[1]


VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo names of the int8 dot-product instructions


def is_x86() -> bool:
    return platform.machine().lower() in {"x86_64", "amd64", "i386", "i686"}


def x86_without_vnni() -> bool:
    """An x86 CPU with no int8 dot-product instructions (AVX2, AVX-512 before Cascade Lake): its int8 kernels
    (oneDNN's in OpenVINO, MLAS in ONNX Runtime) multiply u8 x s8 with VPMADDUBSW, whose int16 sum of two products
    saturates on 8-bit weights (2 x 255 x 127 > 32767). Where the flags cannot be read, x86 is taken to be one."""
    return is_x86() and not any(flag in cpu_flags() for flag in VNNI_FLAGS)


def weight_bits_for_this_cpu() -> int:
    """The signed weight width both CPU runtimes' integer kernels compute exactly here: 7 on x86 without VNNI
    (2 x 255 x 63 cannot saturate), else 8. On x86 without VNNI, 8-bit weights cost the bundled model's ONNX Runtime
    INT8 FP32's class on some images and OpenVINO's INT8 much of its logit cosine; 7-bit ones run as fast and keep
    both (benchmarks/results/onnxruntime_int8_avx2.md, openvino_int8_weight_bits_avx2.md)."""
    return 7 if x86_without_vnni() else 8


def machine_info() -> dict:
    model, flags = _cpuinfo()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return {"cpu": model, "cores": os.cpu_count(), "isa": isa, "python": platform.python_version(),
            "os": platform.platform()}


def library_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


class Phases:
    """Seconds per phase of a job (``with phases("evaluate"): ...``), for report.json's ``seconds``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def to_dict(self, **extra: dict) -> dict:
        return {**{k: round(v, 3) for k, v in self.seconds.items()}, **extra,
                "total": round(time.perf_counter() - self.started, 3)}

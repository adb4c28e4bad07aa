"""Accuracy and latency of any runner ``f(x: ndarray) -> logits``, the same way for every target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgesmlp.progress import progress_bar
from edgesmlp.timing import Timing, time_calls

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Accuracy:
    top1: float | None  # percent; None without labels
    top5: float | None
    agreement: float | None  # percent of top-1 predictions equal to the reference's
    cosine: float | None  # mean cosine similarity of logits with the reference's
    count: int


def predict(run: Runner, x: np.ndarray, batch: int, description: str = "Evaluating") -> np.ndarray:
    """Logits for all of ``x`` through a runner compiled for ``batch``; the last batch is padded."""
    outputs = []
    with progress_bar(description, total=len(x)) as advance:
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
            outputs.append(run(np.ascontiguousarray(chunk))[:n])
            for _ in range(n):
                advance()
    return np.concatenate(outputs)


def topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    best = np.argsort(-logits, axis=1)[:, :k]
    return float((best == labels[:, None]).any(axis=1).mean() * 100.0)


def score(logits: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None = None) -> Accuracy:
    agreement = cosine = None
    if reference is not None:
        agreement = float((logits.argmax(1) == reference.argmax(1)).mean() * 100.0)
        norms = np.linalg.norm(logits, axis=1) * np.linalg.norm(reference, axis=1)
        cosine = float(np.mean((logits * reference).sum(1) / np.maximum(norms, 1e-12)))
    if labels is None:
        return Accuracy(None, None, agreement, cosine, len(logits))
    return Accuracy(topk(logits, labels, 1), topk(logits, labels, 5), agreement, cosine, len(logits))


@dataclass(frozen=True)
class Latency:
    batch1: Timing
    throughput_batch: int
    throughput_ips: float


def measure_latency(run1: Runner, run_n: Runner, sample: np.ndarray, batch: int, iters: int = 50,
                    warmup: int = 5) -> Latency:
    """p50/p90 at batch 1 and images per second at ``batch``, after warm-up."""
    one = np.ascontiguousarray(sample[:1])
    many = np.ascontiguousarray(np.resize(sample, (batch, *sample.shape[1:])))
    time_calls(lambda: run1(one), warmup)
    single = Timing(tuple(time_calls(lambda: run1(one), iters)))
    time_calls(lambda: run_n(many), max(1, warmup // 2))
    batched = Timing(tuple(time_calls(lambda: run_n(many), max(5, iters // batch))))
    return Latency(single, batch, batch / (batched.p50 / 1e3))

"""Accuracy and latency of runners, the same way for every target; one report row per variant."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from edgesmlp.jobs.report import Result
from edgesmlp.progress import progress_bar
from edgesmlp.runtimes.base import Runner
from edgesmlp.targets.base import RunSettings, Variant
from edgesmlp.timing import Timing


@dataclass(frozen=True)
class Accuracy:
    top1: float | None  # percent; None without labels
    top5: float | None
    agreement: float | None  # percent of top-1 predictions equal to the reference's
    cosine: float | None  # mean cosine similarity of logits with the reference's
    count: int


@dataclass
class _Tally:
    """Running sums behind an :class:`Accuracy`, so batches can be scored as they stream past."""

    n: int = 0
    correct1: int = 0
    correct5: int = 0
    agree: int = 0
    cosine: float = 0.0

    def add(self, logits: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> "_Tally":
        self.n += len(logits)
        self.agree += int((logits.argmax(1) == reference.argmax(1)).sum())
        norms = np.maximum(np.linalg.norm(logits, axis=1) * np.linalg.norm(reference, axis=1), 1e-12)
        self.cosine += float(((logits * reference).sum(1) / norms).sum())
        if labels is not None:
            top = np.argsort(-logits, axis=1)[:, : min(5, logits.shape[1])]
            self.correct1 += int((top[:, 0] == labels).sum())
            self.correct5 += int((top == labels[:, None]).any(axis=1).sum())
        return self

    def accuracy(self, labelled: bool) -> Accuracy:
        return Accuracy(
            top1=100.0 * self.correct1 / self.n if labelled else None,
            top5=100.0 * self.correct5 / self.n if labelled else None,
            agreement=100.0 * self.agree / self.n,
            cosine=self.cosine / self.n,
            count=self.n,
        )


def _padded(x: np.ndarray, batch: int) -> np.ndarray:
    """``x`` filled up to ``batch`` rows (repeating the last), for runners compiled at a static batch."""
    if len(x) < batch:
        x = np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])
    return np.ascontiguousarray(x)


def predict(run: Runner, x: np.ndarray, batch: int, description: str = "Evaluating") -> np.ndarray:
    """Logits for all of ``x`` through a runner compiled for ``batch``; the last batch is padded."""
    outputs = []
    with progress_bar(description, total=len(x)) as advance:
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            outputs.append(run(_padded(chunk, batch))[: len(chunk)])
            for _ in range(len(chunk)):
                advance()
    return np.concatenate(outputs)


def score(logits: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> Accuracy:
    """Accuracy of in-memory logits (agreement and cosine against ``reference``)."""
    return _Tally().add(logits, reference, labels).accuracy(labels is not None)


@dataclass(frozen=True)
class Latency:
    batch1: Timing
    throughput_batch: int
    throughput_ips: float


def measure_latency(run1: Runner, run_n: Runner, sample: np.ndarray, batch: int, iters: int = 50,
                    warmup: int = 5) -> Latency:
    """p50/p90 at batch 1 and images per second at ``batch``, after warm-up; each runner times itself."""
    one = np.ascontiguousarray(sample[:1])
    many = np.ascontiguousarray(np.resize(sample, (batch, *sample.shape[1:])))
    single = Timing(tuple(run1.time_ms(one, iters, warmup)))
    batched = Timing(tuple(run_n.time_ms(many, max(5, iters // batch), max(1, warmup // 2))))
    return Latency(single, batch, batch / (batched.p50 / 1e3))


def stream_batches(images, preprocess, batch: int, skipped: list) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Decode and preprocess ``images`` (an ImageSet) ``batch`` at a time; unreadable files go to ``skipped``."""
    from edgesmlp.calibration.sources import decode

    xs, ys = [], []
    for item in images.items:
        x = decode(item, preprocess, skipped)
        if x is None:
            continue
        xs.append(x)
        ys.append(item.label)
        if len(xs) == batch:
            yield np.stack(xs), (np.array(ys) if None not in ys else None)
            xs, ys = [], []
    if xs:
        yield np.stack(xs), (np.array(ys) if None not in ys else None)


@dataclass
class Evaluation:
    accuracy: dict[str, Accuracy]
    labelled: bool
    images: int
    skipped: list = field(default_factory=list)
    sample: np.ndarray | None = None  # the first batch, for latency runs
    failures: dict = field(default_factory=dict)  # runner name -> why it stopped


def evaluate_runners(runners: dict[str, Runner], images, preprocess, batch: int) -> Evaluation:
    """Stream the images once through every runner (the first is the reference for agreement/cosine).

    Memory stays at one batch, so a 50,000-image validation set costs what a 16-image one does.
    """
    from edgesmlp.errors import DataError

    tallies = {name: _Tally() for name in runners}
    failures: dict[str, str] = {}
    skipped: list = []
    labelled, sample, reference_name = True, None, next(iter(runners))
    with progress_bar(f"Evaluating {', '.join(runners)}", total=len(images.items)) as advance:
        for x, y in stream_batches(images, preprocess, batch, skipped):
            sample = x if sample is None else sample
            labelled = labelled and y is not None
            n, padded = len(x), _padded(x, batch)
            outputs = {}
            for name, run in runners.items():
                if name in failures:
                    continue
                try:
                    outputs[name] = np.asarray(run(padded))[:n]
                except Exception as e:  # noqa: BLE001 - one runtime crashing must not stop the others
                    if name == reference_name:
                        raise
                    failures[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ref = outputs[reference_name]
            for name, logits in outputs.items():
                tallies[name].add(logits, ref, y)
            for _ in range(n):
                advance()
    count = tallies[reference_name].n
    if count == 0:
        example = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"{images.origin}: none of its {len(images.items)} images could be read{example}")
    accuracy = {name: None if name in failures else t.accuracy(labelled) for name, t in tallies.items()}
    return Evaluation(accuracy, labelled, count, skipped, sample, failures)


def measure_variant(target: str, v: Variant, acc: Accuracy, sample: np.ndarray, run: RunSettings, log) -> Result:
    """One report row: the variant's accuracy, then its latency at batch 1 and throughput at the run's batch."""
    log(f"timing {target} {v.precision.upper()} ({v.runtime})")
    batch = run.throughput_batch
    latency = measure_latency(v.make_runner(1), v.make_runner(batch), sample, batch, run.latency_iters)
    return Result(
        target=target, precision=v.precision, runtime=v.runtime, note=v.note, top1=acc.top1, top5=acc.top5,
        agreement=acc.agreement, cosine=acc.cosine, latency_ms_p50=latency.batch1.p50,
        latency_ms_p90=latency.batch1.p90, throughput_ips=latency.throughput_ips,
        throughput_batch=latency.throughput_batch, size_mb=v.size_mb, quantize_seconds=v.quantize_seconds,
        images=acc.count, latency_samples_ms=[round(t, 4) for t in latency.batch1.samples_ms],
    )

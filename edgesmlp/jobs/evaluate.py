"""Accuracy and latency of runners, the same way for every target; one report row per variant."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from edgesmlp.errors import reason
from edgesmlp.jobs.ranks import shard
from edgesmlp.jobs.report import Result
from edgesmlp.precision import is_float
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
    seconds: dict = field(default_factory=dict)  # runner name -> seconds inside it; "images": decoding them


# Images decoded at a time. Every runner runs all of them before the next takes its turn: a runtime switched in
# for every batch pays its threads' wake-up and a cold cache each time, which on a small model costs more than
# the batch itself (benchmarks/results/evaluation_overhead.md). 64 MB holds 111 images at 224, 5,461 at 32.
CHUNK_BYTES = 64 << 20


def _chunks(batches: Iterator) -> Iterator[tuple[list, float]]:
    """``batches`` grouped into lists of about ``CHUNK_BYTES``, each with the seconds spent pulling (decoding) it."""
    chunk, size, started = [], 0, time.perf_counter()
    for x, y in batches:
        chunk.append((x, y))
        size += x.nbytes
        if size >= CHUNK_BYTES:
            yield chunk, time.perf_counter() - started
            chunk, size, started = [], 0, time.perf_counter()
    if chunk:
        yield chunk, time.perf_counter() - started


def evaluate_runners(runners: dict[str, Runner], images, preprocess, batch: int) -> Evaluation:
    """Stream the images once through every runner (the first is the reference for agreement/cosine).

    Memory stays at one chunk of images (``CHUNK_BYTES``), so a 50,000-image validation set costs what a
    500-image one does.
    """
    from edgesmlp.calibration.sources import ImageSet
    from edgesmlp.errors import DataError
    from edgesmlp.jobs.ranks import world

    rank, size = world()
    everything = images
    if size > 1:  # under torchrun: this rank's share; the tallies are summed below
        images = ImageSet(shard(images.items, rank, size), images.origin, images.kind, images.classes)
    tallies = {name: _Tally() for name in runners}
    seconds = dict.fromkeys(["images", *runners], 0.0)
    failures: dict[str, str] = {}
    skipped: list = []
    labelled, sample, reference_name = True, None, next(iter(runners))
    runs = -(-len(images.items) // batch) * len(runners)  # one step a batch a row: a chunk can take minutes
    with progress_bar(f"Evaluating {len(images.items)} images on {', '.join(runners)}", total=runs) as advance:
        for chunk, decoding in _chunks(stream_batches(images, preprocess, batch, skipped)):
            seconds["images"] += decoding
            sample = chunk[0][0] if sample is None else sample
            labelled = labelled and all(y is not None for _, y in chunk)
            references = None
            for name, run in runners.items():
                if name in failures:
                    continue
                try:
                    start = time.perf_counter()
                    got = run.run_all([_padded(x, batch) for x, _ in chunk], lambda n=name: advance(n))
                    outputs = [np.asarray(o)[: len(x)] for o, (x, _) in zip(got, chunk)]
                    seconds[name] += time.perf_counter() - start
                except Exception as e:  # noqa: BLE001 - one runtime crashing must not stop the others
                    if name == reference_name:
                        raise
                    failures[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    continue
                references = outputs if references is None else references
                for logits, ref, (_, y) in zip(outputs, references, chunk):
                    tallies[name].add(logits, ref, y)
    if size > 1:
        labelled, failures, skipped = _combine(tallies, labelled, failures, skipped)
    count = tallies[reference_name].n
    if count == 0:
        example = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"{everything.origin}: none of its {len(everything.items)} images could be read{example}")
    accuracy = {name: None if name in failures else t.accuracy(labelled) for name, t in tallies.items()}
    return Evaluation(accuracy, labelled, count, skipped, sample, failures,
                      {name: round(value, 3) for name, value in seconds.items()})


def _combine(tallies: dict[str, _Tally], labelled: bool, failures: dict, skipped: list):
    """Every rank's tallies summed into ``tallies`` (in place), and the ranks' failures and skipped images joined."""
    from edgesmlp.jobs.ranks import gather, sum_over_ranks

    fields = ("n", "correct1", "correct5", "agree", "cosine")
    summed = sum_over_ranks([float(getattr(t, f)) for t in tallies.values() for f in fields] + [float(not labelled)])
    for i, tally in enumerate(tallies.values()):
        for j, name in enumerate(fields):
            value = summed[i * len(fields) + j]
            setattr(tally, name, value if name == "cosine" else int(round(value)))
    everyone = gather((failures, skipped))
    return (summed[-1] == 0, {k: v for fails, _ in everyone for k, v in fails.items()},
            [s for _, skips in everyone for s in skips])


ROUNDS = 5  # interleaved rounds per target: rows of one target are timed turn by turn, so drift hits all alike


def measure_target(target: str, variants: list[Variant], accuracy: dict, sample: np.ndarray, run: RunSettings,
                   log, batched: dict[str, Runner]) -> tuple[list[Result], dict[str, str]]:
    """Rows for one target's variants: accuracy, batch-1 latency in interleaved rounds, throughput.

    ``batched`` holds the runners evaluation ran at ``run.throughput_batch`` (by precision): the throughput column
    times those same compiled models, so a row is compiled once at batch 1 and once at that batch.

    Each variant is timed for ``run.latency_seconds`` at batch 1, split over ``ROUNDS`` rounds that visit the
    variants in turn, so a slower moment of a shared machine lands on every row; the speedup of a row over
    its target's reference row (the CPU's default precision where the target has one, else its float row) is
    the median over rounds of their per-round ratio. Returns the rows and, for
    variants whose runtime failed while timed, the reason.
    """
    one = np.ascontiguousarray(sample[:1])
    many = np.ascontiguousarray(np.resize(sample, (run.throughput_batch, *sample.shape[1:])))
    log(f"timing {target}: {', '.join(v.precision for v in variants)} ({run.latency_seconds:g} s each)")
    runners, failures = {}, {}
    for v in variants:
        try:
            runners[v.precision] = v.make_runner(1)
            runners[v.precision].time_ms(one, 0, 5)  # warm-up
        except Exception as e:  # noqa: BLE001 - one runtime failing fails its row only
            failures[v.precision] = reason(e)
    samples: dict[str, list[float]] = {k: [] for k in runners}
    rounds: list[dict[str, float]] = []
    per_round_min = max(1, -(-run.latency_iters // ROUNDS))
    for i in range(ROUNDS):
        keys = [k for k in runners if k not in failures]
        medians = {}
        for k in keys[i % max(1, len(keys)):] + keys[: i % max(1, len(keys))]:
            try:
                got = runners[k].time_for(one, run.latency_seconds / ROUNDS, per_round_min)
            except Exception as e:  # noqa: BLE001
                failures[k] = reason(e)
                continue
            samples[k] += got
            medians[k] = statistics.median(got)
        rounds.append(medians)
    references = [v.precision for v in variants if v.speed_reference and v.precision not in failures]
    float_key = references[0] if references else next(
        (k for k in samples if is_float(k) and k not in failures), None)
    results = []
    for v in variants:
        if v.precision in failures:
            continue
        timing = Timing(tuple(samples[v.precision]))
        try:
            throughput = _throughput(batched[v.precision], many, run)
        except Exception as e:  # noqa: BLE001
            failures[v.precision] = reason(e)
            continue
        acc = accuracy[v.precision]
        ratios = [r[float_key] / r[v.precision] for r in rounds if float_key in r and v.precision in r]
        results.append(Result(
            target=target, precision=v.precision, runtime=v.runtime, note=v.note, top1=acc.top1, top5=acc.top5,
            agreement=acc.agreement, cosine=acc.cosine, latency_ms_p50=timing.p50, latency_ms_p90=timing.p90,
            latency_ms_iqr=timing.iqr, latency_unstable=timing.unstable,
            speedup=statistics.median(ratios) if ratios else None, throughput_ips=throughput,
            throughput_batch=run.throughput_batch, size_mb=v.size_mb, quantize_seconds=v.quantize_seconds,
            images=acc.count, latency_samples_ms=[round(t, 4) for t in timing.samples_ms],
            kept_float=list(v.kept_float) if v.kept_float is not None else None,
            quantized_layers=v.quantized_layers, compare_only=v.compare_only or None,
        ))
    return results, failures


def _throughput(runner: Runner, many: np.ndarray, run: RunSettings) -> float:
    runner.run_all([many, many])  # warm-up, the way the column runs (on OpenVINO's stream pool, not its own stream)
    return runner.images_per_second(many, run.latency_seconds / 2)



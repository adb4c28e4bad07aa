"""Mixed precision to an accuracy budget: the fewest, most sensitive layers left in float until INT8 meets it.

The user says what accuracy they need (``--max-drop`` top-1 points, ``--min-agreement`` % top-1 agreement
with FP32); ``choose`` finds which layers stay in float, on images of the calibration source only (the
search images), so that the validation images that the report quotes never steer the choice:

1. full INT8 is scored; if it meets the budget, nothing is kept in float. Agreement is held as the
   agreement INT8's margin noise predicts (``sensitivity.expected_agreement``; ``Point.assured``): a few
   hundred images flip too rarely to be counted on;
2. every quantized layer is ranked by the logit KL divergence from FP32 of the model with only that layer
   quantized (``sensitivity.per_layer``; a smooth signal: top-1 flips on a few hundred images cannot rank
   50 layers);
3. the top-k layers of that ranking are left in float for k = 1, 2, 4, ... up to ``max_float`` of the
   layers, then bisected down to the smallest k that meets the budget. Every k tried is a point of the
   trade-off curve, which the report shows, and which the error shows when no k within the cap meets it.

Without labels on the calibration images a top-1 drop cannot be measured; agreement bounds it (an image
that keeps FP32's top class keeps its correctness), so ``--max-drop D`` then asks agreement >= 100 - D.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from enum import Enum

import numpy as np

from edgesmlp.errors import BudgetError, ConfigError
from edgesmlp.quantize.partial import PartialINT8
from edgesmlp.quantize.sensitivity import divergence, per_layer

RANK_IMAGES = 128  # images the per-layer ranking is scored on (the KL is smooth; the budget uses them all)


class Fallback(str, Enum):
    auto = "auto"  # keep the most sensitive layers in float until the budget is met
    off = "off"  # the budget is only a floor: fail if full INT8 misses it


@dataclass(frozen=True)
class Budget:
    max_drop: float | None = None  # top-1 points INT8 may lose against FP32 (needs labels; else agreement bounds it)
    min_agreement: float | None = None  # % of images whose top-1 class INT8 keeps
    fallback: Fallback = Fallback.auto
    max_float: float = 0.2  # at most this share of the quantized layers may be left in float

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "fallback", Fallback(self.fallback))
        except ValueError:
            raise ConfigError(f"--fallback {self.fallback!r} unknown: use auto or off") from None
        if self.max_drop is not None and not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise ConfigError(f"--max-drop must be a finite number of 0 or more, got {self.max_drop}")
        if self.min_agreement is not None and not 0 < self.min_agreement <= 100:
            raise ConfigError(f"--min-agreement is a percentage in (0, 100], got {self.min_agreement}")
        if not 0 < self.max_float <= 1:
            raise ConfigError(f"--max-float is a share of the layers in (0, 1], got {self.max_float}")

    @property
    def searches(self) -> bool:
        return self.fallback is Fallback.auto and (self.max_drop is not None or self.min_agreement is not None)

    def describe(self) -> str:
        asked = ([f"top-1 drop <= {self.max_drop:g} points"] if self.max_drop is not None else []) + (
            [f"agreement >= {self.min_agreement:g}%"] if self.min_agreement is not None else [])
        return " and ".join(asked) or "no budget"

    def to_dict(self) -> dict:
        return {**asdict(self), "fallback": self.fallback.value}


@dataclass(frozen=True)
class Point:
    """INT8 with the ``kept`` most sensitive layers in float, scored on the search images."""

    kept: int
    agreement: float  # counted on the search images
    expected: float  # predicted by INT8's margin noise (sensitivity.expected_agreement)
    kl: float
    drop: float | None  # top-1 points below FP32, when the images carry labels
    images: int = 0

    @property
    def assured(self) -> float:
        """The agreement the budget is held to: the predicted one, which varies half as much between samples as
        counting does, unless more images flipped than the prediction makes plausible (a Poisson tail under 5%),
        which says the noise model misses something here (a heavy tail of errors): then the count."""
        flips = round((100.0 - self.agreement) / 100 * self.images)
        rate = (100.0 - self.expected) / 100 * self.images
        below = sum(math.exp(-rate) * rate**i / math.factorial(i) for i in range(flips))  # P(X < flips)
        return self.agreement if flips > 0 and 1 - below < 0.05 else self.expected

    def line(self) -> str:
        drop = f", drop {self.drop:.2f}" if self.drop is not None else ""
        return f"{self.kept} in float: agreement {self.agreement:.2f}% (expected {self.expected:.2f}%){drop}"


@dataclass(frozen=True)
class Choice:
    kept_float: tuple[str, ...]  # node names, most sensitive first
    kept_modules: tuple[str, ...]  # the deploy-form modules they came from
    layers: int  # quantized layers before any was kept in float
    reached: Point  # on the search images
    curve: tuple[Point, ...]  # every k tried, by k
    images: int  # search images (the calibration images)
    ranked_on: int  # images the ranking was scored on
    seconds: float
    ranking: tuple[str, ...] = field(default_factory=tuple)  # every layer, most sensitive first

    def to_dict(self) -> dict:
        d = asdict(self)
        d["curve"] = [asdict(p) for p in self.curve]
        return d


def _point(kept: int, reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None) -> Point:
    d = divergence(reference, logits)
    drop = None
    if labels is not None:
        drop = float((np.mean(reference.argmax(1) == labels) - np.mean(logits.argmax(1) == labels)) * 100)
    return Point(kept, d.agreement, d.expected_agreement, d.kl, drop, len(reference))


def meets(budget: Budget, point: Point) -> bool:
    """An agreement budget holds ``point.assured``; a drop budget holds the counted drop (labels), or without
    labels the assured agreement that bounds it."""
    ok = budget.min_agreement is None or point.assured >= budget.min_agreement - 1e-9
    if budget.max_drop is not None:
        ok &= (point.drop <= budget.max_drop + 1e-9 if point.drop is not None
               else point.assured >= 100 - budget.max_drop - 1e-9)
    return ok


def choose(graph: PartialINT8, x: np.ndarray, labels: np.ndarray | None, budget: Budget, log=print,
           progress=None) -> Choice:
    """The fewest, most sensitive layers of ``graph`` to leave in float so that it meets ``budget`` on ``x`` (the
    search images, from the calibration source). Raises BudgetError, with the trade-off curve, when
    ``budget.max_float`` of them is not enough. ``progress(total)``, if given, is a context manager yielding a
    callback called after each layer is ranked (``edgesmlp.progress.progress_bar``)."""
    start = time.perf_counter()
    reference = graph.reference(x)
    full = _point(0, reference, graph.logits(x), labels)
    layers = graph.layers
    if meets(budget, full):
        return Choice((), (), len(layers), full, (full,), len(x), 0, time.perf_counter() - start)
    log(f"full INT8 misses the budget ({budget.describe()}) on {len(x)} search images: {full.line()}; "
        f"ranking {len(layers)} layers")
    ranked_on = min(len(x), RANK_IMAGES)
    with (progress(len(layers)) if progress is not None else contextlib.nullcontext()) as tick:
        _, ranking = per_layer(graph, x[:ranked_on], tick, reference[:ranked_on], in_float=False)
    order = [r.layer for r in ranking]
    modules = {r.layer: r.module for r in ranking}
    cap = max(1, int(budget.max_float * len(layers)))
    points = {0: full}

    def at(k: int) -> Point:
        if k not in points:
            points[k] = _point(k, reference, graph.logits(x, frozenset(order[:k])), labels)
        return points[k]

    k = 1
    while not meets(budget, at(min(k, cap))) and k < cap:
        k *= 2
    k = min(k, cap)
    curve = lambda: tuple(points[i] for i in sorted(points))  # noqa: E731
    if not meets(budget, at(k)):
        raise BudgetError(
            f"the budget ({budget.describe()}) is out of reach with up to {cap} of {len(layers)} layers "
            f"({budget.max_float:.0%}) in float, on {len(x)} search images: "
            + "; ".join(p.line() for p in curve())
            + ". Train for it (--method qat), allow more float layers (--max-float), or relax the budget")
    low, high = k // 2, k  # low misses (or is 0), high meets
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if meets(budget, at(mid)) else (mid, high)
    kept = tuple(order[:high])
    return Choice(kept, tuple(modules[n] for n in kept), len(layers), at(high), curve(), len(x), ranked_on,
                  time.perf_counter() - start, tuple(order))

"""Mixed precision to an accuracy budget: the fewest, most sensitive layers left in float until INT8 meets it.

The user says what accuracy they need (``--max-drop`` top-1 points, ``--min-agreement`` % top-1 agreement
with FP32); ``choose`` finds which layers stay in float, on the search images (``--search``, else images of the
calibration source the calibration sample does not hold), so that the validation images that the report quotes
never steer the choice. "Met" means met with confidence, on two counts at once:

- the count: the one-sided 95% Wilson lower bound on the agreement counted on the search images (and, with
  labels, the upper bound on the share of images INT8 breaks, which bounds the drop) clears the ask. So an ask
  needs a number of images before it can be certified at all (``images_needed``: 99.4% needs 448, 99.9% needs
  2,704), and a job asked for more than its search images can certify is refused before any work;
- the estimate: the agreement INT8's margin noise predicts (``sensitivity.expected_agreement``;
  ``Point.assured``), smooth where a few hundred images flip too rarely to be counted on, clears it too.

When the search images are the calibration images themselves (a source no larger than the calibration sample),
INT8's ranges were fitted to them and they flatter it: the estimate must then leave half the allowance unused
(``overlap``). Steps:

1. full INT8 is scored; if it meets the budget, nothing is kept in float;
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
from edgesmlp.quantization.partial import PartialINT8
from edgesmlp.quantization.sensitivity import divergence, per_layer

CONFIDENCE = 0.95  # one-sided: the budget holds with this probability on images like the search images
Z = 1.6448536269514722  # the standard normal quantile of CONFIDENCE
FIRST_ORDER_MACS = 100_000_000  # from this size on, a target may rank layers to first order (quantize.first_order)
RANK_IMAGES = 128  # images the per-layer ranking is scored on (the KL is smooth; the budget uses them all)


class Fallback(str, Enum):
    auto = "auto"  # keep the most sensitive layers in float until the budget is met
    off = "off"  # the budget is only a floor: fail if full INT8 misses it


class Ranking(str, Enum):
    auto = "auto"  # first order from FIRST_ORDER_MACS on, where the target can; exact below
    exact = "exact"  # the model run once per layer with only that layer INT8 (sensitivity.per_layer)
    first_order = "first-order"  # one forward and one backward pass (quantization.first_order)


DEFAULT_MAX_DROP = 1.0  # top-1 points: the one default budget of quantize, bench, check and the report pages


def wilson_lower(successes: int, n: int, z: float = Z) -> float:
    """The Wilson score lower confidence bound on a proportion (``z`` = 1.645: one-sided 95%)."""
    if n <= 0:
        return 0.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def wilson_upper(successes: int, n: int, z: float = Z) -> float:
    return 1.0 - wilson_lower(n - successes, n, z)


def images_needed(agreement: float, z: float = Z) -> float:
    """The n at which n images of n agreeing first certify ``agreement`` (a fraction): n / (n + z^2) >= a."""
    return math.inf if agreement >= 1 else max(0.0, z * z * agreement / (1 - agreement))


@dataclass(frozen=True)
class Budget:
    max_drop: float | None = None  # top-1 points INT8 may lose against FP32 (needs labels; else agreement bounds it)
    min_agreement: float | None = None  # % of images whose top-1 class INT8 keeps
    fallback: Fallback = Fallback.auto
    max_float: float = 0.2  # at most this share of the quantized layers may be left in float
    ranking: Ranking = Ranking.auto  # how the search orders the layers

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "fallback", Fallback(self.fallback))
        except ValueError:
            raise ConfigError(f"--fallback {self.fallback!r} unknown: use auto or off") from None
        try:
            object.__setattr__(self, "ranking", Ranking(self.ranking))
        except ValueError:
            raise ConfigError(f"--ranking {self.ranking!r} unknown: use auto, exact or first-order") from None
        if self.max_drop is not None and not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise ConfigError(f"--max-drop must be a finite number of 0 or more, got {self.max_drop}")
        if self.min_agreement is not None and not 0 < self.min_agreement <= 100:
            raise ConfigError(f"--min-agreement is a percentage in (0, 100], got {self.min_agreement}")
        if not 0 < self.max_float <= 1:
            raise ConfigError(f"--max-float is a share of the layers in (0, 1], got {self.max_float}")

    @property
    def searches(self) -> bool:
        return self.fallback is Fallback.auto and (self.max_drop is not None or self.min_agreement is not None)

    @property
    def default(self) -> bool:
        """Nobody asked for this budget: the default drop alone (a default too few search images cannot certify
        is decided on the estimate, and the report says it was not certified; an ask of the user's own is
        refused)."""
        return self.min_agreement is None and self.max_drop == DEFAULT_MAX_DROP

    def agreement_asks(self, labelled: bool) -> list[float]:
        """The agreement levels (%) the budget asks: --min-agreement, and without labels 100 - --max-drop."""
        asks = [self.min_agreement] if self.min_agreement is not None else []
        return asks + ([100.0 - self.max_drop] if self.max_drop is not None and not labelled else [])

    def images_needed(self, labelled: bool) -> float:
        """The fewest search images on which the budget can be certified at all (no image flipped or broken);
        ``math.inf`` for 100% agreement or a zero drop."""
        needed = [images_needed(ask / 100) for ask in self.agreement_asks(labelled)]
        if self.max_drop is not None and labelled:  # no image broken: the same count as agreement 100 - drop
            needed.append(images_needed(max(0.0, 1 - self.max_drop / 100)))
        return math.ceil(max(needed, default=0.0)) if all(map(math.isfinite, needed)) else math.inf

    def describe(self) -> str:
        asked = ([f"top-1 drop <= {self.max_drop:g} points"] if self.max_drop is not None else []) + (
            [f"agreement >= {self.min_agreement:g}%"] if self.min_agreement is not None else [])
        return " and ".join(asked) or "no budget"

    def to_dict(self) -> dict:
        return {**asdict(self), "fallback": self.fallback.value, "ranking": self.ranking.value}


@dataclass(frozen=True)
class Point:
    """INT8 with the ``kept`` most sensitive layers in float, scored on the search images."""

    kept: int
    agreement: float  # counted on the search images
    expected: float  # predicted by INT8's margin noise (sensitivity.expected_agreement)
    kl: float
    drop: float | None  # top-1 points below FP32, when the images carry labels
    images: int = 0
    flips: int = 0  # images whose top-1 class INT8 changed
    broken: int | None = None  # images FP32 classifies right and INT8 wrong (labels): they bound the drop

    @property
    def agreement_bound(self) -> float:
        """The one-sided 95% lower bound on agreement (%), from the count."""
        return 100 * wilson_lower(self.images - self.flips, self.images)

    @property
    def drop_bound(self) -> float | None:
        """The one-sided 95% upper bound on the drop (points): on the share of images INT8 breaks, ignoring
        those it fixes (the drop never exceeds it)."""
        return None if self.broken is None else 100 * wilson_upper(self.broken, self.images)

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
        drop = f", drop {self.drop:.2f} (at most {self.drop_bound:.2f})" if self.drop is not None else ""
        return (f"{self.kept} in float: agreement {self.agreement:.2f}% (expected {self.expected:.2f}%, "
                f"at least {self.agreement_bound:.2f}%){drop}")


@dataclass(frozen=True)
class Choice:
    kept_float: tuple[str, ...]  # node names, most sensitive first
    kept_modules: tuple[str, ...]  # the deploy-form modules they came from
    layers: int  # quantized layers before any was kept in float
    reached: Point  # on the search images
    curve: tuple[Point, ...]  # every k tried, by k
    images: int  # search images
    ranked_on: int  # images the ranking was scored on
    seconds: float
    ranking: tuple[str, ...] = field(default_factory=tuple)  # every layer, most sensitive first
    confidence: float = CONFIDENCE
    needed: float | None = 0  # search images the ask needs to be certified at all (None: no number will do)
    certified: bool = True  # False: too few search images for the (default) budget; decided on the estimate
    overlap: bool = False  # the search images were the calibration images: the estimate had to clear a margin
    origin: str = ""  # where the search images came from
    ranking_method: str = ""  # exact (the model once per layer) or first-order (quantize.first_order)
    rank_seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["curve"] = [asdict(p) for p in self.curve]
        d["agreement_bound"], d["drop_bound"] = self.reached.agreement_bound, self.reached.drop_bound
        return d


@dataclass(frozen=True)
class SearchImages:
    """The images the budget is met on, and what they are."""

    x: np.ndarray  # (M, C, H, W) preprocessed (an ``Images`` or a float32 array)
    labels: np.ndarray | None  # (M,) when they carry labels
    origin: str  # where they came from, for the report
    overlap: bool = False  # they are the calibration images (the source held no others)
    certify: bool = True  # False: too few to certify the default budget; the estimate decides


def score(kept: int, reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None) -> Point:
    d = divergence(reference, logits)
    drop = broken = None
    top, got = reference.argmax(1), logits.argmax(1)
    if labels is not None:
        drop = float((np.mean(top == labels) - np.mean(got == labels)) * 100)
        broken = int(np.sum((top == labels) & (got != labels)))
    return Point(kept, d.agreement, d.expected_agreement, d.kl, drop, len(reference), int(np.sum(top != got)), broken)


def meets(budget: Budget, point: Point, overlap: bool = False, certify: bool = True) -> bool:
    """Each agreement ask holds the estimate (``point.assured``) and, with ``certify``, the count's lower bound;
    a drop ask with labels holds the counted drop and, with ``certify``, its upper bound. ``overlap`` (search
    images that are the calibration images) makes the estimate and the count leave half the allowance unused."""
    ok = True
    for ask in budget.agreement_asks(point.drop is not None):
        margin = (100 - ask) / 2 if overlap else 0.0
        ok &= point.assured >= ask + margin - 1e-9 and (not certify or point.agreement_bound >= ask - 1e-9)
    if budget.max_drop is not None and point.drop is not None:
        margin = budget.max_drop / 2 if overlap else 0.0
        ok &= point.drop <= budget.max_drop - margin + 1e-9 and (not certify or point.drop_bound <= budget.max_drop + 1e-9)
    return ok


def choose(graph: PartialINT8, x: np.ndarray, labels: np.ndarray | None, budget: Budget, log=print,
           progress=None, overlap: bool = False, certify: bool = True, origin: str = "", rank=None) -> Choice:
    """The fewest, most sensitive layers of ``graph`` to leave in float so that it meets ``budget`` on ``x`` (the
    search images; ``overlap``: they are the calibration images; ``certify``: hold the confidence bounds too).
    Raises BudgetError, with the trade-off curve, when ``budget.max_float`` of them is not enough.
    ``progress(description, total)``, if given, is a context manager yielding a callback called after each step
    (``edgesmlp.progress.progress_bar``): once per layer ranked, and once per number of layers in float tried.
    ``rank(x)``, if given, orders the layers' names on images ``x`` instead of the exact ranking (one run of the
    model per layer), or returns None to leave it to the exact one (``first_order.rank_by_first_order``)."""
    start = time.perf_counter()
    progress = progress or (lambda description, total: contextlib.nullcontext(lambda status="": None))
    ok = lambda point: meets(budget, point, overlap, certify)  # noqa: E731
    with progress("Scoring full INT8", 2) as tick:
        reference = graph.reference(x)
        tick()
        full = score(0, reference, graph.logits(x), labels)
        tick()
    layers = graph.layers
    needed = budget.images_needed(labels is not None)
    done = dict(images=len(x), confidence=CONFIDENCE, needed=needed if math.isfinite(needed) else None,
                certified=certify, overlap=overlap, origin=origin)
    if ok(full):
        return Choice((), (), len(layers), full, (full,), ranked_on=0, seconds=time.perf_counter() - start, **done)
    log(f"full INT8 misses the budget ({budget.describe()}) on {len(x)} search images: {full.line()}; "
        f"ranking {len(layers)} layers")
    ranked_on = min(len(x), RANK_IMAGES)
    ranked = time.perf_counter()
    order = rank(x[:ranked_on]) if rank is not None else None
    method = "first-order" if order is not None else "exact"
    if order is None:
        with progress("Ranking layers", len(layers)) as tick:
            _, ranking = per_layer(graph, x[:ranked_on], tick, reference[:ranked_on], in_float=False)
        order = [r.layer for r in ranking]
    done.update(ranking_method=method, rank_seconds=time.perf_counter() - ranked)
    modules = {layer.name: layer.module for layer in layers}
    cap = max(1, int(budget.max_float * len(layers)))
    high, points = fewest(graph, x, labels, order, cap, ok, reference, full, progress)
    curve = tuple(points[i] for i in sorted(points))
    if high is None:
        raise BudgetError(
            f"the budget ({budget.describe()}) is out of reach with up to {cap} of {len(layers)} layers "
            f"({budget.max_float:.0%}) in float, on {len(x)} search images: "
            + "; ".join(p.line() for p in curve)
            + ". Train for it (--method qat), allow more float layers (--max-float), or relax the budget")
    kept = tuple(order[:high])
    return Choice(kept, tuple(modules[n] for n in kept), len(layers), points[high], curve, ranked_on=ranked_on,
                  seconds=time.perf_counter() - start, ranking=tuple(order), **done)


def fewest(graph: PartialINT8, x: np.ndarray, labels: np.ndarray | None, order: list[str], cap: int, ok,
           reference: np.ndarray, full: Point, progress) -> tuple[int | None, dict[int, Point]]:
    """The smallest k <= ``cap`` whose top-k layers of ``order`` in float give a point ``ok`` accepts (None: none
    does), by doubling then bisecting (at most 2 log2(cap) + 1 tries), and every point tried, by k."""
    points = {0: full}
    with progress("Layers in float tried", 2 * max(1, math.ceil(math.log2(cap))) + 1) as tick:

        def at(k: int) -> Point:
            if k not in points:
                points[k] = score(k, reference, graph.logits(x, frozenset(order[:k])), labels)
                tick(f"{k} in float")
            return points[k]

        k = 1
        while not ok(at(min(k, cap))) and k < cap:
            k *= 2
        k = min(k, cap)
        if not ok(at(k)):
            return None, points
        low, high = k // 2, k  # low misses (or is 0), high meets
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if ok(at(mid)) else (mid, high)
    return high, points

"""The typed requests of the jobs: what quantize and bench share, and what each adds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from edgesmlp import targets
from edgesmlp.errors import ConfigError
from edgesmlp.quantization.budget import DEFAULT_MAX_DROP
from edgesmlp.targets.base import RunSettings, TargetConfig

if TYPE_CHECKING:
    from edgesmlp.quantization.budget import Budget
    from edgesmlp.quantization.qat import QATConfig


MANIFEST_VERSION = 1  # manifest.json's "edgesmlp_manifest": bench --from reads this version and older ones


class Form(str, Enum):
    deploy = "deploy"  # folded norms, no transposes: what ships by default
    reference = "reference"  # the official graph as loaded


@dataclass(frozen=True)
class PreprocessOverrides:
    """The user's changes to the checkpoint's own preprocessing (None: keep the checkpoint's)."""

    image_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and not all(math.isfinite(v) for v in values):
                raise ConfigError(f"--{name} values must be finite numbers, got {','.join(map(str, values))}")


@dataclass(frozen=True)
class Calibration:
    """Which calibration images, and how many of them are sampled (deterministically, by ``seed``)."""

    images: Path | None = None  # None: the bundled digits calibration split
    size: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ConfigError(f"--calib-size must be positive, got {self.size}")
        if not 0 <= self.seed < 2**32:  # numpy's and torch's generators take 32-bit seeds
            raise ConfigError(f"--seed must be in [0, 2**32), got {self.seed}")


@dataclass(frozen=True)
class JobSpec:
    """What quantize and bench share: the weights, their preprocessing, the images, how to run."""

    weights: Path | None = None  # None: the bundled digits model
    variant: str | None = None  # assert the weights are this variant
    ema: bool = False
    val: Path | None = None  # None: the bundled digits validation split
    calibration: Calibration = Calibration()
    preprocess: PreprocessOverrides = PreprocessOverrides()
    form: Form = Form.deploy
    run: RunSettings = RunSettings()
    max_drop: float = DEFAULT_MAX_DROP  # the accuracy floor, in top-1 points an INT8 row may lose against its float row
    min_agreement: float | None = None  # and the % of images on which INT8 keeps FP32's top class

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise ConfigError(f"--max-drop must be a finite number of 0 or more, got {self.max_drop}")
        if self.min_agreement is not None and not 0 < self.min_agreement <= 100:
            raise ConfigError(f"--min-agreement is a percentage in (0, 100], got {self.min_agreement}")
        try:
            object.__setattr__(self, "form", Form(self.form))
        except ValueError:
            raise ConfigError(f"--form {self.form!r} unknown: use deploy or reference") from None


@dataclass(frozen=True)
class QuantizeRequest(JobSpec):
    target: str = targets.DEFAULT
    config: TargetConfig | None = None  # the target's config (None: its defaults)
    qat: QATConfig | None = None  # a QATConfig for quantization-aware training; None: post-training only
    output: Path | None = None  # None: edgesmlp-out, or the next free edgesmlp-out-N
    force: bool = False
    fallback: str = "auto"  # auto: keep the most sensitive layers in float until the budget is met; off: a floor
    max_float: float = 0.2  # at most this share of the quantized layers kept in float
    ranking: str = "auto"  # how the search orders the layers: auto, exact or first-order
    search: Path | None = None  # images the budget is met on (None: the calibration source's other images)
    search_size: int = 1000  # search images the budget is met on (all of them if fewer)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.qat is not None and self.form is not Form.deploy:
            raise ConfigError("--method qat trains the deploy form: drop --form reference")
        from edgesmlp.quantization.budget import Ranking

        if self.budget.ranking is Ranking.first_order and self.form is not Form.deploy:
            raise ConfigError("--ranking first-order ranks the deploy form: drop --form reference, or use "
                              "--ranking exact")
        if self.search_size < 1:
            raise ConfigError(f"--search-size must be at least 1, got {self.search_size}")

    @property
    def budget(self) -> Budget:
        from edgesmlp.quantization.budget import Budget

        return Budget(self.max_drop, self.min_agreement, self.fallback, self.max_float, self.ranking)


@dataclass(frozen=True)
class BenchRequest(JobSpec):
    targets: tuple[str, ...] | None = None  # None: every registered target
    configs: tuple[TargetConfig, ...] = field(default_factory=tuple)  # target configs to use instead of defaults
    from_dir: Path | None = None  # an existing quantize output (OUT, OUT/openvino or a Jetson bundle)
    output: Path | None = None
    force: bool = False
    profile: bool = False  # per target and precision: time per op type and each layer's executed precision

"""The target seam: what every target provides, and the typed job it is handed.

A target is one file holding one :class:`Target` subclass, listed once in ``targets/__init__.py``.
``build`` turns a :class:`Job` into the artifacts a user ships (it writes into a temporary folder the
job renames into place) and returns variants runnable here, for the quantize report; ``load`` returns
runnable variants from a folder ``build`` wrote, where the artifacts run (``bench``, ``bench --from``).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from edgesmlp.errors import ConfigError
from edgesmlp.runtimes.base import Runner

if TYPE_CHECKING:  # heavy types, for annotations only: the device side imports no torch
    import numpy as np
    import torch

    from edgesmlp.calibration.preprocess import Images, Preprocess
    from edgesmlp.checkpoint import Checkpoint
    from edgesmlp.quantization.budget import Budget, SearchImages
    from edgesmlp.quantization.qat import QATJob

Log = Callable[[str], None]


class TargetConfig(Protocol):
    """A target's options: a frozen dataclass, validated on construction, with defaults for every field."""

    def to_dict(self) -> dict: ...


@dataclass(frozen=True)
class TargetOptions:
    """Every target option the command line takes, as given (None: not given). Each target's
    ``config_from`` picks the ones it understands into its own config, so the CLI names no target."""

    preset: str | None = None  # openvino: NNCF preset
    bias_correction: str | None = None  # openvino
    smooth_quant: float | None = None  # openvino
    activation_range: str | None = None  # openvino: minmax, histogram or nncf
    calib_batch: int | None = None  # openvino: calibration images per NNCF inference
    ignored: tuple[str, ...] = ()  # openvino, jetson: node names kept in float
    calib_method: str | None = None  # Q/DQ targets (jetson, onnxruntime)
    percentile: float | None = None  # Q/DQ targets
    weight_bits: int | None = None  # onnxruntime, openvino: 7 or 8 (None: 7 on x86 without VNNI, else 8)
    fuse: str | None = None  # openvino: matmul or conv (None: conv on x86 without VNNI, else matmul)
    token_mixing: str | None = None  # openvino: int8 or float (None: float on x86 without VNNI, else int8)
    dla_core: int | None = None  # jetson, on the device


@dataclass(frozen=True)
class Option:
    """A target option, declared by each target that takes it (``Target.options``): the CLI builds its flag and help
    from these, refuses it for a target that does not declare it, and a manifest records it under ``key``."""

    field: str  # the TargetOptions field; the flag is option_flag(field)
    key: str  # where its value lands in config.to_dict()
    type: type  # str, int or float; tuple for a repeatable one
    help: str  # what it does on this target
    metavar: str | None = None
    default: object = None  # what --help shows (None: this target decides, as help says)
    about: str = ""  # for an option several targets take: what it is, before each target's own help
    deploy_only: bool = False  # it chooses how the deploy form is quantized: refused with --form reference


IGNORE_ABOUT = ("Layer to keep in float, by node name or module path (repeatable; `edgesmlp sensitivity` lists "
                "them); combines with --fallback auto.")
WEIGHT_BITS_ABOUT = ("Bits of the signed weights. Default: 7 on x86 CPUs without VNNI (AVX2, AVX-512 before Cascade "
                     "Lake), whose u8 x s8 kernels saturate on 8-bit weights, else 8. Set it for the CPU you deploy "
                     "to.")


def qdq_options(ignore: str | None = None) -> tuple[Option, ...]:
    """The options of a target built on the TensorRT-rule Q/DQ graph (``quantization/qdq.py``), and ``--ignore``
    with this target's meaning of it."""
    options = (Option("calib_method", "method", str, "activation ranges from max, percentile, entropy (KL) or mse.",
                      "[max|percentile|entropy|mse]", "percentile", about="How Q/DQ activation ranges are found."),
               Option("percentile", "percentile", float, "the percentile of |x| for --calib-method percentile.",
                      "P", 99.99, about="Q/DQ calibration."))
    return options + ((Option("ignored", "ignored", tuple, ignore, "NODE", about=IGNORE_ABOUT),) if ignore else ())


def option_flag(field_name: str) -> str:
    """The command-line flag of a TargetOptions field (``ignored`` is ``--ignore``)."""
    return "--ignore" if field_name == "ignored" else "--" + field_name.replace("_", "-")


def refuse_foreign(chosen: list[Target], given_fields, every: list[Target]) -> None:
    """Refuse, in one line, a target option none of the ``chosen`` targets takes (it would be silently ignored)."""
    for name in given_fields:
        if not any(t.takes(name) for t in chosen):
            takers = [t.name for t in every if t.takes(name)]
            which = " and ".join(t.name for t in chosen)
            hint = f"use -t {takers[0]}" if takers else "it applies to no target"
            raise ConfigError(f"{option_flag(name)} is an option of {', '.join(takers) or 'no target'}, not of "
                              f"{which}: drop it, or {hint}")


def options_of(target: Target, config: TargetConfig) -> dict:
    """The options, by TargetOptions field, that rebuild ``config`` (what a job file records; None left out)."""
    values = config.to_dict()
    return {o.field: values[o.key] for o in target.options if values.get(o.key) not in (None, [], ())}


def deploy_only(target: Target) -> set[str]:
    """The TargetOptions fields of ``target`` that choose how the deploy form is quantized (``Option.deploy_only``)."""
    return {o.field for o in target.options if o.deploy_only}


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class RunSettings:
    """How variants are run and measured, the same in every command."""

    threads: int = 0  # CPU threads for every runtime; 0: one per core (os.cpu_count())
    throughput_batch: int = 8  # evaluation runs at it too, so one compiled runner gives accuracy and throughput
    latency_seconds: float = 1.0  # batch-1 timing budget per row, as benchmark_app -t
    latency_iters: int = 20  # at least this many batch-1 samples per row, whatever the budget
    model_cache: bool = True  # OpenVINO keeps compiled models in the user's cache folder between runs

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ConfigError(f"--threads must be 0 (one per core) or a positive count, got {self.threads}")
        if self.threads > available_cpus():  # more threads than cores spin against each other (and hold SIGTERM)
            raise ConfigError(f"--threads {self.threads} is more than the {available_cpus()} CPUs this process may "
                              "use: give at most that, or 0 for one per core")
        if not (math.isfinite(self.latency_seconds) and self.latency_seconds >= 0):
            raise ConfigError(f"--latency-seconds must be a finite number of 0 or more, got {self.latency_seconds}")
        for name in ("throughput_batch", "latency_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")

    @property
    def cpu_threads(self) -> int:
        """The threads given, else one per core, shared among the processes torchrun started on this machine."""
        return self.threads or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


@dataclass(frozen=True)
class Job:
    """What a target's ``build`` gets: the loaded checkpoint, the form to ship, calibration data, its config."""

    ckpt: Checkpoint
    model: torch.nn.Module  # the form being shipped (the deploy form unless --form reference)
    form: str
    preprocess: Preprocess
    calibration: Images | np.ndarray  # (N, C, H, W) preprocessed calibration images (Images: uint8-backed)
    config: TargetConfig  # the target's own frozen config (Target.config_type)
    run: RunSettings = RunSettings()
    qat: QATJob | None = None  # quantization-aware training instead of post-training only
    budget: Budget | None = None  # the accuracy asked for; a target that can keep layers in float meets it
    search: SearchImages | None = None  # the images the budget is met on (None: the calibration images)


@dataclass
class Variant:
    """One precision of one target, runnable here."""

    precision: str  # fp32, fp16, int8 (int8-ptq beside a QAT int8)
    runtime: str  # what executes it, e.g. "OpenVINO CPU" or "emulated (ONNX Runtime CPU)"
    make_runner: Callable[[int], Runner]  # batch size -> runner
    size_mb: float | None = None
    quantize_seconds: float | None = None
    note: str = ""
    speed_reference: bool = False  # every speedup of the target is over this row (what users get without us)
    kept_float: tuple[str, ...] | None = None  # INT8 rows: the layers left in float (empty: none)
    quantized_layers: int | None = None  # INT8 rows: how many layers run INT8
    compare_only: bool = False  # shown for comparison, not shipped, not gated (e.g. INT8 with nothing in float)


@dataclass
class Build:
    variants: list[Variant]
    notes: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)  # target-specific entries for manifest.json
    scratch: list[Path] = field(default_factory=list)  # files used for comparison rows, removed before shipping


def searches(job: Job) -> bool:
    """Whether ``build`` should look for layers to keep in float: a budget with --fallback auto, and PTQ (QAT
    trains for the accuracy instead; its budget is a floor)."""
    return job.budget is not None and job.budget.searches and job.qat is None


def choose_float_layers(job: Job, graph, log: Log, rank=None):
    """The budget search over ``graph`` (a ``PartialINT8``) on the job's search images, with progress bars."""
    from edgesmlp.progress import progress_bar
    from edgesmlp.quantization.budget import SearchImages, choose

    search = job.search if job.search is not None else SearchImages(job.calibration, None, "calibration images",
                                                                     overlap=True)
    if search.overlap:
        log(f"note: the search images are {search.origin}, as the source holds no others, so the estimate must leave "
            "half the allowance unused; --search gives images calibration never used")
    choice = choose(graph, search.x, search.labels, job.budget, log, progress_bar, search.overlap, search.certify,
                    search.origin, rank)
    if choice.kept_float:
        log(f"keeping {len(choice.kept_float)} of {choice.layers} layers in float to meet {job.budget.describe()} "
            f"on {choice.images} search images ({choice.reached.line()}), in {choice.seconds:.0f} s: "
            f"{', '.join(choice.kept_modules)}")
    return choice


def first_order_ranker(job: Job, graph, log: Log, method: str = "percentile", percentile: float = 99.99,
                       weight_bits: int = 8, keys=None):
    """The budget search's ranking to first order (``quantization.first_order``: one forward and one backward pass
    instead of one run of the model per layer), with ranges by ``method`` and ``weight_bits`` weights like the
    target's; ``keys(layers, scores)``, for a graph that also quantizes the norms' and the pool's inputs, pairs its
    layers with their scores (default: by module path, those inputs not scored).
    None where the budget asks for the exact ranking, or (``auto``) below FIRST_ORDER_MACS, where it takes
    seconds."""
    from edgesmlp.deploy import DeploySMLPNet
    from edgesmlp.model import count_macs
    from edgesmlp.quantization.budget import FIRST_ORDER_MACS, Ranking

    ranking, c = job.budget.ranking, job.ckpt.config
    if ranking is Ranking.exact:
        return None
    if not isinstance(job.model, DeploySMLPNet):  # the reference form (QuantizeRequest refuses first-order there)
        return None
    if ranking is Ranking.auto and count_macs(job.ckpt.model, c.image_size, c.in_chans) < FIRST_ORDER_MACS:
        return None

    def rank(x):
        from edgesmlp.progress import progress_bar
        from edgesmlp.quantization.first_order import BATCH, first_order_scores, rank_by_first_order

        with progress_bar("Ranking layers (first order)", -(-len(x) // BATCH)) as tick:
            scores = first_order_scores(job.model, job.calibration, x, method, percentile, weight_bits,
                                        progress=tick, quantized_inputs=keys is not None)
        order = rank_by_first_order(graph.layers, scores, keys(graph.layers, scores) if keys else None)
        if order is None:
            log("the first-order ranking does not know every layer of this graph: ranking them one run at a time")
        return order

    return rank


class Target(ABC):
    """One deployment target. Subclasses set the class attributes and implement the three methods."""

    name: ClassVar[str]  # the registry key, as users type it
    summary: ClassVar[str]  # one line for --help
    config_type: ClassVar[type]  # a frozen dataclass with defaults and to_dict()
    ships: ClassVar[bool] = True  # `quantize --target NAME` writes its artifacts
    # the quantize output folders `load` reads (None: any); a subclass that does not say reads its own, (name,)
    reads: ClassVar[tuple[str, ...] | None]
    title: ClassVar[str] = ""  # its panel in --help (the name when empty)
    # The options this target takes: the CLI shows them in its panel and refuses the others, and a build's manifest
    # records them so that it replays (``options_of``).
    options: ClassVar[tuple[Option, ...]] = ()
    # the command to run after `quantize`, shown last ({folder}: OUT/<target>, {root}: OUT)
    next_step: ClassVar[str] = "edgesmlp bench --from {root} (every target's rows, report.html)"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "reads" not in vars(cls):
            cls.reads = (cls.name,)

    def config_from(self, options: TargetOptions) -> TargetConfig:
        """This target's config from the command line's options (defaults for what was not given): by default
        each declared option given, under its key."""
        return self.config_type(**{o.key: getattr(options, o.field) for o in self.options
                                   if getattr(options, o.field) not in (None, ())})

    @classmethod
    def takes(cls, field_name: str) -> bool:
        """Whether this target declares the TargetOptions field ``field_name``."""
        return any(o.field == field_name for o in cls.options)

    def check(self, config: TargetConfig, form: str, qat: bool = False) -> None:
        """Refuse, before any work, what this target cannot do with ``config`` (missing runtimes included)."""

    @abstractmethod
    def available(self) -> str | None:
        """None when ``load``'s variants can run here, else the reason (a skipped bench row says it)."""

    @abstractmethod
    def build(self, job: Job, folder: Path, log: Log) -> Build:
        """Write the artifacts into the empty ``folder``; return variants runnable here."""

    @abstractmethod
    def load(self, folder: Path, config: TargetConfig, run: RunSettings, log: Log) -> Build:
        """Variants from a folder ``build`` wrote, run where this target's runtime is."""

    def emulate(self, folder: Path, config: TargetConfig, run: RunSettings, log: Log) -> Build | None:
        """Where ``available`` says the runtime is missing: variants that execute the artifacts' own math here,
        labelled emulated, for ``bench --from`` (None: nothing can stand in, and the row is skipped)."""
        return None

    def partial_int8(self, job: Job, folder: Path, log: Log):
        """This target's INT8 graph of ``job.model`` as a ``PartialINT8`` (``quantization/partial.py``), and a
        function of images giving FP32-vs-INT8 cosines at the end of every block: what ``sensitivity`` scores.
        Targets that cannot keep layers in float leave this out."""
        raise NotImplementedError

    @classmethod
    def mixed_precision(cls) -> bool:
        """Whether this target provides ``partial_int8`` (and so ``sensitivity``)."""
        return cls.partial_int8 is not Target.partial_int8


def size_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / 1e6

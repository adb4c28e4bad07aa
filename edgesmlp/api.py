"""The Python API: what the ``edgesmlp`` command runs, for notebooks, training scripts and pipelines.

    import edgesmlp

    result = edgesmlp.quantize("smlp_t.pth", target="openvino", calib="imagenet/train", val="imagenet/val")
    print(result.gate.ok, [(r.precision, r.top1, r.latency_ms_p50) for r in result.rows])
    report = edgesmlp.bench(source=result.folder.parent)
    assert edgesmlp.check(report).ok

Every argument but the weights is a keyword. Weights are a path, an sMLPNet (any module with the official
parameter names), or what :func:`load` returns; None is the bundled digits model. Images (``calib``,
``val``, ``search``) are a path (a folder, an ImageFolder tree, a list file), a list of paths or PIL images
(or ``(image, label)`` pairs), or one preprocessed float (N, C, H, W) array (or ``(array, labels)``).
Nothing is printed unless ``progress=True`` or a ``log`` callable is given. A bad argument raises the
:class:`~edgesmlp.errors.InputError` the command line reports (exit code 2), with the same message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesmlp import targets as registry
from edgesmlp.errors import ConfigError
from edgesmlp.jobs.check import GateOutcome as Gate
from edgesmlp.jobs.report import Result
from edgesmlp.quantization.budget import DEFAULT_MAX_DROP

if TYPE_CHECKING:
    from edgesmlp.checkpoint import Checkpoint
    from edgesmlp.quantization.qat import QATConfig

Log = Callable[[str], None]
ROW_FIELDS = {f.name for f in fields(Result)}


@dataclass(frozen=True)
class Report:
    """A report.json: its rows (``target``, ``precision``, ``top1``, ``agreement``, ``latency_ms_p50``,
    ``throughput_ips``, ``kept_float``, ... as in the file) and the whole file as ``data``."""

    path: Path
    rows: tuple[Result, ...]
    data: dict

    @classmethod
    def read(cls, path: str | Path) -> Report:
        """A report.json (or its folder) written by quantize or bench, validated as ``check`` does."""
        from edgesmlp.jobs.check import load_report

        path = Path(path)
        path = path / "report.json" if path.is_dir() else path
        return cls.of(path, load_report(path))

    @classmethod
    def of(cls, path: Path, data: dict) -> Report:
        rows = tuple(Result(**{k: v for k, v in row.items() if k in ROW_FIELDS}) for row in data["results"])
        return cls(path, rows, data)

    @property
    def failed(self) -> bool:
        """A target crashed: its row says why (``edgesmlp bench`` exits 3)."""
        return any(row.status == "failed" for row in self.rows)

    def table(self, wide: bool = False) -> str:
        """The rows as the terminal shows them (80 columns; ``wide``: every column)."""
        from edgesmlp.jobs.report import render_terminal

        return render_terminal(self.data["results"], wide)

    def legend(self) -> list[str]:
        """One line for each mark the table uses (``~``: a noisy latency, ...)."""
        from edgesmlp.jobs.report import terminal_legend

        return terminal_legend(self.data["results"])

    def explanations(self, everything: bool = False) -> list[str]:
        """What the budget search found; with ``everything``, the profiles and every note behind the numbers too."""
        from edgesmlp.jobs.report import budget_lines, profile_summary

        lines = budget_lines(self.data)
        if everything:
            lines += [*map(profile_summary, self.data.get("profiles") or []), *self.data["notes"]]
        return lines


@dataclass(frozen=True)
class QuantizeResult:
    """What ``quantize`` wrote: the target's ``folder`` (artifacts, report, manifest), its report, and the
    verdict against the budget on the validation images (``edgesmlp quantize`` exits 1 when it is not ok)."""

    folder: Path
    report: Report
    gate: Gate

    @property
    def rows(self) -> tuple[Result, ...]:
        return self.report.rows


@dataclass(frozen=True)
class Sensitivity:
    """What ``sensitivity`` wrote: ``layers`` ranked (most hurt first), ``ignore`` (the suggested layers and
    the ``--ignore`` line), and the whole sensitivity.json as ``data``."""

    folder: Path
    layers: tuple[dict, ...]
    ignore: dict
    data: dict

    def text(self, top: int = 15) -> str:
        """The ranked table (``top`` rows) and the ``--ignore`` line, as ``edgesmlp sensitivity`` prints them."""
        from edgesmlp.jobs.sensitivity import render

        return render(self.data, top)


def load(weights: str | Path | None = None, *, variant: str | None = None, ema: bool = False) -> Checkpoint:
    """The checkpoint at ``weights`` (None: the bundled digits model): ``.model`` (an eval-mode sMLPNet),
    ``.config``, ``.preprocess``, ``.sha256``. Pass it to the other functions as the weights."""
    from edgesmlp.checkpoint import load_checkpoint

    return load_checkpoint(weights, variant=variant, ema=ema)


def quantize(weights=None, target: str = registry.DEFAULT, *, calib: Any = None, val: Any = None, search: Any = None,
             output: str | Path | None = None, force: bool = False, max_drop: float = DEFAULT_MAX_DROP,
             min_agreement: float | None = None, fallback: str = "auto", max_float: float = 0.2,
             ranking: str = "auto", calib_size: int = 300, seed: int = 0, search_size: int = 1000, form: str = "deploy",
             image_size: int | None = None, crop_pct: float | None = None, interpolation: str | None = None,
             mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None, threads: int = 0,
             latency_seconds: float = 1.0, model_cache: bool = True, qat: QATConfig | None = None,
             variant: str | None = None, ema: bool = False, progress: bool = False, log: Log | None = None,
             **target_options) -> QuantizeResult:
    """INT8 (PTQ, or QAT with ``qat=QATConfig(...)``) for ``target``, as ``edgesmlp quantize``: artifacts in
    ``output/<target>`` (default ``edgesmlp-out``), FP32 against INT8 on ``val``. ``target_options`` are the
    target's own (``preset``, ``fuse``, ``token_mixing``, ``ignore`` for openvino; ``calib_method``, ``percentile``, ``ignore``,
    ``dla_core`` for jetson): one the target does not take is refused."""
    from edgesmlp.jobs.quantize import run_quantize
    from edgesmlp.jobs.spec import QuantizeRequest

    name = registry.resolve(target)
    from edgesmlp.targets.base import deploy_only, option_flag

    given = [f for f in deploy_only(registry.get(name)) if target_options.get(f) is not None]
    if given and form == "reference":
        raise ConfigError(f"{option_flag(given[0])} chooses how the deploy form's token mixing is quantized; the "
                          f"reference form has none: drop {option_flag(given[0])}, or use --form deploy")
    request = QuantizeRequest(
        **_spec(weights, variant, ema, val, calib, calib_size, seed, threads, form,
                (image_size, crop_pct, interpolation, mean, std), latency_seconds=latency_seconds,
                model_cache=model_cache),
        max_drop=max_drop, min_agreement=min_agreement, target=name,
        config=registry.get(name).config_from(_target_options([name], target_options)), qat=qat,
        output=_path(output), force=force, fallback=fallback, max_float=max_float, ranking=ranking,
        search=_images(search, "search"), search_size=search_size)
    outcome = _run(run_quantize, request, progress, log)
    if not outcome.report:  # a rank of torchrun other than 0: rank 0 writes and reports
        return QuantizeResult(outcome.directory, Report(outcome.directory / "report.json", (), {}), Gate())
    report = Report.of(outcome.directory / "report.json", outcome.report)
    return QuantizeResult(outcome.directory, report, check(report, max_drop=max_drop, min_agreement=min_agreement,
                                                           allow_empty=True))


def bench(weights=None, *, targets: str | list[str] | None = None, calib: Any = None, val: Any = None,
          source: str | Path | None = None, output: str | Path | None = None, force: bool = False,
          max_drop: float = DEFAULT_MAX_DROP, min_agreement: float | None = None, calib_size: int = 300,
          threads: int = 0, batch: int = 8, latency_seconds: float = 1.0, latency_iters: int = 20,
          profile: bool = False, model_cache: bool = True, variant: str | None = None, ema: bool = False,
          progress: bool = False, log: Log | None = None, **target_options) -> Report:
    """Every target (or ``targets``) and precision on the same images, as ``edgesmlp bench``; with ``source``
    (a quantize output folder, as ``--from``) what was built there. A target that crashes is a failed row
    (``Report.failed``), not an exception."""
    from edgesmlp.jobs.bench import resolve_targets, run_bench
    from edgesmlp.jobs.spec import BenchRequest

    given = [targets] if isinstance(targets, str) else list(targets or ())
    names = resolve_targets(tuple(n.strip() for value in given for n in value.split(",") if n.strip()) or None)
    if source is not None and target_options:
        raise ConfigError(f"--{next(iter(target_options)).replace('_', '-')} cannot go with --from: {source} holds a "
                          "model quantized already (its manifest.json records its options); quantize again to change it")
    options = _target_options(list(names), target_options)
    request = BenchRequest(
        **_spec(weights, variant, ema, val, calib, calib_size, 0, threads, None, None, throughput_batch=batch,
                latency_iters=latency_iters, latency_seconds=latency_seconds, model_cache=model_cache),
        targets=names, configs=tuple(registry.get(n).config_from(options) for n in names), output=_path(output),
        force=force, from_dir=_path(source), max_drop=max_drop, min_agreement=min_agreement, profile=profile)
    outcome = _run(run_bench, request, progress, log)
    if not outcome.report:  # a rank of torchrun other than 0: rank 0 writes and reports
        return Report(outcome.directory / "report.json", (), {})
    return Report.of(outcome.directory / "report.json", outcome.report)


def check(report: str | Path | Report, baseline: str | Path | Report | None = None, *,
          max_drop: float = DEFAULT_MAX_DROP, min_agreement: float | None = None, latency: str = "speedup",
          max_latency_regression: float = 0.2, allow_empty: bool = False,
          allow_other_baseline: bool = False) -> Gate:
    """The CI gate, as ``edgesmlp check``: every INT8 row within ``max_drop`` of its float row (and of the
    ``baseline`` report's, with the latency rule), recomputed from the rows."""
    from edgesmlp.jobs.check import check_report, check_threshold

    check_threshold(max_latency_regression, "--max-latency-regression")  # check_report checks --max-drop
    current = report if isinstance(report, Report) else Report.read(report)
    base = None if baseline is None else baseline if isinstance(baseline, Report) else Report.read(baseline)
    return check_report(current.data, base.data if base else None, max_drop, max_latency_regression, allow_empty,
                        latency, min_agreement, allow_other_baseline)


def sensitivity(weights=None, target: str = registry.DEFAULT_SENSITIVITY, *, calib: Any = None, val: Any = None, images: int = 500,
                calib_size: int = 300, output: str | Path | None = None, force: bool = False,
                max_drop: float = DEFAULT_MAX_DROP, min_agreement: float | None = None, max_float: float = 0.2,
                image_size: int | None = None, crop_pct: float | None = None, interpolation: str | None = None,
                mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None, threads: int = 0,
                variant: str | None = None, ema: bool = False, progress: bool = False, log: Log | None = None,
                **target_options) -> Sensitivity:
    """Which layers INT8 hurts on ``target``, as ``edgesmlp sensitivity``: ranked, with the ``--ignore``
    set that meets the budget on the scored images."""
    from edgesmlp.jobs.sensitivity import SensitivityRequest, run_sensitivity

    name = registry.resolve(target)
    request = SensitivityRequest(
        **_spec(weights, variant, ema, val, calib, calib_size, 0, threads, None,
                (image_size, crop_pct, interpolation, mean, std)),
        target=name, config=registry.get(name).config_from(_target_options([name], target_options)), images=images,
        output=_path(output), force=force, max_drop=max_drop, min_agreement=min_agreement, max_float=max_float)
    directory, result = _run(run_sensitivity, request, progress, log)
    return Sensitivity(directory, tuple(result["layers"]), result["ignore"], result)


def __getattr__(name: str):
    if name == "QATConfig":  # quantization-aware training's options, for quantize(qat=QATConfig(...)); needs torch
        from edgesmlp.quantization.qat import QATConfig

        return QATConfig
    raise AttributeError(f"module 'edgesmlp.api' has no attribute {name!r}")


def export(output: str | Path, weights=None, *, image_size: int | None = None, batch: int = 1,
           dynamic_batch: bool = False, form: str = "deploy", variant: str | None = None, ema: bool = False,
           force: bool = False):
    """FP32 ONNX, as ``edgesmlp export``: ``.path``, ``.opset``, ``.batch``, ``.max_abs_diff`` (ONNX Runtime
    against the official PyTorch graph)."""
    from edgesmlp.jobs import tools

    return tools.export(Path(output), weights, image_size, batch, dynamic_batch, form, variant, ema, force)


def inspect(weights=None, *, arch: str | None = None, variant: str | None = None, ema: bool = False):
    """What a checkpoint holds, as ``edgesmlp inspect --json`` prints it; ``arch``: a variant without weights."""
    from edgesmlp.jobs import tools

    return tools.inspect(weights, arch, variant, ema)


def describe(info: dict, arch: str | None = None) -> str:
    """``inspect``'s answer as ``edgesmlp inspect`` prints it (``arch`` as given to ``inspect``)."""
    from edgesmlp.jobs import describe as d

    return (d.render if arch is None else d.render_arch_list if arch == "list" else d.render_arch)(info)


def read_job_file(path: str | Path, command: str, commands: set[str]):
    """The options a job file gives ``command``: a ``JobFile`` with ``values`` by snake-case key (paths as written;
    ``resolve`` reads one from the file's folder) and ``manifest``, true for a build's manifest.json."""
    from edgesmlp.jobs.jobfile import read

    return read(Path(path), command, commands)


def lint_qdq(model: str | Path):
    """TensorRT's INT8 rules on a Q/DQ ONNX, as ``edgesmlp lint-qdq``: ``.findings``, ``.errors``."""
    from edgesmlp.jobs import tools

    return tools.lint_qdq(Path(model))


def write_digits(output: str | Path, force: bool = False) -> dict[str, int]:
    """The bundled digits splits as ImageFolder trees, as ``edgesmlp data digits``."""
    from edgesmlp.jobs import tools

    return tools.digits(Path(output), force)


def _run(job, request, progress: bool, log: Log | None):
    from edgesmlp.progress import quiet

    with quiet(not progress):
        return job(request, log or (lambda _line: None))


def _path(value) -> Path | None:
    return None if value is None else Path(value)


def _images(data, name: str):
    """A path as given; images in memory as an ImageSet (``calibration.sources.in_memory``)."""
    if data is None or isinstance(data, (str, Path)):
        return _path(data)
    from edgesmlp.calibration.sources import in_memory

    return in_memory(data, name)


def _spec(weights, variant, ema, val, calib, calib_size, seed, threads, form, preprocess, **run) -> dict:
    """The JobSpec fields every job shares."""
    from edgesmlp.jobs.spec import Calibration, PreprocessOverrides
    from edgesmlp.targets.base import RunSettings

    image_size, crop_pct, interpolation, mean, std = preprocess or (None,) * 5
    return dict(weights=weights if weights is None or not isinstance(weights, str) else Path(weights),
                variant=variant, ema=ema, val=_images(val, "val"),
                calibration=Calibration(_images(calib, "calib"), calib_size, seed),
                preprocess=PreprocessOverrides(image_size, crop_pct, interpolation,
                                               None if mean is None else tuple(mean), None if std is None else tuple(std)),
                run=RunSettings(threads=threads, **run), **({"form": form} if form is not None else {}))


def _target_options(chosen: list[str], given: dict):
    """The target options as a TargetOptions; a name no target takes, or none of ``chosen`` takes, is refused."""
    from edgesmlp.targets.base import TargetOptions, option_flag, refuse_foreign

    known = {f.name for f in fields(TargetOptions)}
    values = {}
    for key, value in given.items():
        key = "ignored" if key == "ignore" else key
        if key not in known:
            raise ConfigError(f"{key!r} is not an option of edgesmlp: target options are "
                              f"{', '.join(sorted(option_flag(k)[2:].replace('-', '_') for k in known))}")
        values[key] = tuple([value] if isinstance(value, str) else value) if key == "ignored" else value
    every = [registry.get(n) for n in registry.names()]
    refuse_foreign([registry.get(n) for n in chosen], list(values), every)
    return TargetOptions(**values)

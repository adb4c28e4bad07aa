"""The `edgesmlp` command: each command parses options, calls one library function, prints, exits.

Exit codes: 0 success, 1 a gate failed, 2 bad input (the message says which file and the fix),
3 an operation failed, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Every failure, a bug included,
becomes one line on stderr, never a traceback (a bug's traceback goes to a log file the line names).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgesmlp import targets
from edgesmlp.errors import ConfigError, EdgesmlpError, Terminated
from edgesmlp.jobs.spec import DEFAULT_MAX_DROP, Form

WeightsOpt = Annotated[
    Optional[Path],
    typer.Option("--weights", "-w", rich_help_panel="Input", help="Checkpoint (.pth/.pt/.safetensors). Default: the bundled digits model."),
]
VariantOpt = Annotated[
    Optional[str],
    typer.Option(metavar="NAME", rich_help_panel="Input", help="Assert the weights are this variant (smlpnet_t, smlpnet_s_sum, ...: "
                 "`edgesmlp inspect --arch list`). Optional: the architecture is read from the keys and shapes; it "
                 "decides only where shapes cannot (sequential branches vs no identity)."),
]
EmaOpt = Annotated[bool, typer.Option("--ema", rich_help_panel="Input", help="Take the checkpoint's model_ema weights instead of model.")]
LatencySecondsOpt = Annotated[float, typer.Option(metavar="S", rich_help_panel="Timing", help="Batch-1 timing budget per row, in seconds, "
                                                  "split over interleaved rounds (as benchmark_app -t).")]
JsonOpt = Annotated[bool, typer.Option("--json", rich_help_panel="Output", help="Print one JSON object on stdout (verdict, violations, "
                                       "results) and nothing else there; notes and progress go to stderr.")]
MaxDropOpt = Annotated[float, typer.Option(metavar="POINTS", rich_help_panel="Accuracy budget", help="Accuracy floor: exit 1 with a FAIL line when an "
                                           "INT8 row loses more top-1 points than this against its float row.")]
MinAgreementOpt = Annotated[Optional[float], typer.Option(metavar="PERCENT", rich_help_panel="Accuracy budget", help="Accuracy floor without labels: exit 1 "
                                                     "when an INT8 row keeps FP32's top class on fewer images than "
                                                     "this (e.g. 99.5).")]
ForceOpt = Annotated[bool, typer.Option("--force", rich_help_panel="Output", help="Replace OUTPUT if it exists (only "
                                        "what edgesmlp wrote).")]
WideOpt = Annotated[bool, typer.Option("--wide", rich_help_panel="Output", help="Print every column (the default table fits 80 columns).")]


def _job_file(ctx: typer.Context, param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """--config FILE: the job file's options become this command's defaults, so the command line overrides them."""
    if value is None:
        return value
    from edgesmlp import api

    root = ctx.find_root().command
    try:
        job = api.read_job_file(value, ctx.command.name, set(getattr(root, "commands", {})))
    except EdgesmlpError as e:
        raise typer.BadParameter(" ".join(str(e).split())) from None
    params = {}
    for p in ctx.command.params:
        if p.name != param.name:
            params.update({job.key(opt): p for opt in p.opts if opt.startswith("--")}, **{p.name: p})
    defaults = {}
    for name, v in job.values.items():
        p = params.get(name)
        if p is None:
            if job.manifest:  # a build's record: what this command does not take is not its business
                continue
            raise typer.BadParameter(f"{value}: {name!r} is not an option of edgesmlp {ctx.command.name}")
        if isinstance(v, list) and not p.multiple:
            v = ",".join(map(str, v))  # mean = [0.5, 0.5, 0.5] as --mean 0.5,0.5,0.5
        if _takes_path(p) and isinstance(v, str):
            v = job.resolve(v)
        defaults[p.name] = [v] if p.multiple and not isinstance(v, list) else v
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _takes_path(param) -> bool:
    """Whether a click parameter takes a path (Typer's own parameters describe their annotation; click's a type)."""
    descriptor = getattr(param, "type_descriptor", None)
    return getattr(descriptor, "annotation", None) is Path or type(getattr(param, "type", None)).__name__ == "Path"


JobFileOpt = Annotated[Optional[Path], typer.Option("--config", metavar="FILE", is_eager=True, callback=_job_file,
                                                    rich_help_panel="Input", help="A job file: a .toml of option = "
                                                    "value lines ([command] tables allowed), or a build's "
                                                    "manifest.json; options given here override it.")]


def _given(ctx: typer.Context, *names: str) -> list[str]:
    """The options among ``names`` that were given, on the command line or in a job file."""
    return [n for n in names if getattr(ctx.get_parameter_source(n), "name", "") in ("COMMANDLINE", "DEFAULT_MAP")]


def _target_options(ctx: typer.Context, **values) -> dict:
    """The target options given (on the command line or in a job file), for the API, which refuses any the
    chosen target does not take."""
    return {name: values[name] for name in _given(ctx, *values)}


def _with_target_options(*fields: str):
    """Give a command the target options ``fields`` (TargetOptions fields) as the targets declare them
    (``Target.options``): an option one target takes sits in that target's panel, one several take in "Target
    options", its help saying what it does on each. They reach the command's ``**options``."""
    import inspect

    from edgesmlp.targets.base import option_flag

    declared = targets.declared_options()

    def parameter(field: str) -> inspect.Parameter:
        pairs = declared[field]
        first = pairs[0][1]
        if len(pairs) == 1:
            panel, help_text = pairs[0][0].title or pairs[0][0].name, first.help
        else:
            panel, by_help = "Target options", {}
            for t, o in pairs:  # targets that say the same, together
                by_help.setdefault(o.help, []).append(t.name)
            help_text = " ".join([first.about, *(f"{', '.join(n)}: {h}" for h, n in by_help.items())]).strip()
        kind = list[str] if first.type is tuple else first.type
        flag = option_flag(field)
        annotation = Annotated[Optional[kind], typer.Option(flag, metavar=first.metavar, rich_help_panel=panel,
                                                            help=help_text, show_default=first.default is not None)]
        return inspect.Parameter(flag[2:].replace("-", "_"), inspect.Parameter.KEYWORD_ONLY, default=first.default,
                                 annotation=annotation)

    return lambda command: _appended(command, [parameter(f) for f in fields])


def _appended(command, extra: list):
    """``command`` with the parameters ``extra`` after its own: Typer reads them from its signature, and they
    reach its ``**options``."""
    import inspect

    signature = inspect.signature(command, eval_str=True)
    params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=params + extra)
    command.__annotations__ = {**command.__annotations__, **{p.name: p.annotation for p in extra}}
    return command


def _stderr(line: str) -> None:
    typer.echo(line, err=True)


VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", rich_help_panel="Output", help="Print the notes that "
                                          "explain the numbers (they are in report.md and report.html too).")]
ModelCacheOpt = Annotated[bool, typer.Option("--model-cache/--no-model-cache", rich_help_panel="Timing", help="Keep "
                                             "OpenVINO's compiled models in ~/.cache/edgesmlp/openvino, so a row "
                                             "compiles once and a later run not at all.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel="Output", help="No progress bars or "
                                        "progress lines.")]


@dataclasses.dataclass(frozen=True)
class Shared:
    """The options the building commands take alike, each typed as its option; ``_with_shared_options`` gives
    them to a command."""

    variant: VariantOpt = None
    ema: EmaOpt = False
    verbose: VerboseOpt = False
    model_cache: ModelCacheOpt = True
    quiet: QuietOpt = False

    @classmethod
    def pop(cls, options: dict) -> "Shared":
        """Take the shared options out of a command's ``**options``, leaving its target options."""
        return cls(**{f.name: options.pop(f.name) for f in dataclasses.fields(cls) if f.name in options})


def _with_shared_options(*names: str):
    """Give a command the shared options ``names`` (fields of ``Shared``), read back with ``Shared.pop``."""
    import inspect
    import typing

    options, defaults = typing.get_type_hints(Shared, include_extras=True), Shared()
    return lambda command: _appended(command, [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, n), annotation=options[n])
        for n in names])


_REPORTED: list[str] = []  # the error lines this process printed (OneLineErrors prints one if none was)


def _fail(message: str, code: int) -> None:
    first = " ".join(message.split())  # one line, whatever the message held
    _REPORTED.append(first)
    typer.echo(f"error: {first}", err=True)
    raise typer.Exit(code)


def _log_traceback() -> Path:
    """The full traceback of the exception being handled, in a file whose path the error line gives."""
    import tempfile
    import time
    import traceback

    path = Path(tempfile.gettempdir()) / f"edgesmlp-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(f"edgesmlp {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}", encoding="utf-8",
                    errors="backslashreplace")
    return path


def friendly_errors(fn):
    """The one error boundary: every failure ends as one line on stderr with its documented exit code
    (2 bad input, 3 anything else, 130 Ctrl-C, 143 SIGTERM; 1 is only a gate that found a violation)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except EdgesmlpError as e:
            _fail(str(e), e.exit_code)
        except Terminated:
            _fail("terminated (SIGTERM); nothing half-written was left behind", 143)
        except KeyboardInterrupt:
            _fail("interrupted; nothing half-written was left behind", 130)
        except ImportError as e:  # a workstation dependency missing from a lean install
            from edgesmlp.errors import workstation_extra

            _fail(str(workstation_extra(e.name or "a dependency", "this command")), 2)
        except MemoryError:
            _fail("ran out of memory: use fewer or smaller images (--calib-size, --batch-size)", 3)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                _unexpected(e)
            where = f" writing {e.filename}" if e.filename else ""
            _fail(f"the disk is full{where} ({e.strerror}): free some space, or choose an -o on another disk; "
                  "nothing half-written was left behind", 3)
        except Exception as e:  # noqa: BLE001 - a bug or an unforeseen failure: one line, traceback to a file
            if "iostream error" in str(e):  # OpenVINO's and ONNX's C++ writers, when the disk fills up under them
                _fail("a runtime library could not write its file (iostream error): the disk is likely full; free "
                      "some space, or choose an -o on another disk; nothing half-written was left behind", 3)
            _unexpected(e)

    return wrapper


def _unexpected(e: BaseException) -> None:
    first = str(e).splitlines()[0][:200] if str(e) else ""
    _fail(f"unexpected {type(e).__name__}: {first} (full traceback in {_log_traceback()}; please report it)", 3)


# Typer vendors click from 0.2x on (older releases use click itself): find its exception base either way.
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineErrors(typer.core.TyperGroup):
    """Click's own usage errors (an unknown option, a value of the wrong type) as one line, like ours."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        swallowed = _option_taken_as_value(self, sys.argv[1:] if args is None else list(args))
        if swallowed:
            typer.echo(f"error: {swallowed}", err=True)
            sys.exit(2)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as e:
            command = e.ctx.command_path if getattr(e, "ctx", None) else "edgesmlp"
            typer.echo(f"error: {' '.join(e.format_message().split())} (see `{command} --help`)", err=True)
            sys.exit(2)
        except typer.Abort:  # Ctrl-C outside a command (while parsing)
            typer.echo("error: interrupted", err=True)
            sys.exit(130)
        if code == 130 and not _REPORTED:  # Typer turns a Ctrl-C outside the command into a silent Exit(130)
            typer.echo("error: interrupted", err=True)
        sys.exit(code if isinstance(code, int) else 0)  # click returns typer.Exit's code when not standalone


def _option_taken_as_value(group, args: list[str]) -> str | None:
    """Click takes the word after an option that wants a value as that value, even another option (``-o --force``
    would write a folder named --force), and keeps only the last of an option given twice (``-t openvino -t jetson``
    built only the Jetson bundle): the message for either case, or None."""
    command, rest = group, list(args)
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        command, rest = command.commands[rest[0]], rest[1:]
    options = [p for p in getattr(command, "params", []) if getattr(p, "param_type_name", "") == "option"]
    names = {name for p in options for name in (*p.opts, *p.secondary_opts)}
    wants_value = {name for p in options if not p.is_flag and not p.count for name in p.opts}
    given: dict[int, list[str]] = {}
    for i, word in enumerate(rest):
        if word == "--":
            break
        following = rest[i + 1] if i + 1 < len(rest) else None
        if word in wants_value and following in names:
            return f"{word} needs a value, but the next word is the option {following}: give {word} its value first"
        name, _, inline = word.partition("=")
        option = next((p for p in options if name in p.opts), None)
        if option is not None and not (option.multiple or option.is_flag or option.count):
            given.setdefault(id(option), []).append(inline or following or "")
            if len(given[id(option)]) == 2:  # click would keep the last and drop the first without a word
                long = max(option.opts, key=len)
                return f"{long} is given twice ({', '.join(given[id(option)])}) but takes one value: give it once"
    return None


PANELS = ("Input", "Accuracy budget", "Preprocessing", *(targets.get(n).title or n for n in targets.names()),
          "Target options", "QAT", "Timing", "Output")


class PanelCommand(typer.core.TyperCommand):
    """Plain help with the options in panels (each option's ``rich_help_panel``), common ones first."""

    def format_options(self, ctx, formatter) -> None:
        groups: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                groups.setdefault(getattr(param, "rich_help_panel", None) or "Other options", []).append(record)
        for name in sorted(groups, key=lambda n: PANELS.index(n) if n in PANELS else len(PANELS)):
            with formatter.section(name):
                formatter.write_dl(groups[name])


app = typer.Typer(
    name="edgesmlp",
    help="Ship an sMLPNet image classifier to edge hardware at INT8. With no --weights, every command "
    "uses the bundled digits model and its data, so you can try the whole pipeline first.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    cls=OneLineErrors,
    rich_markup_mode=None,  # plain, compact help that reads well at 80 columns
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"edgesmlp {version('edgesmlp')}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Ship an sMLPNet image classifier to edge hardware at INT8. With no --weights, every command uses the
    bundled digits model and its data, so you can try the whole pipeline first."""

@app.command()
@friendly_errors
def inspect(
    weights: Annotated[Optional[Path], typer.Argument(help="Checkpoint to describe. Default: the bundled model.")] = None,
    variant: VariantOpt = None,
    ema: EmaOpt = False,
    arch: Annotated[Optional[str], typer.Option(metavar="NAME|list", help="Describe a variant of the paper without "
                                                "weights (config, parameters, MACs at 224); 'list' lists the "
                                                "family.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    job_file: JobFileOpt = None,
) -> None:
    """Describe a checkpoint (variant, config, input size, parameters, MACs, foldable norms, metadata), or with
    --arch a variant of the paper without weights.

    
    Examples:
      edgesmlp inspect
      edgesmlp inspect smlp_s.pth --ema --json
      edgesmlp inspect --arch list
      edgesmlp inspect --arch smlpnet_s_sum --json
    """
    from edgesmlp import api

    info = api.inspect(weights, arch=arch, variant=variant, ema=ema)
    typer.echo(json.dumps(info, indent=2) if as_json else api.describe(info, arch))


@app.command()
@friendly_errors
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .onnx file.")],
    weights: WeightsOpt = None,
    image_size: Annotated[Optional[int], typer.Option(help="Input side; must match the weights (multiple of 32).")] = None,
    batch: Annotated[int, typer.Option(min=1, metavar="N", help="Fixed batch size of the graph.")] = 1,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Make the batch dimension dynamic instead.")] = False,
    form: Annotated[Form, typer.Option(help="deploy: folded norms, no transposes (fast); reference: the "
                                       "official graph as loaded.")] = Form.deploy,
    variant: VariantOpt = None,
    ema: EmaOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT if it exists.")] = False,
    job_file: JobFileOpt = None,
) -> None:
    """Export FP32 ONNX, check it with onnx.checker, and prove ONNX Runtime matches the official
    PyTorch graph (max |logit diff| <= 1e-4).

    
    Examples:
      edgesmlp export -o digits.onnx
      edgesmlp export -w smlp_t.pth -o smlp_t.onnx --dynamic-batch
    """
    from edgesmlp import api

    result = api.export(output, weights, image_size=image_size, batch=batch, dynamic_batch=dynamic_batch,
                        form=form.value, variant=variant, ema=ema, force=force)
    typer.echo(
        f"wrote {result.path} ({form.value} form, opset {result.opset}, batch {result.batch}, "
        f"{result.path.stat().st_size / 1e6:.2f} MB); ONNX Runtime vs PyTorch max |diff| {result.max_abs_diff:.2e}"
    )


MIXED = [n for n in targets.names() if targets.get(n).mixed_precision()]  # targets that can keep layers in float
SHIPPING_HELP = "; ".join(f"{t.name}: {t.summary}" for t in map(targets.get, targets.names()) if t.ships)


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers such as 0.485,0.456,0.406; got {text!r}") from None


def _target_names(values: list[str] | None) -> tuple[str, ...] | None:
    """Targets as given, repeated (-t a -t b) or comma-separated (-t a,b); checked against the registry."""
    if not values:
        return None
    return tuple(targets.resolve(name.strip()) for value in values for name in value.split(",") if name.strip())


def _first_line(text: str) -> None:
    """On a terminal, say at once what started (loading torch and the model takes seconds); in a pipe, stay quiet
    so that an error stays the only line."""
    if sys.stderr.isatty():
        typer.echo(text, err=True)


def _finish(report, gate, wrote: str, next_step: str, wide: bool, as_json: bool = False,
            verbose: bool = False) -> None:
    """The table, a legend for any mark it uses, then three lines: what was written, the verdict against the
    budget (``gate``, ``api.check``'s) with its margin, and the next command; exit 1 on FAIL. The reasons behind
    the numbers go to ``--verbose`` (and to report.md/html). With ``as_json``, one JSON object on stdout
    (``verdict_json``) and the rest on stderr."""
    def say(text: str, indent: str = "  ") -> None:
        typer.echo(textwrap.fill(text, 80, subsequent_indent=indent, break_on_hyphens=False,
                                 break_long_words=False), err=as_json)

    if not as_json:
        typer.echo(report.table(wide))
        for line in report.legend():
            say(line)
    explain = report.explanations(verbose) if verbose or not gate.ok else []  # on FAIL, what the search found
    for note in explain:
        say(f"note: {note}")
    if verbose:
        phases = {k: v for k, v in (report.data.get("seconds") or {}).items() if isinstance(v, (int, float))}
        if phases:
            say("seconds: " + ", ".join(f"{name} {value:.1f}" for name, value in phases.items()))
    say(wrote)
    if as_json:
        typer.echo(verdict_json(gate, report.data["results"]))
    elif gate.ok:
        say(f"PASS: {'; '.join(gate.passes) or 'nothing to compare'}" + ("" if verbose else
            " (--verbose for why)"))
    else:
        for violation in gate.violations:
            say(f"FAIL: {violation}")
    say(f"next: {next_step}", "      ")
    if not gate.ok:
        raise typer.Exit(1)


def verdict_json(gate, results: list[dict], **extra) -> str:
    """What --json prints: ``{"verdict": "PASS" | "FAIL", "violations": [...], "results": [the report's rows]}``."""
    return json.dumps({"verdict": "PASS" if gate.ok else "FAIL", "violations": list(gate.violations),
                       **extra, "results": results}, indent=2)


@app.command(cls=PanelCommand)
@friendly_errors
@_with_target_options("preset", "bias_correction", "smooth_quant", "activation_range", "calib_batch", "ignored",
                      "calib_method", "percentile", "weight_bits", "fuse", "token_mixing")
@_with_shared_options("variant", "ema", "verbose", "model_cache", "quiet")
def quantize(
    ctx: typer.Context,
    target: Annotated[str, typer.Option("--target", "-t", metavar="[" + "|".join(
        n for n in targets.names() if targets.get(n).ships) + "]", rich_help_panel="Input", help="Where the INT8 model will run. "
                                        + SHIPPING_HELP + ".")] = targets.DEFAULT,
    weights: WeightsOpt = None,
    calib: Annotated[Optional[Path], typer.Option(rich_help_panel="Input", help="Calibration images: a folder, an ImageFolder tree, or a "
                                                  "list file of 'path[,label]'. Default: the bundled digits calib split.")] = None,
    val: Annotated[Optional[Path], typer.Option(rich_help_panel="Input", help="Validation images (an ImageFolder tree or labelled list gives "
                                                "top-1/top-5). Default: the bundled digits val split.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", rich_help_panel="Output", help="Output folder; artifacts go to OUTPUT/<target>/. "
                                                   "Default: edgesmlp-out (or the next free edgesmlp-out-N).")] = None,
    force: Annotated[bool, typer.Option("--force", rich_help_panel="Output", help="Replace OUTPUT/<target> if it exists.")] = False,
    calib_size: Annotated[int, typer.Option(rich_help_panel="Input", help="Calibration images sampled (deterministically, see --seed).")] = 300,
    seed: Annotated[int, typer.Option(rich_help_panel="Input", help="Seed for sampling the calibration images.")] = 0,
    form: Annotated[Form, typer.Option(rich_help_panel="Input", help="deploy (fast, no transposes) or reference (the official graph).")] = Form.deploy,
    image_size: Annotated[Optional[int], typer.Option(rich_help_panel="Preprocessing", help="Input side (must match the weights).")] = None,
    crop_pct: Annotated[Optional[float], typer.Option(rich_help_panel="Preprocessing", help="Centre-crop fraction; resize the shorter side to "
                                                      "size/crop_pct first. Default: the checkpoint's (0.875 for ImageNet).")] = None,
    interpolation: Annotated[Optional[str], typer.Option(metavar="[bicubic|bilinear|nearest|lanczos]", rich_help_panel="Preprocessing", help="bicubic, bilinear, nearest or lanczos.")] = None,
    mean: Annotated[Optional[str], typer.Option(metavar="R,G,B", rich_help_panel="Preprocessing", help="Per-channel mean, e.g. 0.485,0.456,0.406.")] = None,
    std: Annotated[Optional[str], typer.Option(metavar="R,G,B", rich_help_panel="Preprocessing", help="Per-channel std, e.g. 0.229,0.224,0.225.")] = None,
    threads: Annotated[int, typer.Option(rich_help_panel="Timing", help="CPU threads for every runtime (0: one per core).")] = 0,
    latency_seconds: LatencySecondsOpt = 1.0,
    max_drop: Annotated[float, typer.Option(metavar="POINTS", rich_help_panel="Accuracy budget", help="The accuracy budget: top-1 points INT8 may lose "
                                            "against FP32 (exit 1 when the validation images say it lost more). "
                                            "Unlabelled search images bound it by agreement.")] = DEFAULT_MAX_DROP,
    min_agreement: Annotated[Optional[float], typer.Option(metavar="PERCENT", rich_help_panel="Accuracy budget", help="The budget without labels: the % of "
                                                           "images on which INT8 keeps FP32's top class (e.g. 99.5).")] = None,
    fallback: Annotated[str, typer.Option(metavar="[auto|off]", rich_help_panel="Accuracy budget", help="auto: when full INT8 misses the budget on the "
                                          "search images, keep the fewest, most sensitive layers in float until "
                                          "it meets it (then verify on --val); off: the budget is only a floor.")] = "auto",
    max_float: Annotated[float, typer.Option(metavar="FRACTION", rich_help_panel="Accuracy budget", help="--fallback auto keeps at most this share of the "
                                             "quantized layers in float, and fails fast, with the trade-off it found, "
                                             "when that is not enough.")] = 0.2,
    ranking: Annotated[str, typer.Option(metavar="[auto|exact|first-order]", rich_help_panel="Accuracy budget",
                                         help="How --fallback auto orders the layers: exact (the model run once "
                                         "per layer), first-order (one forward and one backward pass), or auto "
                                         "(first order from 100 M MACs on).")] = "auto",
    search: Annotated[Optional[Path], typer.Option(rich_help_panel="Accuracy budget", help="Images --fallback auto meets the budget on (a folder, "
                                                   "ImageFolder tree or list; labelled or not), e.g. a split of "
                                                   "your validation data that --val does not hold. Default: the "
                                                   "images of --calib its sample left out.")] = None,
    search_size: Annotated[int, typer.Option(metavar="N", rich_help_panel="Accuracy budget", help="Search images sampled (all, if fewer).")] = 1000,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
    method: Annotated[str, typer.Option(metavar="[ptq|qat]", rich_help_panel="QAT", help="ptq (post-training) or qat (fine-tune with the quantizers in the "
                                        "loop, distilling from the FP32 model).")] = "ptq",
    train: Annotated[Optional[Path], typer.Option(rich_help_panel="QAT", help="qat: training images (ImageFolder, folder or list; without "
                                                  "labels it distils only). Default: the bundled digits train split.")] = None,
    epochs: Annotated[int, typer.Option(rich_help_panel="QAT", help="qat: epochs over --train.")] = 3,
    lr: Annotated[float, typer.Option(rich_help_panel="QAT", help="qat: AdamW peak learning rate (cosine schedule).")] = 5e-5,
    batch_size: Annotated[int, typer.Option(rich_help_panel="QAT", help="qat: images per step (per process under torchrun).")] = 32,
    resume: Annotated[bool, typer.Option("--resume", rich_help_panel="QAT", help="qat: continue from OUT/<target>.qat-checkpoint.pt, written after "
                                         "every epoch.")] = False,
    job_file: JobFileOpt = None,
    **options,
) -> None:
    """INT8 quantization (PTQ or QAT) for a target, with an FP32 vs INT8 accuracy/latency report.

    Loads the weights, folds BatchNorm and LayerNorm, builds the transpose-free deploy form and
    calibrates on your images. openvino: NNCF INT8 IR compiled for the CPU. jetson: TensorRT-rule Q/DQ
    ONNX (checked by lint-qdq) plus build_engine.sh for the device; INT8 accuracy is emulated by ONNX
    Runtime here. FP32 and INT8 are evaluated on the validation images. With no options it runs the
    bundled digits model on its own data.

    The budget (--max-drop, --min-agreement) is met, with 95% confidence, on search images first (--search,
    else the images of --calib that calibration did not use): with --fallback auto, the layers INT8 hurts
    most stay in float until it is, and the report names them (kept_float); the validation images then
    verify it, and exit 1 says they did not.
    

    
    Examples:
      edgesmlp quantize
      edgesmlp quantize -t jetson -w smlp_t.pth --calib imagenet/train --val imagenet/val -o out
      edgesmlp quantize -t openvino --min-agreement 99.5 -w smlp_t.pth --calib imagenet/train --val imagenet/val
      edgesmlp quantize --method qat --train imagenet/train -w smlp_t.pth --calib imagenet/train --val imagenet/val
    """
    _first_line(f"edgesmlp quantize: target {target}, {weights or 'the bundled digits model'}")
    from edgesmlp import api

    name = targets.resolve(target)
    if method not in ("ptq", "qat"):
        raise ConfigError(f"--method {method!r} unknown: use ptq or qat")
    stray = [f"--{n.replace('_', '-')}" for n in _given(ctx, "train", "epochs", "lr", "batch_size", "resume")
             if method != "qat"]
    if stray:
        raise ConfigError(f"{', '.join(stray)} set{'s' if len(stray) == 1 else ''} up quantization-aware training, "
                          "which --method ptq does not run: add --method qat, or drop them")
    shared = Shared.pop(options)
    options = _target_options(ctx, **options)
    qat = (api.QATConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, train=train, resume=resume)
           if method == "qat" else None)
    result = api.quantize(
        weights, name, calib=calib, val=val, search=search, output=output, force=force, max_drop=max_drop,
        min_agreement=min_agreement, fallback=fallback, max_float=max_float, ranking=ranking, calib_size=calib_size,
        seed=seed, search_size=search_size, form=form.value, image_size=image_size, crop_pct=crop_pct,
        interpolation=interpolation, mean=_floats(mean, "--mean"), std=_floats(std, "--std"), threads=threads,
        latency_seconds=latency_seconds, model_cache=shared.model_cache, qat=qat, variant=shared.variant,
        ema=shared.ema, progress=not shared.quiet, log=_stderr, **options)
    if not result.report.data:  # a non-zero torchrun rank: rank 0 reports
        return
    files = sorted(p.name for p in result.folder.iterdir() if not p.name.startswith("."))
    _finish(result.report, result.gate, f"wrote {result.folder}/: {', '.join(files)}",
            targets.get(name).next_step.format(folder=result.folder, root=result.folder.parent), wide, as_json,
            shared.verbose)


@app.command("lint-qdq")
@friendly_errors
def lint_qdq(
    model: Annotated[Path, typer.Argument(help="A Q/DQ ONNX model (any, not only edgesmlp's).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    job_file: JobFileOpt = None,
) -> None:
    """Check a Q/DQ ONNX against TensorRT's INT8 rules; every finding names its node, rule and the TensorRT
    documentation it comes from.

    Errors (exit 1), what TensorRT refuses or would compute differently: uint8 or non-zero zero points,
    per-channel activation scales, weight scales on the wrong axis, dangling Q/DQ, opset < 13 (< 19 with FLOAT16
    scales). FP16-typed graphs (strongly typed TensorRT) are checked alike. Warnings
    (exit 0), what is only slower or stays in float: float weights or inputs, per-tensor weights, Concat
    inputs on different scales, Q/DQ before an op TensorRT runs in float, unfused residual Adds.
    

    
    Examples:
      edgesmlp lint-qdq out/jetson/model_int8_qdq.onnx
      edgesmlp lint-qdq model.onnx --json
    """
    from edgesmlp import api

    lint = api.lint_qdq(model)
    findings, errors = lint.findings, lint.errors
    if as_json:
        typer.echo(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        for f in findings:
            typer.echo(str(f))
        for rule in dict.fromkeys(f.rule for f in findings):
            typer.echo(f"  {rule}: {next(f.reference for f in findings if f.rule == rule)}")
        types = ", ".join(f"{n} {t}" for t, n in sorted(lint.float_types.items()))
        typer.echo(f"float tensors: {types or 'none'} (strongly typed TensorRT runs each in its type)")
        typer.echo(f"{model}: {errors} errors, {len(findings) - errors} warnings")
    raise typer.Exit(1 if errors else 0)


@app.command(cls=PanelCommand)
@friendly_errors
@_with_target_options("dla_core", "weight_bits", "fuse", "token_mixing")
@_with_shared_options("variant", "ema", "verbose", "model_cache", "quiet")
def bench(
    ctx: typer.Context,
    weights: WeightsOpt = None,
    target_list: Annotated[Optional[list[str]], typer.Option("--targets", "--target", "-t", metavar="NAME[,NAME]", rich_help_panel="Input", help="Targets to run, "
                           "repeated or comma-separated: " + ", ".join(targets.names()) + " (tensorrt is an alias "
                           "of jetson). Default: all; those not available here are listed as skipped with the "
                           "reason.")] = None,
    calib: Annotated[Optional[Path], typer.Option(rich_help_panel="Input", help="Calibration images (default: bundled digits calib split).")] = None,
    val: Annotated[Optional[Path], typer.Option(rich_help_panel="Input", help="Validation images (default: bundled digits val split).")] = None,
    batch: Annotated[int, typer.Option(min=1, metavar="N", rich_help_panel="Timing", help="Batch size for evaluation and the throughput column.")] = 8,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", rich_help_panel="Output", help="Folder for report.json/.md/.html "
                                                   "(default: edgesmlp-bench or the next free edgesmlp-bench-N).")] = None,
    from_dir: Annotated[Optional[Path], typer.Option("--from", "--bundle", rich_help_panel="Input", help="Bench an existing quantize output "
                                                     "(OUT, OUT/openvino or a Jetson bundle) instead of quantizing.")] = None,
    force: ForceOpt = False,
    calib_size: Annotated[int, typer.Option(rich_help_panel="Input", help="Calibration images sampled.")] = 300,
    threads: Annotated[int, typer.Option(rich_help_panel="Timing", help="CPU threads for every runtime, PyTorch included (0: one per core).")] = 0,
    latency_seconds: LatencySecondsOpt = 1.0,
    latency_iters: Annotated[int, typer.Option(min=3, metavar="N", rich_help_panel="Timing", help="At least this many timed batch-1 runs "
                                               "per row, whatever the time budget.")] = 20,
    max_drop: MaxDropOpt = DEFAULT_MAX_DROP,
    min_agreement: MinAgreementOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
    profile: Annotated[bool, typer.Option("--profile", rich_help_panel="Output", help="Add, per target and precision, the time per op type and "
                                          "the precision each layer executed in, from the runtime's own profiler "
                                          "(OpenVINO's performance counters, ONNX Runtime's profiler, TensorRT's "
                                          "engine inspector on the device).")] = False,
    job_file: JobFileOpt = None,
    **options,
) -> None:
    """Accuracy and latency of every target and precision on the same images, in one table.

    Writes report.json, report.md and a self-contained report.html (accuracy-versus-latency and latency
    distributions). A target that is not available is skipped with the reason; one that fails is
    listed as failed and the others still run (exit code 3 then). Gate the result with `edgesmlp check`.
    

    
    Examples:
      edgesmlp bench
      edgesmlp bench -t openvino,onnxruntime -o bench
      edgesmlp bench --from out --val imagenet/val -o bench
      edgesmlp bench --from out --profile
    """
    _first_line(f"edgesmlp bench: {'the outputs in ' + str(from_dir) if from_dir else weights or 'the bundled digits model'}")
    from edgesmlp import api

    shared = Shared.pop(options)
    report = api.bench(weights, targets=_target_names(target_list), calib=calib, val=val, source=from_dir,
                       output=output, force=force, max_drop=max_drop, min_agreement=min_agreement,
                       calib_size=calib_size, threads=threads, batch=batch, latency_seconds=latency_seconds,
                       latency_iters=latency_iters, profile=profile, model_cache=shared.model_cache,
                       variant=shared.variant, ema=shared.ema, progress=not shared.quiet,
                       log=_stderr, **_target_options(ctx, **options))
    if not report.data:  # a rank of torchrun other than 0: rank 0 reports
        return
    wrote = f"wrote {report.path.parent}/report.json, report.md, report.html"
    if report.failed:
        rows = report.data["results"]
        if as_json:
            failed = [f"{r['target']} failed: {r.get('note')}" for r in rows if r.get("status") == "failed"]
            typer.echo(json.dumps({"verdict": "FAIL", "violations": failed, "results": rows}, indent=2))
        else:
            typer.echo(report.table(wide))
        typer.echo(wrote, err=as_json)
        raise typer.Exit(3)
    gate = api.check(report, max_drop=max_drop, min_agreement=min_agreement, allow_empty=True)
    folder = report.path.parent
    _finish(report, gate, wrote, f"edgesmlp check {folder} --baseline OLD/report.json (or open "
            f"{folder}/report.html)", wide, as_json, shared.verbose)


@app.command(cls=PanelCommand)
@friendly_errors
def check(
    report: Annotated[Path, typer.Argument(help="report.json (or its folder) from edgesmlp quantize or bench.")],
    baseline: Annotated[Optional[Path], typer.Option(help="A previous report.json to compare against.")] = None,
    max_drop: Annotated[float, typer.Option(help="Allowed top-1 drop in points: INT8 vs its own target's FP32 "
                                            "(recomputed from the rows), and vs the baseline.")] = DEFAULT_MAX_DROP,
    latency: Annotated[str, typer.Option(metavar="[speedup|absolute|off]", help="How latency is compared with "
                                         "the baseline. speedup: each INT8 row's speedup over its float row, both "
                                         "timed in the same run, so a slower runner does not fail the gate; "
                                         "absolute: p50 against the baseline's, only beyond the noise (IQR) both "
                                         "runs measured.")] = "speedup",
    max_latency_regression: Annotated[float, typer.Option(metavar="FRACTION", help="Allowed loss of speedup, or "
                                                          "rise of p50 with --latency absolute (0.2 = 20%).")] = 0.2,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Pass a report with nothing to compare (no INT8 row with a "
                                              "float row); without it that fails.")] = False,
    min_agreement: MinAgreementOpt = None,
    allow_other_baseline: Annotated[bool, typer.Option("--allow-other-baseline", help="Compare with a baseline of "
                                                       "another model or validation set (refused without it).")] = False,
    as_json: JsonOpt = False,
    job_file: JobFileOpt = None,
) -> None:
    """The CI gate: exit 0 when every INT8 result is within --max-drop of its FP32 (and within the
    allowed regressions of --baseline), 1 when not, listing each violation; 2 for usage errors.

    
    Examples:
      edgesmlp check bench/report.json --max-drop 0.5
      edgesmlp check bench --baseline baseline/report.json
    """
    from edgesmlp import api

    current = api.Report.read(report)
    outcome = api.check(current, baseline, max_drop=max_drop, min_agreement=min_agreement, latency=latency,
                        max_latency_regression=max_latency_regression, allow_empty=allow_empty,
                        allow_other_baseline=allow_other_baseline)
    if as_json:
        for note in outcome.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(verdict_json(outcome, current.data["results"], checked=outcome.checked,
                                passes=list(outcome.passes)))
        raise typer.Exit(0 if outcome.ok else 1)
    for note in outcome.notes:
        typer.echo(f"note: {note}")
    for violation in outcome.violations:
        typer.echo(f"FAIL: {violation}")
    if outcome.ok:
        typer.echo(f"check passed: {outcome.checked} comparisons" + "".join(f"\n  ok: {p}" for p in outcome.passes))
    else:
        typer.echo(f"check failed ({len(outcome.violations)} violations): {outcome.checked} comparisons")
    raise typer.Exit(0 if outcome.ok else 1)


@app.command(cls=PanelCommand)
@friendly_errors
@_with_target_options("calib_method", "percentile", "preset")
@_with_shared_options("variant", "ema", "quiet")
def sensitivity(
    ctx: typer.Context,
    weights: WeightsOpt = None,
    target: Annotated[str, typer.Option("--target", "-t", metavar="[" + "|".join(MIXED) + "]", help="The INT8 "
                                        "graph to measure, calibrated as quantize does.")] = targets.DEFAULT_SENSITIVITY,
    calib: Annotated[Optional[Path], typer.Option(help="Calibration images (default: the bundled digits calib "
                                                  "split).")] = None,
    val: Annotated[Optional[Path], typer.Option(help="Held-out images to score on, never used to calibrate "
                                                "(default: the bundled digits val split).")] = None,
    images: Annotated[int, typer.Option(metavar="N", help="Validation images scored per layer.")] = 500,
    calib_size: Annotated[int, typer.Option(help="Calibration images sampled.")] = 300,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder for sensitivity.json and the "
                                                   "graphs (default: edgesmlp-sensitivity or the next free -N).")] = None,
    force: ForceOpt = False,
    threads: Annotated[int, typer.Option(help="CPU threads (0: one per core).")] = 0,
    top: Annotated[int, typer.Option(metavar="N", help="Rows of the ranked table to print.")] = 15,
    max_drop: MaxDropOpt = DEFAULT_MAX_DROP,
    min_agreement: MinAgreementOpt = None,
    max_float: Annotated[float, typer.Option(metavar="FRACTION", help="The suggested --ignore set holds at most "
                                             "this share of the layers.")] = 0.2,
    image_size: Annotated[Optional[int], typer.Option(help="Input side (must match the weights).")] = None,
    crop_pct: Annotated[Optional[float], typer.Option(help="Centre-crop fraction, as quantize.")] = None,
    interpolation: Annotated[Optional[str], typer.Option(metavar="[bicubic|bilinear|nearest|lanczos]",
                                                         help="Resize filter, as quantize.")] = None,
    mean: Annotated[Optional[str], typer.Option(metavar="R,G,B", help="Per-channel mean, as quantize.")] = None,
    std: Annotated[Optional[str], typer.Option(metavar="R,G,B", help="Per-channel std, as quantize.")] = None,
    job_file: JobFileOpt = None,
    **options,
) -> None:
    """Which layers INT8 hurts: each quantized layer left in float in turn, ranked by how much of INT8's
    divergence from FP32 (logit KL on held-out images) it removes, and the FP32-vs-INT8 cosine at the end
    of every block, so you see where the error starts. It ends with the --ignore line for quantize that
    keeps the fewest top-ranked layers in float to meet the budget (--max-drop, --min-agreement) there.

    \b
    Examples:
      edgesmlp sensitivity
      edgesmlp sensitivity -t openvino --min-agreement 99.5
      edgesmlp sensitivity -w smlp_t.pth --calib imagenet/train --val imagenet/val --images 2000
    """
    _first_line(f"edgesmlp sensitivity: {weights or 'the bundled digits model'}")
    from edgesmlp import api

    shared = Shared.pop(options)
    result = api.sensitivity(
        weights, targets.resolve(target), calib=calib, val=val, images=images, calib_size=calib_size, output=output,
        force=force, max_drop=max_drop, min_agreement=min_agreement, max_float=max_float, image_size=image_size,
        crop_pct=crop_pct, interpolation=interpolation, mean=_floats(mean, "--mean"), std=_floats(std, "--std"),
        threads=threads, variant=shared.variant, ema=shared.ema, progress=not shared.quiet, log=_stderr,
        **_target_options(ctx, **options))
    typer.echo(result.text(top))
    typer.echo(f"wrote {result.folder}/sensitivity.json, sensitivity.html")


data_app = typer.Typer(help="Bundled data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("digits")
@friendly_errors
def data_digits(
    output: Annotated[Path, typer.Argument(help="Folder to create, with train/, calib/ and val/ ImageFolder trees.")],
    force: ForceOpt = False,
    job_file: JobFileOpt = None,
) -> None:
    """Write the bundled digits splits as PNG ImageFolder trees (OUTPUT/<split>/<class>/<n>.png).

    
    Examples:
      edgesmlp data digits digits
    """
    from edgesmlp import api

    counts = api.write_digits(output, force=force)
    typer.echo(f"wrote {output}/: " + ", ".join(f"{split} {n} images" for split, n in counts.items()))


def _terminate(signum, frame) -> None:
    raise Terminated()


def run() -> None:
    """The `edgesmlp` command: SIGTERM unwinds like Ctrl-C, so every partial output is removed; third-party
    telemetry (OpenVINO's, NNCF's, ONNX Runtime's) stays off unless EDGESMLP_TELEMETRY=1; nothing is left in
    TMPDIR (PyTorch's exporter keeps its compile cache under the user's cache folder instead)."""
    if not sys.flags.utf8_mode and sys.getfilesystemencoding().lower() in ("ascii", "ansi_x3.4-1968"):
        # The C locale (LANG=C) decodes a non-ASCII path to surrogates that ONNX, ONNX Runtime and OpenVINO cannot
        # take: run again in Python's UTF-8 mode, the same arguments as the same bytes.
        os.execv(sys.executable, [sys.executable, "-X", "utf8", "-m", "edgesmlp", *sys.argv[1:]])
    signal.signal(signal.SIGTERM, _terminate)
    if os.environ.get("EDGESMLP_TELEMETRY") != "1":
        sys.modules.setdefault("openvino_telemetry", None)  # both fall back to their no-op stubs without it
        # ONNX Runtime otherwise writes a device id under ~/.cache/Microsoft and a .ses file into TMPDIR
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgesmlp"
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "torchinductor"))  # else TMPDIR/torchinductor_USER
    app()

"""Job files: a command's options in a TOML file, and the ``manifest.json`` a build writes, which is one too.

A job file holds ``option = value`` lines, keyed by the long option names (``calib-size`` or ``calib_size``).
Top-level keys apply to every command that takes them; a ``[quantize]``, ``[bench]``, ... table holds one
command's own, and wins. Relative paths are read from the file's folder. A manifest's ``job`` entry is
what its build was given, with absolute paths, so ``quantize --config OUT/openvino/manifest.json`` rebuilds it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgesmlp.errors import InputError

if TYPE_CHECKING:
    from edgesmlp.jobs.spec import QuantizeRequest
    from edgesmlp.targets.base import Target, TargetConfig


def key(name: str) -> str:
    """An option's key in a job file: ``--calib-size``, ``calib-size`` and ``calib_size`` are ``calib_size``."""
    return name.strip().lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class JobFile:
    """What a job file gives one command: ``values`` by ``key``, and whether it is a build's manifest (whose
    entries other commands may not take: they are skipped, not refused)."""

    path: Path
    values: dict
    manifest: bool

    key = staticmethod(key)

    def resolve(self, value: str) -> str:
        """A path from the file, read from the file's folder when it is relative."""
        return str(value if Path(value).is_absolute() else (self.path.parent / value))


def read(path: Path, command: str, commands: set[str]) -> JobFile:
    """The options for ``command`` in the job file at ``path``."""
    if not path.is_file():
        raise InputError(f"{path}: no such job file; give a .toml file of option = value lines, or the "
                         "manifest.json a build wrote")
    if path.suffix.lower() == ".json":
        from edgesmlp.artifacts import strict_json

        try:
            data = strict_json(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise InputError(f"{path} is not valid JSON ({type(e).__name__}): give a manifest.json a build wrote, "
                             "or a .toml job file") from None
        if not isinstance(data, dict) or "edgesmlp_manifest" not in data:
            raise InputError(f"{path} is not an edgesmlp manifest.json: write the options in a .toml job file")
        if not isinstance(data.get("job"), dict):
            raise InputError(f"{path} was written by an edgesmlp that did not record its job: build it again with "
                             "this version to replay it")
        return JobFile(path, {key(k): v for k, v in data["job"].items()}, True)
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise InputError(f"{path} is not valid TOML ({' '.join(str(e).split())}): write option = value lines, "
                         "e.g. calib = \"images/train\"") from None
    values = {key(k): v for k, v in data.items() if not isinstance(v, dict)}
    for table, entries in data.items():
        if isinstance(entries, dict):
            if table not in commands:
                raise InputError(f"{path}: [{table}] is not an edgesmlp command: use one of "
                                 f"{', '.join(sorted(commands))}, or top-level keys")
            if table == command:
                values.update({key(k): v for k, v in entries.items()})
    return JobFile(path, values, False)


def entries(request: QuantizeRequest, target: Target, config: TargetConfig, weights: Path | None) -> dict:
    """What a quantize job was given, as job-file entries (absolute paths; defaults left out where None), so that
    ``quantize --config manifest.json`` builds the same artifacts from the same images."""
    from edgesmlp.targets.base import deploy_only, options_of

    def where(path):  # images given in memory are named, not replayable: a replay says there is no such file
        return str(Path(path).resolve()) if isinstance(path, (str, Path)) else getattr(path, "origin", None)

    job = {"target": target.name, "weights": where(weights), "calib": where(request.calibration.images),
           "calib_size": request.calibration.size, "seed": request.calibration.seed, "val": where(request.val),
           "form": request.form.value, "threads": request.run.threads, "latency_seconds": request.run.latency_seconds,
           "max_drop": request.max_drop, "min_agreement": request.min_agreement, "fallback": request.fallback,
           "max_float": request.max_float, "ranking": request.ranking, "search": where(request.search), "search_size": request.search_size,
           "method": "qat" if request.qat is not None else "ptq"}
    for name, value in asdict(request.preprocess).items():
        job[name] = ",".join(map(str, value)) if isinstance(value, tuple) else value
    if request.qat is not None:
        job.update(train=where(request.qat.train), epochs=request.qat.epochs, lr=request.qat.lr,
                   batch_size=request.qat.batch_size)
    skipped = deploy_only(target) if request.form.value == "reference" else set()  # it took none of them
    for name, value in options_of(target, config).items():
        if name not in skipped:
            job["ignore" if name == "ignored" else name] = list(value) if isinstance(value, tuple) else value
    return {k: v for k, v in job.items() if v is not None}

"""`edgesmlp bench`: every available target and precision on the same images, in one table and report.

Without ``--from``, each target builds its artifacts into the report's folder and loads them back, so
what is timed is what ships; with ``--from``, each target loads what an earlier ``quantize`` wrote,
which is how engines are measured on the device. A target that is not available is a "skipped" row
with the reason; one that crashes is a "failed" row with the reason, and the others still run.
Agreement and cosine compare with the first row; a row's drop is against its own target's float row
(the first row where the target has none).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edgesmlp import targets
from edgesmlp.artifacts import reserved_dir
from edgesmlp.calibration.preprocess import Preprocess
from edgesmlp.calibration.sources import open_images
from edgesmlp.errors import InputError, reason
from edgesmlp.jobs.evaluate import Evaluation, evaluate_runners, measure_target
from edgesmlp.jobs.inputs import check_default_fits, check_output, origin, output_candidates, reads
from edgesmlp.jobs.ranks import scratch, world
from edgesmlp.jobs.report import VERSIONED, Result, build_report, model_info, write_report
from edgesmlp.jobs.spec import BenchRequest
from edgesmlp.precision import accuracy_reference
from edgesmlp.targets.base import Build, Log, Target
from edgesmlp.timing import Phases, library_versions, machine_info

DEFAULT_OUTPUT = Path("edgesmlp-bench")


@dataclass
class BenchOutcome:
    directory: Path
    report: dict

    @property
    def failed(self) -> bool:
        return any(r["status"] == "failed" for r in self.report.get("results", []))


def resolve_targets(names: tuple[str, ...] | None) -> tuple[str, ...]:
    resolved: list[str] = []
    for name in names or targets.names():
        name = targets.resolve(name)
        if name not in resolved:
            resolved.append(name)
    return tuple(resolved)


def _config(request: BenchRequest, target: Target):
    return next((c for c in request.configs if isinstance(c, target.config_type)), None) or target.config_type()


def run_bench(request: BenchRequest, log: Log = print) -> BenchOutcome:
    names = resolve_targets(request.targets)
    rank, size = world()
    candidates = output_candidates(request.output, DEFAULT_OUTPUT)
    if rank == 0:
        check_output(candidates(0), request.output is not None, request.force,
                     {**reads(request), "--from": request.from_dir})
    outputs = _quantize_outputs(request.from_dir) if request.from_dir is not None else None  # checked before work
    phases = Phases()
    output = (reserved_dir(candidates, request.force, explicit=request.output is not None, log=log) if rank == 0
              else scratch("bench"))
    with output as (directory, tmp):
        with phases("load and build" if outputs is None else "load"):
            if outputs is None:
                builds, rows, model, preprocess, val_set = _build_all(names, request, tmp / "artifacts", log)
            else:
                builds, rows, model, preprocess, val_set = _load_all(names, request, *outputs, log)
        measured, evaluation = _measure(builds, val_set, preprocess, request, log, phases, timed=rank == 0)
        if rank > 0:  # under torchrun every rank evaluated its share; rank 0 alone times the rows and reports
            return BenchOutcome(directory, {})
        results = rows + measured
        order = {name: i for i, name in enumerate(names)}
        results.sort(key=lambda r: order.get(r.target, len(order)))
        _fill_drops(results)
        report = build_report(results, model, _data(val_set, evaluation, request),
                              {**machine_info(), "threads": request.run.cpu_threads}, library_versions(*VERSIONED),
                              [n for b in builds.values() for n in b.notes])
        report["kind"] = "bench"
        report["targets"] = list(names)  # what was asked: check gates these rows only
        report["ranks"] = size  # processes the validation images were shared over (latency: rank 0 alone)
        report["seconds"] = phases.to_dict(evaluate_by_row=evaluation.seconds if evaluation else {})
        report["budget"] = {"max_drop": request.max_drop, "min_agreement": request.min_agreement}
        report["reference"] = next(iter(builds), None)
        if outputs is None:  # with --from, each target folder's manifest.json holds the config it was built with
            report["configs"] = {name: _config(request, targets.get(name)).to_dict() for name in builds}
        if request.profile and evaluation is not None:
            report["profiles"] = _profiles(builds, evaluation.sample[:1], log)
        write_report(tmp, report)
        from edgesmlp.jobs.report_html import write_html

        write_html(tmp / "report.html", report)
    return BenchOutcome(directory, report)


def _failed_row(name: str, e: Exception, log: Log) -> Result:
    log(f"{name} failed: {reason(e)}")
    return Result(target=name, precision="-", status="failed", note=reason(e))


def _build_all(names, request: BenchRequest, folder: Path, log: Log):
    """Quantize for every available target, then load each target's artifacts back, as they ship."""
    from edgesmlp.deploy import to_deploy
    from edgesmlp.jobs.inputs import open_inputs
    from edgesmlp.jobs.quantize import checkpoint_info
    from edgesmlp.targets.base import Job

    inputs = open_inputs(request, log)
    ckpt, preprocess, val_set, calib = inputs.ckpt, inputs.preprocess, inputs.val_set, inputs.calib
    model = to_deploy(ckpt.model) if request.form.value == "deploy" else ckpt.model
    builds, rows = {}, []
    for name in names:
        target = targets.get(name)
        reason = target.available()
        if reason:
            rows.append(Result(target=name, precision="-", status="skipped", note=reason))
            log(f"skipping {name}: {reason}")
            continue
        log(f"preparing {name}")
        config = _config(request, target)
        try:
            target.check(config, request.form.value)
            (folder / name).mkdir(parents=True)
            job = Job(ckpt, model, request.form.value, preprocess, calib.x, config, request.run)
            builds[name] = _built_then_loaded(target, job, folder / name, log)
        except Exception as e:  # noqa: BLE001 - a target that fails becomes a failed row
            rows.append(_failed_row(name, e, log))
    return builds, rows, checkpoint_info(ckpt), preprocess, val_set


def _built_then_loaded(target: Target, job, folder: Path, log: Log) -> Build:
    """``build`` into ``folder``, then ``load`` it back, keeping the quantize time ``build`` measured. The notes are
    ``load``'s, so a report reads the same whether bench built the artifacts or read them with --from."""
    said: set[str] = set()

    def build_log(line: str) -> None:
        said.add(line)
        log(line)

    built = target.build(job, folder, build_log)
    # A build that loads its own artifacts (onnxruntime) has logged their warnings already: not twice.
    loaded = target.load(folder, job.config, job.run, lambda line: None if line in said else log(line))
    seconds = {v.precision: v.quantize_seconds for v in built.variants}
    for v in loaded.variants:
        v.quantize_seconds = v.quantize_seconds if v.quantize_seconds is not None else seconds.get(v.precision)
    return loaded


def _load_all(names, request: BenchRequest, folders: dict[str, Path], manifest: dict, log: Log):
    """Each target loads what an earlier `quantize` wrote; no checkpoint is loaded unless a target needs it."""
    weights = manifest["weights"]
    model = model_info(weights["path"], weights.get("bundled", False), weights["sha256"], weights["taken"],
                       manifest["model"], _variant_name(manifest["model"]))
    preprocess = Preprocess(**{**manifest["preprocess"], **{k: v for k, v in vars(request.preprocess).items()
                                                            if v is not None}})
    check_default_fits(weights.get("bundled", False), request.val, "--val", Path(weights["path"]).name)
    val_set = open_images(request.val, "val", manifest["model"]["num_classes"])
    builds, rows = {}, []
    for name in names:
        target = targets.get(name)
        folder = next((folders[n] for n in (target.reads or folders) if n in folders), None)
        reason = target.available() if folder is not None else f"{request.from_dir} has no output for it"
        stand_in = target.emulate(folder, _config(request, target), request.run, log) if folder and reason else None
        if reason and stand_in is None:
            rows.append(Result(target=name, precision="-", status="skipped", note=reason))
            continue
        if stand_in is not None:
            log(f"{name}: {reason}; its artifacts run emulated here")
        try:
            if target.reads is not None:  # it loads this folder's artifacts (torch, reads=None, loads the weights)
                _check_files(folder)
            builds[name] = stand_in or target.load(folder, _config(request, target), request.run, log)
        except Exception as e:  # noqa: BLE001
            rows.append(_failed_row(name, e, log))
    return builds, rows, model, preprocess, val_set


def _check_files(folder: Path) -> None:
    """Refuse a quantize output whose files differ from the SHA-256 its manifest recorded (older manifests record
    none): the row would report a model the run never built."""
    from edgesmlp.artifacts import sha256_file

    recorded = _read_manifest(folder).get("files", {})
    if not isinstance(recorded, dict):
        raise InputError(f"{folder / 'manifest.json'}: 'files' is not a name -> SHA-256 map; re-run `edgesmlp quantize`")
    _check_external_data(folder)
    for name, digest in recorded.items():
        path = folder / str(name)
        if Path(str(name)).name != name or not path.is_file():
            raise InputError(f"{path} is listed in its manifest but missing: copy the whole folder quantize wrote")
        if sha256_file(path) != digest:
            raise InputError(f"{path} changed since quantize wrote it (its SHA-256 differs from the manifest's): "
                             "re-run `edgesmlp quantize`, or restore the file")


def _check_external_data(folder: Path) -> None:
    """Refuse an ONNX in ``folder`` whose weights point outside it (``../``, an absolute path): loading it would read
    whatever file that names."""
    import onnx

    for path in sorted(folder.glob("*.onnx")):
        model = onnx.load(str(path), load_external_data=False)
        for tensor in model.graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            inside = Path(os.path.realpath(folder / location)).is_relative_to(os.path.realpath(folder))
            if not location or Path(location).is_absolute() or not inside:
                raise InputError(f"{path}: tensor {tensor.name!r:.60} keeps its data in {location!r:.80}, outside the "
                                 "folder: a bundle's weights live beside its graph; re-run `edgesmlp quantize`")


def _variant_name(config: dict) -> str | None:
    from edgesmlp.config import ModelConfig

    return ModelConfig(**config).variant


def _quantize_outputs(root: Path) -> tuple[dict[str, Path], dict]:
    """``{target: folder}`` of a quantize output (OUT, or one OUT/<target> folder), and one manifest."""
    if not root.is_dir():
        raise InputError(f"--from {root}: no such folder; give the -o folder of `edgesmlp quantize` or a bundle in it")
    if (root / "manifest.json").is_file():  # a target folder itself (OUT/openvino, a Jetson bundle)
        manifest = _read_manifest(root)
        return {manifest.get("target", root.name): root}, manifest
    folders = {d.name: d for d in sorted(root.iterdir()) if (d / "manifest.json").is_file()}
    if not folders:
        raise InputError(f"{root} holds no quantize output (no manifest.json): run `edgesmlp quantize` first, or "
                         "drop --from to quantize as part of the benchmark")
    return folders, _read_manifest(next(iter(folders.values())))


# The fields bench --from reads, and their types: checked before any of them is used.
MANIFEST_FIELDS = {("weights", "path"): str, ("weights", "sha256"): str, ("weights", "taken"): str,
                   ("model",): dict, ("model", "num_classes"): int, ("model", "image_size"): int,
                   ("preprocess",): dict}


def _read_manifest(folder: Path) -> dict:
    """The manifest of a quantize output, validated: its version, the type of every field bench reads, and the
    model and preprocessing it records (which must build)."""
    from edgesmlp.artifacts import strict_json
    from edgesmlp.config import ModelConfig
    from edgesmlp.errors import EdgesmlpError
    from edgesmlp.jobs.spec import MANIFEST_VERSION

    path = folder / "manifest.json"
    redo = "re-run `edgesmlp quantize`"
    try:
        manifest = strict_json(path.read_text())
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(f"{path} is not an edgesmlp manifest ({type(e).__name__}: {str(e)[:80]}): {redo}") from None
    version = manifest.get("edgesmlp_manifest") if isinstance(manifest, dict) else None
    if type(version) is not int:
        raise InputError(f"{path} is not an edgesmlp manifest (no edgesmlp_manifest version): {redo}")
    if version > MANIFEST_VERSION:
        raise InputError(f"{path} is manifest version {version}, written by a newer edgesmlp; this one reads version "
                         f"{MANIFEST_VERSION} and older: upgrade edgesmlp, or {redo}")
    for keys, kind in MANIFEST_FIELDS.items():
        value = manifest
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if type(value) is not kind:
            raise InputError(f"{path} is not an edgesmlp manifest: {'.'.join(keys)} is {value!r:.60}, not "
                             f"{'a' if kind is not int else 'an'} {kind.__name__}: {redo}")
    if "target" in manifest and not (isinstance(manifest["target"], str) and manifest["target"].isprintable()):
        raise InputError(f"{path} is not an edgesmlp manifest: target is {manifest['target']!r:.60}: {redo}")
    try:
        ModelConfig(**manifest["model"])
        Preprocess.from_record(manifest["preprocess"], f"{path} (preprocess)")
    except (TypeError, ValueError, EdgesmlpError) as e:
        raise InputError(f"{path} records a model or preprocessing edgesmlp cannot use ({str(e)[:160]}): {redo}") from None
    return manifest


def _measure(builds: dict[str, Build], val_set, preprocess: Preprocess, request: BenchRequest,
             log: Log, phases: Phases, timed: bool = True) -> tuple[list[Result], Evaluation | None]:
    runners, variants = {}, {}
    with phases("compile"):
        for target, build in builds.items():
            for v in build.variants:
                key = f"{target}/{v.precision}"
                runners[key], variants[key] = v.make_runner(request.run.throughput_batch).prepare(), (target, v)
    if not runners:
        return [], None
    with phases("evaluate"):
        evaluation = evaluate_runners(runners, val_set, preprocess, request.run.throughput_batch)
    if not timed:
        return [], evaluation
    results = []
    for target, build in builds.items():
        ok = [v for v in build.variants if f"{target}/{v.precision}" not in evaluation.failures]
        accuracy = {v.precision: evaluation.accuracy[f"{target}/{v.precision}"] for v in ok}
        with phases("timing"):
            rows, failures = measure_target(target, ok, accuracy, evaluation.sample, request.run, log,
                                            {v.precision: runners[f"{target}/{v.precision}"] for v in ok})
        failures.update({v.precision: evaluation.failures[f"{target}/{v.precision}"] for v in build.variants
                         if v not in ok})
        results += rows
        results += [Result(target=target, precision=v.precision, runtime=v.runtime, status="failed",
                           note=failures[v.precision], size_mb=v.size_mb, quantize_seconds=v.quantize_seconds)
                    for v in build.variants if v.precision in failures]
    return results, evaluation


PROFILE_RUNS = 20


def _profiles(builds: dict[str, Build], x, log: Log) -> list[dict]:
    """Each variant's own runtime profiler at batch 1: time per op type, and the precision each layer executed in,
    read off the runtime (OpenVINO's exec types, ONNX Runtime's kernels, TensorRT's engine inspector)."""
    out = []
    for target, build in builds.items():
        for v in build.variants:
            log(f"profiling {target}/{v.precision}")
            entry = {"target": target, "precision": v.precision, "runtime": v.runtime}
            try:
                profile = v.make_runner(1).profile(x, PROFILE_RUNS)
            except Exception as e:  # noqa: BLE001 - a profiler that fails is noted, the report still ships
                out.append({**entry, "note": f"profiling failed: {reason(e)}"})
                continue
            out.append({**entry, **profile.to_dict()} if profile is not None
                       else {**entry, "note": "this runtime has no per-layer profiler"})
    return out


def _fill_drops(results: list[Result]) -> None:
    ok = [r for r in results if r.status == "ok" and r.top1 is not None]
    reference = accuracy_reference(ok)
    for r in ok:
        base = reference(r.target)
        r.drop_top1 = None if base is None else base.top1 - r.top1


def _data(val_set, evaluation: Evaluation | None, request: BenchRequest) -> dict:
    """What was evaluated: images actually scored and unreadable ones skipped, not the file count."""
    return {"val": val_set.origin, "val_images": evaluation.images if evaluation else 0,
            "val_skipped": len(evaluation.skipped) if evaluation else 0,
            "labelled": evaluation.labelled if evaluation else None,
            "calib": origin(request.calibration.images), "calib_images": request.calibration.size,
            "from": str(request.from_dir) if request.from_dir else None}

"""`edgesmlp bench`: every available target and precision on the same images, in one table and report.

Rows: PyTorch eager FP32 (the reference), ONNX Runtime CPU (FP32, INT8 Q/DQ), OpenVINO CPU (FP32,
INT8) and TensorRT (FP16 or FP32, INT8) where TensorRT and a GPU are present. A target that is not
available is a "skipped" row with the reason; one that crashes is a "failed" row with the reason,
and the others still run. Agreement and cosine compare with the reference row; a row's drop is
against its own target's float row (the reference where the target has none).
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from edgesmlp.artifacts import atomic_dir
from edgesmlp.calibration.options import PreprocessOverrides, load_job_images, resolve_preprocess
from edgesmlp.calibration.preprocess import Preprocess
from edgesmlp.calibration.sources import open_images
from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.errors import ConfigError, EdgesmlpError, InputError, OutputExistsError
from edgesmlp.evaluate import Evaluation, evaluate_runners
from edgesmlp.pipeline import VERSIONED, model_info, variant_result
from edgesmlp.quantize.openvino_ptq import OpenVINOPTQConfig
from edgesmlp.report import Result, build_report, write_report
from edgesmlp.targets.base import Build, Job
from edgesmlp.timing import library_versions, machine_info

BENCH_TARGETS = {
    "torch": "edgesmlp.targets.torch_eager",
    "onnxruntime": "edgesmlp.targets.onnxruntime",
    "openvino": "edgesmlp.targets.openvino",
    "tensorrt": "edgesmlp.targets.jetson",
}
ALIASES = {"jetson": "tensorrt", "pytorch": "torch", "ort": "onnxruntime"}
DEFAULT_OUTPUT = Path("edgesmlp-bench")


@dataclass(frozen=True)
class BenchRequest:
    weights: Path | None = None
    variant: str | None = None
    ema: bool = False
    calib: Path | None = None
    val: Path | None = None
    targets: tuple[str, ...] = tuple(BENCH_TARGETS)
    batch: int = 8
    output: Path | None = None
    force: bool = False
    from_dir: Path | None = None  # an existing `quantize` output (OUT, OUT/openvino or OUT/jetson)
    form: str = "deploy"
    preprocess: PreprocessOverrides = field(default_factory=PreprocessOverrides)
    ptq: OpenVINOPTQConfig = field(default_factory=OpenVINOPTQConfig)
    qdq: object = None
    threads: int = 0
    eval_batch: int = 16
    latency_iters: int = 50
    dla_core: int | None = None


@dataclass
class BenchOutcome:
    directory: Path
    report: dict

    @property
    def failed(self) -> bool:
        return any(r["status"] == "failed" for r in self.report["results"])


def resolve_targets(names) -> tuple[str, ...]:
    resolved = []
    for name in names:
        name = ALIASES.get(name, name)
        if name not in BENCH_TARGETS:
            raise ConfigError(f"unknown target {name!r}: choose from {', '.join(BENCH_TARGETS)} (or jetson)")
        if name not in resolved:
            resolved.append(name)
    return tuple(resolved)


def bench_directory(request: BenchRequest) -> Path:
    if request.output is not None:
        if request.output.exists() and not request.force:
            raise OutputExistsError(f"{request.output} exists: pass --force to replace it, or choose another -o")
        return request.output
    n, path = 1, DEFAULT_OUTPUT
    while path.exists():
        n += 1
        path = Path(f"{DEFAULT_OUTPUT}-{n}")
    return path


def _from_manifest(request: BenchRequest) -> tuple[BenchRequest, dict[str, Path]]:
    """Point the request at the weights and preprocessing a quantize output recorded."""
    root = request.from_dir
    if (root / "manifest.json").is_file():  # a target folder itself (OUT/openvino, a Jetson bundle)
        manifest = json.loads((root / "manifest.json").read_text())
        folders = {manifest.get("target", root.name): root}
    else:  # an OUT folder holding target folders
        folders = {name: root / name for name in ("openvino", "jetson") if (root / name / "manifest.json").is_file()}
        if not folders:
            raise InputError(f"{root} holds no quantize output (no manifest.json): run `edgesmlp quantize` first, or "
                             "drop --from to quantize as part of the benchmark")
        manifest = json.loads(next(iter(folders.values())).joinpath("manifest.json").read_text())
    weights = None if manifest["weights"].get("bundled") else Path(manifest["weights"]["path"])
    overrides = PreprocessOverrides(**{k: v for k, v in manifest["preprocess"].items()
                                       if k in PreprocessOverrides.__dataclass_fields__})
    return replace(request, weights=request.weights or weights, preprocess=overrides), folders


def run_bench(request: BenchRequest, log=print) -> BenchOutcome:
    from edgesmlp.deploy import to_deploy

    targets = resolve_targets(request.targets)
    directory = bench_directory(request)
    # Every runtime gets the same, recorded thread count (PyTorch included), so rows are comparable.
    request = replace(request, threads=request.threads or os.cpu_count() or 1)
    torch.set_num_threads(request.threads)
    folders: dict[str, Path] = {}
    if request.from_dir is not None:
        request, folders = _from_manifest(request)
    ckpt = load_checkpoint(request.weights, variant=request.variant, ema=request.ema)
    preprocess = resolve_preprocess(ckpt, request.preprocess)
    options = {"ptq": request.ptq, "qdq": request.qdq, "form": request.form, "threads": request.threads,
               "dla_core": request.dla_core}
    directory.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(directory, force=request.force) as tmp:
        if request.from_dir is None:
            images = load_job_images(ckpt, preprocess, request.calib, request.val, request.ptq.calib_size,
                                     request.ptq.seed)
            model = to_deploy(ckpt.model) if request.form == "deploy" else ckpt.model
            job = Job(ckpt, model, request.form, preprocess, images, options)
            builds, rows = _build_all(targets, job, tmp / "artifacts", log)
            val_set = images.val_set
        else:
            job = Job(ckpt, ckpt.model, request.form, preprocess, None, options)
            builds, rows = _load_all(targets, folders, job, request, log)
            if request.val is None and not ckpt.bundled:
                raise InputError("--val is required to bench your own weights")
            val_set = open_images(request.val, "val", ckpt.config.num_classes)
        measured, evaluation = _measure(builds, val_set, preprocess, request, log)
        results = rows + measured
        order = {name: i for i, name in enumerate(targets)}
        results.sort(key=lambda r: order.get(r.target, len(order)))
        _fill_drops(results)
        report = build_report(results, model_info(ckpt), _data(val_set, evaluation, request), {**machine_info(),
                              "threads": request.threads}, library_versions(*VERSIONED),
                              [n for b in builds.values() for n in b.notes])
        report["kind"] = "bench"
        report["reference"] = next(iter(builds), None)
        write_report(tmp, report)
        from edgesmlp.report_html import write_html

        write_html(tmp / "report.html", report)
    return BenchOutcome(directory, report)


def _target(name: str):
    return importlib.import_module(BENCH_TARGETS[name])


def _build_all(targets, job: Job, folder: Path, log) -> tuple[dict[str, Build], list[Result]]:
    builds, rows = {}, []
    for name in targets:
        module = _target(name)
        reason = module.available()
        if reason:
            rows.append(Result(target=name, precision="-", status="skipped", note=reason))
            log(f"skipping {name}: {reason}")
            continue
        log(f"preparing {name}")
        try:
            builds[name] = module.bench_build(job, folder / name, log)
        except Exception as e:  # noqa: BLE001 - a target that fails becomes a failed row
            rows.append(Result(target=name, precision="-", status="failed", note=_reason(e)))
            log(f"{name} failed: {_reason(e)}")
    return builds, rows


def _load_all(targets, folders, job: Job, request: BenchRequest, log) -> tuple[dict[str, Build], list[Result]]:
    builds, rows = {}, []
    if "torch" in targets:
        builds["torch"] = _target("torch").bench_build(job, Path("."), log)
    sources = {"openvino": folders.get("openvino"), "tensorrt": folders.get("jetson"),
               "onnxruntime": folders.get("jetson")}
    for name in [t for t in targets if t != "torch"]:
        folder = sources[name]
        reason = _target(name).available() if folder is not None else f"{request.from_dir} has no output for it"
        if reason:
            rows.append(Result(target=name, precision="-", status="skipped", note=reason))
            continue
        try:
            if name == "onnxruntime":
                builds[name] = _bundle_onnxruntime(folder, request.threads)
            elif name == "tensorrt":
                builds[name] = _target(name).load(folder, request.threads, log, request.dla_core)
            else:
                builds[name] = _target(name).load(folder, request.threads)
        except Exception as e:  # noqa: BLE001
            rows.append(Result(target=name, precision="-", status="failed", note=_reason(e)))
    return builds, rows


def _bundle_onnxruntime(folder: Path, threads: int) -> Build:
    from edgesmlp.targets.base import Variant, folder_size_mb
    from edgesmlp.targets.jetson import EMULATED, FP32_ONNX, INT8_ONNX
    from edgesmlp.targets.onnxruntime import OnnxRuntimeRunner

    return Build([Variant("fp32", "ONNX Runtime CPU", lambda b, lat: OnnxRuntimeRunner(folder / FP32_ONNX, threads),
                          folder_size_mb(folder / FP32_ONNX)),
                  Variant("int8", EMULATED, lambda b, lat: OnnxRuntimeRunner(folder / INT8_ONNX, threads),
                          folder_size_mb(folder / INT8_ONNX))])


def _reason(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text if isinstance(e, EdgesmlpError) else f"{type(e).__name__}: {text}"


def _measure(builds: dict[str, Build], val_set, preprocess: Preprocess, request: BenchRequest,
             log) -> tuple[list[Result], Evaluation | None]:
    runners, variants = {}, {}
    for target, build in builds.items():
        for v in build.variants:
            key = f"{target}/{v.precision}"
            runners[key], variants[key] = v.make_runner(request.eval_batch, False), (target, v)
    if not runners:
        return [], None
    evaluation = evaluate_runners(runners, val_set, preprocess, request.eval_batch)
    results = []
    for key, (target, v) in variants.items():
        failure = evaluation.failures.get(key)
        if failure is None:
            try:
                results.append(variant_result(target, v, evaluation.accuracy[key], evaluation.sample, request.batch,
                                              request.latency_iters, log))
                continue
            except Exception as e:  # noqa: BLE001 - a runtime failing while timed fails its row only
                failure = _reason(e)
        results.append(Result(target=target, precision=v.precision, runtime=v.runtime, status="failed",
                              note=failure, size_mb=v.size_mb, quantize_seconds=v.quantize_seconds))
    return results, evaluation


def _fill_drops(results: list[Result]) -> None:
    ok = [r for r in results if r.status == "ok" and r.top1 is not None]
    reference = next((r for r in ok if r.target == "torch"), ok[0] if ok else None)
    for r in ok:
        base = next((b for b in ok if b.target == r.target and b.precision in ("fp32", "fp16")), reference)
        r.drop_top1 = base.top1 - r.top1


def _data(val_set, evaluation: Evaluation | None, request: BenchRequest) -> dict:
    """What was evaluated: images actually scored and unreadable ones skipped, not the file count."""
    return {"val": val_set.origin, "val_images": evaluation.images if evaluation else 0,
            "val_skipped": len(evaluation.skipped) if evaluation else 0,
            "labelled": evaluation.labelled if evaluation else None,
            "calib": str(request.calib or "bundled digits"), "calib_images": request.ptq.calib_size,
            "from": str(request.from_dir) if request.from_dir else None}

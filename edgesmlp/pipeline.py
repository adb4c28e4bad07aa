"""The quantize job: checkpoint -> fold -> deploy form -> calibrate -> INT8 per target -> evaluate -> report.

Each target writes its artifacts into a temporary folder that is renamed to ``OUT/<target>`` only
when the whole job, evaluation and report included, has succeeded.
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgesmlp.artifacts import atomic_dir
from edgesmlp.calibration.options import PreprocessOverrides, load_job_images, resolve_preprocess
from edgesmlp.checkpoint import Checkpoint, load_checkpoint
from edgesmlp.errors import ConfigError, OutputExistsError
from edgesmlp.evaluate import Accuracy, Evaluation, evaluate_runners, measure_latency
from edgesmlp.quantize.openvino_ptq import OpenVINOPTQConfig
from edgesmlp.report import Result, build_report, write_report
from edgesmlp.targets import TARGETS
from edgesmlp.targets.base import Build, Job, Variant
from edgesmlp.timing import library_versions, machine_info

DEFAULT_OUTPUT = Path("edgesmlp-out")
VERSIONED = ("edgesmlp", "torch", "numpy", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt")


@dataclass(frozen=True)
class QuantizeRequest:
    weights: Path | None = None
    variant: str | None = None
    ema: bool = False
    target: str = "openvino"
    calib: Path | None = None
    val: Path | None = None
    output: Path | None = None  # None: edgesmlp-out, or the next free edgesmlp-out-N
    force: bool = False
    form: str = "deploy"
    preprocess: PreprocessOverrides = field(default_factory=PreprocessOverrides)
    ptq: OpenVINOPTQConfig = field(default_factory=OpenVINOPTQConfig)
    qdq: object = None  # QDQConfig for the jetson target (None: its defaults)
    method: str = "ptq"  # ptq, or qat (fine-tune with the quantizers in the loop)
    train: Path | None = None  # QAT training images (default: the bundled digits train split)
    qat: object = None  # QATConfig (None: its defaults)
    resume: bool = False
    threads: int = 0  # 0: the runtime's default
    eval_batch: int = 16
    throughput_batch: int = 8
    latency_iters: int = 50


    def __post_init__(self) -> None:
        if self.method not in ("ptq", "qat"):
            raise ConfigError(f"--method {self.method!r} unknown: use ptq or qat")
        if self.form not in ("deploy", "reference"):
            raise ConfigError(f"--form {self.form!r} unknown: use deploy or reference")


@dataclass
class QuantizeOutcome:
    directory: Path
    report: dict


def output_directory(request: QuantizeRequest) -> Path:
    """``OUT/<target>``; refuses an existing one unless --force. No -o: the next free edgesmlp-out[-N]."""
    if request.output is not None:
        target_dir = request.output / request.target
        if target_dir.exists() and not request.force:
            raise OutputExistsError(f"{target_dir} exists: pass --force to replace it, or choose another -o")
        return target_dir
    n, root = 1, DEFAULT_OUTPUT
    while (root / request.target).exists():
        n += 1
        root = Path(f"{DEFAULT_OUTPUT}-{n}")
    return root / request.target


def target_module(name: str):
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}: choose one of {', '.join(TARGETS)}")
    return importlib.import_module(TARGETS[name])


def run_quantize(request: QuantizeRequest, log=print) -> QuantizeOutcome:
    from edgesmlp.deploy import to_deploy

    target = target_module(request.target)
    rank = _rank(request)
    target_dir = output_directory(request) if rank == 0 else Path(tempfile.mkdtemp()) / request.target
    options = {"ptq": request.ptq, "qdq": request.qdq, "form": request.form, "threads": request.threads,
               "method": request.method}
    target.check(options)
    ckpt = load_checkpoint(request.weights, variant=request.variant, ema=request.ema)
    preprocess = resolve_preprocess(ckpt, request.preprocess)
    images = load_job_images(ckpt, preprocess, request.calib, request.val, request.ptq.calib_size, request.ptq.seed)
    if images.calib.skipped:
        key, reason = images.calib.skipped[0]
        log(f"warning: skipped {len(images.calib.skipped)} unreadable calibration image(s), e.g. {key}: {reason}")
    if request.method == "qat":
        options.update(_qat_options(request, ckpt, target_dir))
    model = to_deploy(ckpt.model) if request.form == "deploy" else ckpt.model
    job = Job(ckpt, model, request.form, preprocess, images, options)
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target_dir, force=request.force) as tmp:
        build = target.build(job, tmp, log)
        if rank > 0:  # under torchrun only rank 0 evaluates and ships
            return QuantizeOutcome(target_dir, {})
        evaluation = evaluate_build(build, job, request, log)
        results = measure_build(build, evaluation, request, log)
        for path in build.scratch:
            path.unlink(missing_ok=True)
        report = make_report(request, job, build, evaluation, results)
        write_report(tmp, report)
        write_manifest(tmp, request, job, build)
    if request.method == "qat":
        options["checkpoint"].unlink(missing_ok=True)  # the job finished: nothing left to resume
    return QuantizeOutcome(target_dir, report)


def _rank(request: QuantizeRequest) -> int:
    if request.method != "qat":
        return 0
    from edgesmlp.quantize.qat import distributed

    return distributed()[0]


def _qat_options(request: QuantizeRequest, ckpt: Checkpoint, target_dir: Path) -> dict:
    from edgesmlp.calibration.sources import open_images
    from edgesmlp.errors import DataError
    from edgesmlp.quantize.qat import QATConfig

    if request.train is None and not ckpt.bundled:
        raise DataError("--method qat needs --train images for your own weights (an ImageFolder tree, a folder or a "
                        "list file); the bundled digits fit only the bundled model")
    config = request.qat or QATConfig()
    train = open_images(request.train, "train", ckpt.config.num_classes)
    identity = {"weights_sha256": ckpt.sha256, "target": request.target, "form": request.form,
                "model": json.dumps(ckpt.config.to_dict(), sort_keys=True)}
    checkpoint = target_dir.parent / f"{target_dir.name}.qat-checkpoint.pt"
    if request.resume:
        from edgesmlp.quantize.qat import load_resumable

        load_resumable(checkpoint, identity)  # refuse a foreign or missing checkpoint before any work
    return {"train": train, "qat": config, "resume": request.resume, "identity": identity, "checkpoint": checkpoint}


def evaluate_build(build: Build, job: Job, request: QuantizeRequest, log) -> Evaluation:
    runners = {v.precision: v.make_runner(request.eval_batch, False) for v in build.variants}
    evaluation = evaluate_runners(runners, job.images.val_set, job.preprocess, request.eval_batch)
    if evaluation.skipped:
        key, reason = evaluation.skipped[0]
        log(f"warning: skipped {len(evaluation.skipped)} unreadable validation image(s), e.g. {key}: {reason}")
    return evaluation


def variant_result(target: str, v: Variant, acc: Accuracy, sample, batch: int, iters: int, log) -> Result:
    """One report row: the variant's accuracy, then its latency at batch 1 and throughput at ``batch``."""
    log(f"timing {target} {v.precision.upper()} ({v.runtime})")
    latency = measure_latency(v.make_runner(1, True), v.make_runner(batch, False), sample, batch, iters)
    return Result(
        target=target, precision=v.precision, runtime=v.runtime, note=v.note, top1=acc.top1, top5=acc.top5,
        agreement=acc.agreement, cosine=acc.cosine, latency_ms_p50=latency.batch1.p50,
        latency_ms_p90=latency.batch1.p90, throughput_ips=latency.throughput_ips,
        throughput_batch=latency.throughput_batch, size_mb=v.size_mb, quantize_seconds=v.quantize_seconds,
        images=acc.count, latency_samples_ms=[round(t, 4) for t in latency.batch1.samples_ms],
    )


def measure_build(build: Build, evaluation: Evaluation, request: QuantizeRequest, log) -> list[Result]:
    results = [variant_result(request.target, v, evaluation.accuracy[v.precision], evaluation.sample,
                              request.throughput_batch, request.latency_iters, log) for v in build.variants]
    if results and results[0].top1 is not None:
        for r in results:
            r.drop_top1 = results[0].top1 - r.top1
    return results


def model_info(ckpt: Checkpoint) -> dict:
    return {"path": str(ckpt.path), "bundled": ckpt.bundled, "sha256": ckpt.sha256, "weights": ckpt.weights,
            "variant": ckpt.config.variant or "custom", "config": ckpt.config.to_dict(),
            "image_size": ckpt.config.image_size, "num_classes": ckpt.config.num_classes}


def make_report(request: QuantizeRequest, job: Job, build: Build, evaluation: Evaluation,
                results: list[Result]) -> dict:
    images = job.images
    data = {"val": images.val_set.origin, "val_images": evaluation.images, "val_skipped": len(evaluation.skipped),
            "calib": images.calib_set.origin, "calib_images": len(images.calib.keys),
            "calib_skipped": len(images.calib.skipped), "labelled": evaluation.labelled}
    notes = list(build.notes) + [
        f"Agreement and cosine compare each row's logits with the first row's on the same {evaluation.images} images."
    ]
    if not evaluation.labelled:
        notes.append("The validation images carry no labels: only agreement and cosine are reported.")
    machine = {**machine_info(), "threads": request.threads or "runtime default"}
    return build_report(results, model_info(job.ckpt), data, machine, library_versions(*VERSIONED), notes)


def write_manifest(folder: Path, request: QuantizeRequest, job: Job, build: Build) -> None:
    options = asdict(request)
    options["ptq"] = request.ptq.to_dict()
    options["qdq"] = request.qdq.to_dict() if request.qdq is not None else None
    options["qat"] = request.qat.to_dict() if request.qat is not None else None
    images = job.images
    manifest = {
        "edgesmlp_manifest": 1,
        "target": request.target,
        "command": " ".join(["edgesmlp", *sys.argv[1:]]) if sys.argv and "edgesmlp" in sys.argv[0] else None,
        "versions": library_versions(*VERSIONED),
        "weights": {"path": str(job.ckpt.path), "sha256": job.ckpt.sha256, "taken": job.ckpt.weights,
                    "bundled": job.ckpt.bundled},
        "model": job.ckpt.config.to_dict(),
        "form": job.form,
        "calibration": {"origin": images.calib_set.origin, "images": len(images.calib.keys),
                        "list_sha256": images.calib_set.fingerprint()},
        "validation": {"origin": images.val_set.origin, "list_sha256": images.val_set.fingerprint()},
        "preprocess": job.preprocess.to_dict(),
        "options": json.loads(json.dumps(options, default=str)),
        **build.manifest,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

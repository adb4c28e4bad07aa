"""The quantize job: checkpoint -> fold -> deploy form -> calibrate -> INT8 -> compile -> evaluate -> artifacts.

Everything is written into a temporary folder that is renamed to ``OUT/<target>`` only when the
whole job has succeeded.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgesmlp.artifacts import atomic_dir
from edgesmlp.calibration.options import JobImages, PreprocessOverrides, load_job_images, resolve_preprocess
from edgesmlp.checkpoint import Checkpoint, load_checkpoint
from edgesmlp.errors import OutputExistsError
from edgesmlp.evaluate import measure_latency, predict, score
from edgesmlp.quantize.openvino_ptq import OpenVINOPTQConfig
from edgesmlp.report import Result, build_report, write_report
from edgesmlp.timing import library_versions, machine_info

DEFAULT_OUTPUT = Path("edgesmlp-out")
VERSIONED = ("edgesmlp", "torch", "numpy", "onnx", "onnxruntime", "openvino", "nncf")


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
    threads: int = 0  # 0: the runtime's default
    eval_batch: int = 16
    throughput_batch: int = 8
    latency_iters: int = 50


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


def run_quantize(request: QuantizeRequest, log=print) -> QuantizeOutcome:
    from edgesmlp.deploy import to_deploy
    from edgesmlp.targets import openvino as ovt

    from edgesmlp.quantize.openvino_ptq import check_ignored, check_request, quantize_openvino

    target_dir = output_directory(request)
    ovt.require_openvino()
    check_request(request.ptq, deploy_form=request.form == "deploy")
    ckpt = load_checkpoint(request.weights, variant=request.variant, ema=request.ema)
    preprocess = resolve_preprocess(ckpt, request.preprocess)
    images = load_job_images(ckpt, preprocess, request.calib, request.val, request.ptq.calib_size, request.ptq.seed)
    _log_skipped(images, log)
    model = to_deploy(ckpt.model) if request.form == "deploy" else ckpt.model
    fp32 = ovt.to_openvino(model, ckpt.config.in_chans, ckpt.config.image_size)
    check_ignored(fp32, request.ptq)
    log(f"quantizing ({request.form} form, {len(images.calib.x)} calibration images, preset {request.ptq.preset.value})")
    start = time.perf_counter()
    int8 = quantize_openvino(fp32, images.calib.x.numpy(), request.ptq, deploy_form=request.form == "deploy")
    quantize_seconds = time.perf_counter() - start
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target_dir, force=request.force) as tmp:
        ovt.save_ir(int8, tmp / "model.xml")
        ovt.save_ir(fp32, tmp / "model_fp32.xml")
        results = _evaluate_openvino(request, tmp, images, quantize_seconds, log)
        report = _report(request, ckpt, images, results)
        write_report(tmp, report)
        _write_manifest(tmp, request, ckpt, images, preprocess)
    return QuantizeOutcome(target_dir, report)


def _log_skipped(images: JobImages, log) -> None:
    for name, loaded in (("calibration", images.calib), ("validation", images.val)):
        if loaded.skipped:
            key, reason = loaded.skipped[0]
            log(f"warning: skipped {len(loaded.skipped)} unreadable {name} image(s), e.g. {key}: {reason}")


def _evaluate_openvino(request: QuantizeRequest, folder: Path, images: JobImages, quantize_seconds: float,
                       log) -> list[Result]:
    from edgesmlp.targets import openvino as ovt

    ov = ovt.require_openvino()
    core, x = ov.Core(), images.val.x.numpy()
    labels = images.val.labels.numpy() if images.val.labels is not None else None
    results, reference = [], None
    for precision, xml in (("fp32", folder / "model_fp32.xml"), ("int8", folder / "model.xml")):
        model = core.read_model(str(xml))
        logits = predict(ovt.OpenVINORunner(model, request.eval_batch, request.threads), x, request.eval_batch,
                         f"Evaluating OpenVINO {precision.upper()}")
        reference = logits if reference is None else reference
        acc = score(logits, labels, reference)
        log(f"timing OpenVINO {precision.upper()}")
        latency = measure_latency(
            ovt.OpenVINORunner(model, 1, request.threads),
            ovt.OpenVINORunner(model, request.throughput_batch, request.threads, latency=False),
            x, request.throughput_batch, request.latency_iters,
        )
        results.append(Result(
            target="openvino", precision=precision, runtime="OpenVINO CPU", top1=acc.top1, top5=acc.top5,
            agreement=acc.agreement, cosine=acc.cosine, latency_ms_p50=latency.batch1.p50,
            latency_ms_p90=latency.batch1.p90, throughput_ips=latency.throughput_ips,
            throughput_batch=latency.throughput_batch, size_mb=ovt.ir_size_mb(xml), images=acc.count,
            quantize_seconds=quantize_seconds if precision == "int8" else None,
        ))
    if results[0].top1 is not None:
        for r in results:
            r.drop_top1 = results[0].top1 - r.top1
    return results


def _model_info(ckpt: Checkpoint) -> dict:
    return {"path": str(ckpt.path), "bundled": ckpt.bundled, "sha256": ckpt.sha256, "weights": ckpt.weights,
            "variant": ckpt.config.variant or "custom", "config": ckpt.config.to_dict(),
            "image_size": ckpt.config.image_size, "num_classes": ckpt.config.num_classes}


def _report(request: QuantizeRequest, ckpt: Checkpoint, images: JobImages, results: list[Result]) -> dict:
    data = {"val": images.val_set.origin, "val_images": len(images.val.keys), "val_skipped": len(images.val.skipped),
            "calib": images.calib_set.origin, "calib_images": len(images.calib.keys),
            "calib_skipped": len(images.calib.skipped), "labelled": images.val.labels is not None}
    notes = [
        "FP32 and INT8 are compiled with INFERENCE_PRECISION_HINT=f32: layers NNCF left unquantized run in FP32.",
        f"Agreement and cosine compare each precision's logits with OpenVINO FP32 on the same {data['val_images']} "
        "images.",
    ]
    if not data["labelled"]:
        notes.append("The validation images carry no labels: only agreement and cosine are reported.")
    machine = {**machine_info(), "threads": request.threads or "runtime default"}
    return build_report(results, _model_info(ckpt), data, machine, library_versions(*VERSIONED), notes)


def _write_manifest(folder: Path, request: QuantizeRequest, ckpt: Checkpoint, images: JobImages, preprocess) -> None:
    options = asdict(request)
    options["ptq"] = request.ptq.to_dict()
    manifest = {
        "edgesmlp_manifest": 1,
        "command": " ".join(["edgesmlp", *sys.argv[1:]]) if sys.argv and "edgesmlp" in sys.argv[0] else None,
        "versions": library_versions(*VERSIONED),
        "weights": {"path": str(ckpt.path), "sha256": ckpt.sha256, "taken": ckpt.weights},
        "calibration": {"origin": images.calib_set.origin, "images": len(images.calib.keys),
                        "list_sha256": images.calib_set.fingerprint()},
        "validation": {"origin": images.val_set.origin, "images": len(images.val.keys),
                       "list_sha256": images.val_set.fingerprint()},
        "preprocess": preprocess.to_dict(),
        "options": json.loads(json.dumps(options, default=str)),
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

"""The sensitivity job: which layers INT8 hurts, and where through the network the error starts.

checkpoint -> deploy form -> FP32 ONNX -> TensorRT-rule Q/DQ ONNX (calibrated as `quantize --target
jetson` does) -> each quantized layer left in float in turn, scored against FP32 on validation images
the calibration never saw -> a ranked table, ``sensitivity.json``, and the per-block cosine.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

from edgesmlp import targets
from edgesmlp.artifacts import reserved_dir
from edgesmlp.errors import ConfigError
from edgesmlp.jobs.inputs import (check_output, check_sources, load_calibration, open_validation, output_candidates,
                                  resolve_preprocess)
from edgesmlp.jobs.report import VERSIONED, model_info
from edgesmlp.jobs.report_html import render_sensitivity_html
from edgesmlp.jobs.spec import JobSpec
from edgesmlp.targets.base import Log, TargetConfig
from edgesmlp.timing import library_versions, machine_info

DEFAULT_OUTPUT = Path("edgesmlp-sensitivity")
SUPPORTED = ("jetson",)  # the Q/DQ graph; OpenVINO's NNCF placement is not measured yet


@dataclass(frozen=True)
class SensitivityRequest(JobSpec):
    target: str = "jetson"
    config: TargetConfig | None = None
    images: int = 500  # validation images scored per layer
    output: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.images < 1:
            raise ConfigError(f"--images must be at least 1, got {self.images}")


def run_sensitivity(request: SensitivityRequest, log: Log = print) -> tuple[Path, dict]:
    import onnx

    from edgesmlp.calibration.sources import load_tensors
    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import export_onnx
    from edgesmlp.progress import progress_bar
    from edgesmlp.quantize.qdq import quantize_qdq
    from edgesmlp.quantize.sensitivity import block_cosines, per_layer, quantized_layers

    name = targets.resolve(request.target)
    if name not in SUPPORTED:
        raise ConfigError(f"sensitivity measures the Q/DQ graph (--target jetson) so far; for {name}, the jetson "
                          "ranking shows the same layers under the same placement")
    target = targets.get(name)
    config = request.config if request.config is not None else target.config_type()
    candidates = output_candidates(request.output, DEFAULT_OUTPUT)
    check_output(candidates(0), request.output is not None, request.force)
    ckpt = load_checkpoint(request.weights, variant=request.variant, ema=request.ema)
    preprocess = resolve_preprocess(ckpt, request.preprocess)
    check_sources(ckpt, request.calibration, request.val)
    calib_set, calib = load_calibration(ckpt, preprocess, request.calibration)
    val = load_tensors(open_validation(ckpt, request.val).sample(request.images, request.calibration.seed),
                       preprocess, "Loading validation images")
    with reserved_dir(candidates, request.force, explicit=request.output is not None, log=log) as (directory, tmp):
        c = ckpt.config
        export_onnx(to_deploy(ckpt.model), tmp / "model_fp32.onnx", c.image_size, c.in_chans, dynamic_batch=True,
                    reference=ckpt.model)
        quantize_qdq(tmp / "model_fp32.onnx", tmp / "model_int8_qdq.onnx", calib.x, config.qdq)
        fp32, qdq = onnx.load(str(tmp / "model_fp32.onnx")), onnx.load(str(tmp / "model_int8_qdq.onnx"))
        layers = len(quantized_layers(qdq))
        log(f"scoring each of {layers} quantized layers in float on {len(val.x)} validation images")
        with progress_bar("Layers in float", total=layers) as advance:
            base, rows = per_layer(fp32, qdq, val.x, request.run.threads, progress=advance)
        blocks = block_cosines(fp32, qdq, val.x, request.run.threads)
        result = {
            "schema": "edgesmlp.sensitivity/1", "target": name, "config": config.to_dict(),
            "model": model_info(str(ckpt.path), ckpt.bundled, ckpt.sha256, ckpt.weights, c.to_dict(), c.variant),
            "data": {"calib": calib_set.origin, "calib_images": len(calib.x), "val_images": len(val.x)},
            "full_int8": {"kl": base.kl, "agreement": base.agreement},
            "layers": [r.to_dict() for r in rows],
            "blocks": [{"tensor": t, "cosine": cos} for t, cos in blocks],
            "machine": machine_info(), "versions": library_versions(*VERSIONED),
        }
        (tmp / "sensitivity.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "sensitivity.html").write_text(render_sensitivity_html(result))
    return directory, result


def render(result: dict, limit: int = 15) -> str:
    """The ranked table (most sensitive first), at most ``limit`` rows, and the block cosines, in 80 columns."""
    base = result["full_int8"]
    lines = [f"full INT8 vs FP32 on {result['data']['val_images']} held-out images: agreement "
             f"{base['agreement']:.2f}%, KL {base['kl']:.2e}",
             "each layer alone in float: KL gain, the % of INT8's KL it cuts, agreement",
             f"{'rank':>4s}  {'layer (module)':34s} {'op':6s} {'KL gain':>9s} {'cut':>6s} {'agree%':>7s}"]
    for i, r in enumerate(result["layers"][:limit], 1):
        share = r["kl_gain"] / base["kl"] * 100 if base["kl"] > 0 else 0.0
        lines.append(f"{i:4d}  {r['module'][:34]:34s} {r['op']:6s} {r['kl_gain']:9.2e} {share:5.1f}% "
                     f"{r['agreement']:7.2f}")
    if len(result["layers"]) > limit:
        lines.append(f"      ... {len(result['layers']) - limit} more in sensitivity.json")
    cosines = "FP32-vs-INT8 cosine at each residual sum: " + " ".join(f"{b['cosine']:.4f}" for b in result["blocks"])
    lines += textwrap.wrap(cosines, 80, subsequent_indent="  ")
    return "\n".join(lines)

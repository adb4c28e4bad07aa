"""The sensitivity job: which layers INT8 hurts, and where through the network the error starts.

checkpoint -> deploy form -> the target's INT8 graph, calibrated as `quantize` does (jetson: the
TensorRT-rule Q/DQ ONNX; openvino: NNCF's INT8 IR) -> each quantized layer left in float in turn, scored
against FP32 on validation images the calibration never saw -> a ranked table, ``sensitivity.json``, and
the per-block cosine -> the smallest set of top-ranked layers that, left in float, meets the budget
(``--max-drop``, ``--min-agreement``) on those images, as a ready ``--ignore`` line for ``quantize``.
"""

from __future__ import annotations

import json
from collections import Counter
import textwrap
from dataclasses import dataclass
from pathlib import Path

from edgesmlp import targets
from edgesmlp.artifacts import reserved_dir
from edgesmlp.errors import ConfigError
from edgesmlp.jobs.inputs import (check_output, check_sources, load_calibration, open_validation, output_candidates,
                                  reads, resolve_preprocess)
from edgesmlp.jobs.report import VERSIONED, model_info
from edgesmlp.jobs.report_html import render_sensitivity_html
from edgesmlp.jobs.spec import JobSpec
from edgesmlp.targets.base import Log, TargetConfig
from edgesmlp.timing import library_versions, machine_info

DEFAULT_OUTPUT = Path("edgesmlp-sensitivity")
SUPPORTED = ("jetson", "openvino")


@dataclass(frozen=True)
class SensitivityRequest(JobSpec):
    target: str = "jetson"
    config: TargetConfig | None = None
    images: int = 500  # validation images scored per layer
    max_float: float = 0.2  # the suggested --ignore set holds at most this share of the layers
    output: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.images < 1:
            raise ConfigError(f"--images must be at least 1, got {self.images}")


def run_sensitivity(request: SensitivityRequest, log: Log = print) -> tuple[Path, dict]:
    from edgesmlp.calibration.sources import load_tensors
    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.progress import progress_bar
    from edgesmlp.quantization.sensitivity import per_layer

    name = targets.resolve(request.target)
    if name not in SUPPORTED:
        raise ConfigError(f"sensitivity measures the INT8 graphs of {' and '.join(SUPPORTED)}; for {name}, the "
                          "jetson ranking shows the same layers under the same Q/DQ placement")
    target = targets.get(name)
    config = request.config if request.config is not None else target.config_type()
    target.check(config, "deploy")
    candidates = output_candidates(request.output, DEFAULT_OUTPUT)
    check_output(candidates(0), request.output is not None, request.force, reads(request))
    ckpt = load_checkpoint(request.weights, variant=request.variant, ema=request.ema)
    preprocess = resolve_preprocess(ckpt, request.preprocess)
    check_sources(ckpt, request.calibration, request.val)
    calib_set, calib = load_calibration(ckpt, preprocess, request.calibration)
    val = load_tensors(open_validation(ckpt, request.val).sample(request.images, request.calibration.seed),
                       preprocess, "Loading validation images")
    with reserved_dir(candidates, request.force, explicit=request.output is not None, log=log) as (directory, tmp):
        graph, blocks = _measured_graph(name, config, ckpt, calib.x, tmp, request.run.threads, log)
        log(f"scoring each of {len(graph.layers)} quantized layers in float on {len(val.x)} validation images")
        reference = graph.reference(val.x)
        with progress_bar("Layers in float", total=len(graph.layers)) as advance:
            base, rows = per_layer(graph, val.x, progress=advance, reference=reference)
        blocks = blocks(val.x)
        suggestion = _suggest(graph, val, reference, rows, request)
        c = ckpt.config
        result = {
            "schema": "edgesmlp.sensitivity/1", "target": name, "config": config.to_dict(),
            "model": model_info(str(ckpt.path), ckpt.bundled, ckpt.sha256, ckpt.weights, c.to_dict(), c.variant),
            "data": {"calib": calib_set.origin, "calib_images": len(calib.x), "val_images": len(val.x)},
            "preprocess": preprocess.to_dict(),
            "full_int8": {"kl": base.kl, "agreement": base.agreement, "expected_agreement": base.expected_agreement},
            "layers": [r.to_dict() for r in rows],
            "blocks": [{"tensor": t, "cosine": cos} for t, cos in blocks],
            "ignore": suggestion,
            "machine": machine_info(), "versions": library_versions(*VERSIONED),
        }
        (tmp / "sensitivity.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "sensitivity.html").write_text(render_sensitivity_html(result))
    return directory, result


def _suggest(graph, val, reference, rows, request: SensitivityRequest) -> dict:
    """The fewest top-ranked layers whose staying in float meets the request's budget on the scored images (as
    ``quantize``'s search does, with its confidence bound where the images are enough to certify it)."""
    from edgesmlp.progress import progress_bar
    from edgesmlp.quantization.budget import Budget, fewest, meets, score

    budget = Budget(request.max_drop, request.min_agreement, max_float=request.max_float)
    certify = len(val.x) >= budget.images_needed(val.labels is not None)
    ok = lambda point: meets(budget, point, certify=certify)  # noqa: E731
    order = [r.layer for r in rows]
    full = score(0, reference, graph.logits(val.x), val.labels)
    cap = max(1, int(budget.max_float * len(order)))
    k, points = (0, {0: full}) if ok(full) else fewest(graph, val.x, val.labels, order, cap, ok, reference, full,
                                                       progress_bar)
    shared = Counter(layer.module for layer in graph.layers)
    # a module path where it names this one layer (--ignore takes both), else the node name
    modules = [r.module if shared[r.module] == 1 else r.layer for r in rows[:k or 0]]
    return {"asked": budget.describe(), "certified": certify, "met": k is not None, "layers": modules,
            "nodes": order[:k or 0], "reached": points[k if k is not None else max(points)].line(),
            "line": " ".join(f"--ignore {m}" for m in modules), "max_float": budget.max_float}


def _measured_graph(name: str, config, ckpt, calibration, folder: Path, threads: int, log: Log = print):
    """The target's INT8 graph as a ``PartialINT8``, and a function of images giving its block cosines."""
    from edgesmlp.deploy import to_deploy

    c = ckpt.config
    if name == "openvino":
        from edgesmlp.quantization.openvino_partial import OpenVINOPartial, block_cosines
        from edgesmlp.quantization.openvino_ptq import quantize_for_cpu

        fp32, int8 = quantize_for_cpu(to_deploy(ckpt.model), calibration, config, c.in_chans, c.image_size, log)
        return OpenVINOPartial(fp32, int8, threads), lambda x: block_cosines(fp32, int8, x, threads)
    import onnx

    from edgesmlp.export import export_onnx
    from edgesmlp.quantization.partial import QDQPartial
    from edgesmlp.quantization.qdq import quantize_qdq
    from edgesmlp.quantization.sensitivity import block_cosines

    export_onnx(to_deploy(ckpt.model), folder / "model_fp32.onnx", c.image_size, c.in_chans, dynamic_batch=True,
                reference=ckpt.model)
    quantize_qdq(folder / "model_fp32.onnx", folder / "model_int8_qdq.onnx", calibration, config.qdq)
    fp32, qdq = onnx.load(str(folder / "model_fp32.onnx")), onnx.load(str(folder / "model_int8_qdq.onnx"))
    return QDQPartial(fp32, qdq, threads), lambda x: block_cosines(fp32, qdq, x, threads)


def render(result: dict, limit: int = 15) -> str:
    """The ranked table (most sensitive first), at most ``limit`` rows, and the block cosines, in 80 columns."""
    base = result["full_int8"]
    lines = [f"full INT8 vs FP32 on {result['data']['val_images']} held-out images: agreement "
             f"{base['agreement']:.2f}% (expected",
             f"{base.get('expected_agreement', base['agreement']):.2f}%), KL {base['kl']:.2e}",
             "alone: KL with only this layer INT8 (the rank); in float: the % of INT8's KL",
             "that leaving only this layer in float cuts, and the agreement it then reaches",
             f"{'rank':>4s}  {'layer (module)':34s} {'op':6s} {'alone KL':>9s} {'cut':>6s} {'agree%':>7s}"]
    for i, r in enumerate(result["layers"][:limit], 1):
        share = r["kl_gain"] / base["kl"] * 100 if base["kl"] > 0 else 0.0
        lines.append(f"{i:4d}  {r['module'][:34]:34s} {r['op'][:6]:6s} {r['alone_kl']:9.2e} {share:5.1f}% "
                     f"{r['agreement']:7.2f}")
    if len(result["layers"]) > limit:
        lines.append(f"      ... {len(result['layers']) - limit} more in sensitivity.json")
    ignore = result.get("ignore")
    cosines = "FP32-vs-INT8 cosine at each residual sum: " + " ".join(f"{b['cosine']:.4f}" for b in result["blocks"])
    lines += textwrap.wrap(cosines, 80, subsequent_indent="  ")
    if ignore and not ignore["met"]:
        lines += textwrap.wrap(f"no {ignore['max_float']:.0%} of the layers in float meets {ignore['asked']} on these "
                               f"images ({ignore['reached']}): train for it (quantize --method qat)", 80)
    elif ignore and ignore["layers"]:
        how = "" if ignore["certified"] else ", on the estimate: too few images to certify it"
        lines += textwrap.wrap(f"to meet {ignore['asked']} on these images ({ignore['reached']}{how}), add to "
                               "quantize:", 80)
        lines.append(ignore["line"])
    elif ignore:
        lines += textwrap.wrap(f"full INT8 meets {ignore['asked']} on these images: no --ignore needed", 80)
    return "\n".join(lines)

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
from edgesmlp.jobs.inputs import check_output, open_inputs, output_candidates, reads
from edgesmlp.jobs.report import VERSIONED, model_info
from edgesmlp.jobs.report_html import render_sensitivity_html
from edgesmlp.jobs.spec import JobSpec
from edgesmlp.targets.base import Job, Log, TargetConfig
from edgesmlp.timing import library_versions, machine_info

DEFAULT_OUTPUT = Path("edgesmlp-sensitivity")


@dataclass(frozen=True)
class SensitivityRequest(JobSpec):
    target: str = targets.DEFAULT_SENSITIVITY
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
    from edgesmlp.deploy import to_deploy
    from edgesmlp.progress import progress_bar
    from edgesmlp.quantization.sensitivity import per_layer

    name = targets.resolve(request.target)
    target = targets.get(name)
    if not target.mixed_precision():
        able = [n for n in targets.names() if targets.get(n).mixed_precision()]
        raise ConfigError(f"sensitivity measures INT8 graphs that can keep layers in float: those of "
                          f"{' and '.join(able)}, not {name}; choose -t {able[0]}")
    config = request.config if request.config is not None else target.config_type()
    target.check(config, "deploy")
    candidates = output_candidates(request.output, DEFAULT_OUTPUT)
    check_output(candidates(0), request.output is not None, request.force, reads(request))
    inputs = open_inputs(request, log)
    ckpt, preprocess, calib_set, calib = inputs.ckpt, inputs.preprocess, inputs.calib_set, inputs.calib
    val = load_tensors(inputs.val_set.sample(request.images, request.calibration.seed), preprocess,
                       "Loading validation images")
    with reserved_dir(candidates, request.force, explicit=request.output is not None, log=log) as (directory, tmp):
        job = Job(ckpt, to_deploy(ckpt.model), "deploy", preprocess, calib.x, config, request.run)
        graph, blocks = target.partial_int8(job, tmp, log)
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

"""Which NNCF recipe keeps a *trained* sMLPNet most accurate? Measured on the bundled digits model.

    python benchmarks/openvino_ptq_presets.py

Each recipe quantizes the bundled model on its 300-image calibration split and is scored on the
500-image validation split: top-1, top-1 agreement with OpenVINO FP32, logit cosine, PTQ seconds.
Writes benchmarks/results/openvino_ptq_presets.md. Random weights say nothing about accuracy, so
this is what edgesmlp's defaults are chosen from.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import write_result  # noqa: E402


def main() -> None:
    import nncf

    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    from edgesmlp import bundled
    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.deploy import to_deploy
    from edgesmlp.jobs.evaluate import predict, score
    from edgesmlp.export import to_openvino
    from edgesmlp.runtimes.openvino import OpenVINORunner

    ckpt = load_checkpoint()
    xc, _ = bundled.split_tensors("calib")
    xv, yv = bundled.split_tensors("val")
    xv, yv = xv.numpy(), yv.numpy()
    forms = {"deploy": to_openvino(to_deploy(ckpt.model), 3, 32), "reference": to_openvino(ckpt.model, 3, 32)}
    fp32 = predict(OpenVINORunner(forms["reference"], 50), xv, 50)
    data = nncf.Dataset([xc[i : i + 1].numpy() for i in range(len(xc))])
    P, M = nncf.QuantizationPreset.PERFORMANCE, nncf.QuantizationPreset.MIXED
    no_bc = dict(disable_bias_correction=True)
    recipes = [
        ("deploy", "performance, no bias correction (edgesmlp default)", dict(preset=P), no_bc),
        ("deploy", "mixed, no bias correction", dict(preset=M), no_bc),
        ("deploy", "transformer, no SmoothQuant", dict(model_type=nncf.ModelType.TRANSFORMER),
         dict(no_bc, smooth_quant_alphas=AdvancedSmoothQuantParameters(-1, -1))),
        ("deploy", "transformer + SmoothQuant 0.95", dict(model_type=nncf.ModelType.TRANSFORMER),
         dict(no_bc, smooth_quant_alphas=AdvancedSmoothQuantParameters(0.95, 0.95))),
        ("deploy", "performance, fast bias correction", dict(preset=P), {}),
        ("reference", "NNCF defaults (performance, fast bias correction)", {}, {}),
        ("reference", "mixed, fast bias correction", dict(preset=M), {}),
        ("reference", "performance, full bias correction", dict(preset=P, fast_bias_correction=False), {}),
    ]
    rows = [("reference", "OpenVINO FP32", score(fp32, yv, fp32), 0.0)]
    for form, label, kwargs, advanced in recipes:
        start = time.perf_counter()
        try:
            q = nncf.quantize(forms[form], data, subset_size=len(xc),
                              advanced_parameters=AdvancedQuantizationParameters(**advanced), **kwargs)
        except Exception as e:  # noqa: BLE001 - a crashing recipe is a result worth recording
            rows.append((form, f"{label}: FAILED ({type(e).__name__}: {str(e).splitlines()[0][:80]})", None, None))
            print(rows[-1][1], flush=True)
            continue
        seconds = time.perf_counter() - start
        logits = predict(OpenVINORunner(q, 50), xv, 50)
        rows.append((form, label, score(logits, yv, fp32), seconds))
        acc = rows[-1][2]
        print(f"{form:9s} {label:50s} top1 {acc.top1:.1f} agree {acc.agreement:.1f} cos {acc.cosine:.5f}", flush=True)
    lines = [
        "# NNCF recipes on the trained bundled model (OpenVINO CPU)",
        "",
        "`python benchmarks/openvino_ptq_presets.py`: 300 calibration images, 500 validation images "
        "(bundled digits splits); agreement and cosine against OpenVINO FP32 of the official graph.",
        "",
        "| form | recipe | top-1 % | agreement % | logit cosine | PTQ s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for form, label, acc, seconds in rows:
        if acc is None:
            lines.append(f"| {form} | {label} | - | - | - | - |")
        else:
            lines.append(f"| {form} | {label} | {acc.top1:.1f} | {acc.agreement:.1f} | {acc.cosine:.5f} | {seconds:.1f} |")
    write_result("openvino_ptq_presets", lines, "openvino", "nncf")


if __name__ == "__main__":
    main()

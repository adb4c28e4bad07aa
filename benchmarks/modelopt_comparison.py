"""edgesmlp's TensorRT-rule Q/DQ against NVIDIA ModelOpt's ONNX PTQ of the same bundled model.

    python benchmarks/modelopt_comparison.py

ModelOpt's outputs are the committed fixtures (tests/fixtures/modelopt_int8_{deploy,reference}.onnx,
made by scripts/make_modelopt_fixture.py with ModelOpt's defaults: entropy calibration on 128 bundled
calibration images, FP16 for what stays in float). edgesmlp's is `quantize --target jetson`'s graph
(percentile 99.99 on the 300-image calibration split). ONNX Runtime's CPU provider executes each on
the 500 validation images: top-1, agreement and cosine against edgesmlp's FP32 deploy ONNX. Also
recorded: lint-qdq's findings and what each leaves in float (Conv/MatMul/Gemm whose input or weight
is not quantized). Writes benchmarks/results/modelopt_comparison.md.
"""

from __future__ import annotations

import collections
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import bundled_fp32_onnx, write_result  # noqa: E402

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures"


def run_all(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))]).astype(np.float32)


def left_in_float(path: Path) -> tuple[int, int]:
    """(weighted ops running in float, weighted ops in all), by lint-qdq's own reading of the graph."""
    import onnx

    from edgesmlp.quantization.qdq_lint import lint_qdq

    weighted = sum(n.op_type in ("Conv", "MatMul", "Gemm") for n in onnx.load(str(path)).graph.node)
    floats = {f.node for f in lint_qdq(path) if f.rule in ("input-not-quantized", "weight-not-quantized")}
    return len(floats), weighted


def main() -> None:
    from edgesmlp.jobs.evaluate import score
    from edgesmlp.quantization.qdq import QDQConfig, quantize_qdq
    from edgesmlp.quantization.qdq_lint import lint_qdq

    tmp = Path(tempfile.mkdtemp())
    _, xc, xv, yv = bundled_fp32_onnx(tmp)
    quantize_qdq(tmp / "fp32.onnx", tmp / "edgesmlp_int8.onnx", xc, QDQConfig())
    fp32 = run_all(tmp / "fp32.onnx", xv)
    candidates = {
        "edgesmlp (deploy form)": tmp / "edgesmlp_int8.onnx",
        "ModelOpt defaults, deploy form": FIXTURES / "modelopt_int8_deploy.onnx",
        "ModelOpt defaults, official graph": FIXTURES / "modelopt_int8_reference.onnx",
    }
    lines = ["# edgesmlp's Q/DQ vs ModelOpt's ONNX INT8 (bundled model)", "",
             "`python benchmarks/modelopt_comparison.py`: ONNX Runtime CPU executes each Q/DQ graph on the 500 "
             "validation images; agreement and cosine against the FP32 deploy ONNX. \"left in float\" counts "
             "the Conv/MatMul/Gemm nodes whose input or weight is not quantized (TensorRT runs them in float).", "",
             "| graph | top-1 % | agreement % | logit cosine | lint errors | lint warnings | left in float | "
             "warnings by rule |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    acc = score(fp32, yv, fp32)
    lines.append(f"| FP32 | {acc.top1:.1f} | {acc.agreement:.1f} | {acc.cosine:.5f} | - | - | - | - |")
    for label, path in candidates.items():
        acc = score(run_all(path, xv), yv, fp32)
        findings = lint_qdq(path)
        errors = sum(f.severity == "error" for f in findings)
        rules = collections.Counter(f.rule for f in findings if f.severity == "warning")
        floats, weighted = left_in_float(path)
        by_rule = ", ".join(f"{r} {n}" for r, n in rules.most_common()) or "-"
        lines.append(f"| {label} | {acc.top1:.1f} | {acc.agreement:.1f} | {acc.cosine:.5f} | {errors} | "
                     f"{len(findings) - errors} | {floats} of {weighted} | {by_rule} |")
        print(lines[-1], flush=True)
    lines += ["", "ModelOpt leaves the token-mixing ops in float (the ten axial MatMuls of the deploy form; on "
              "the official graph the ten axial 1x1 convs behind their transposes) and the head Gemm, and puts "
              "Q/DQ before the norms on purpose; lint-qdq reports those as warnings (slower or float, never "
              "wrong), and none as errors. edgesmlp quantizes every weighted op, the left-operand MatMul of the "
              "deploy form included. On this easy model every graph keeps FP32's top-1."]
    write_result("modelopt_comparison", lines, "onnx", "onnxruntime")


if __name__ == "__main__":
    main()

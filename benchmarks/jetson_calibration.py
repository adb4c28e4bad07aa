"""Which activation-range method keeps the TensorRT-rule Q/DQ model most accurate? Bundled model.

    python benchmarks/jetson_calibration.py

Each method calibrates on the bundled calibration split (300 images, and a 32-image subset) and is
scored with ONNX Runtime executing the Q/DQ graph on the 500 validation images: top-1, agreement and
cosine against the FP32 ONNX. Writes benchmarks/results/jetson_calibration.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import bundled_fp32_onnx, write_result  # noqa: E402


def main() -> None:
    from edgesmlp.jobs.evaluate import score
    from edgesmlp.quantization.qdq import QDQConfig, quantize_qdq
    from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner

    tmp = Path(tempfile.mkdtemp())
    _, xc, xv, yv = bundled_fp32_onnx(tmp)
    fp32 = OnnxRuntimeRunner(tmp / "fp32.onnx")(xv)
    rows = [("FP32 (ONNX Runtime)", "-", score(fp32, yv, fp32), 0.0)]
    methods = [("max", {}), ("percentile 99.9", {"percentile": 99.9}), ("percentile 99.99", {"percentile": 99.99}),
               ("entropy", {}), ("mse", {})]
    for n in (300, 32):
        for label, extra in methods:
            config = QDQConfig(method=label.split()[0], **extra)
            start = time.perf_counter()
            quantize_qdq(tmp / "fp32.onnx", tmp / "int8.onnx", xc[:n], config)
            seconds = time.perf_counter() - start
            acc = score(OnnxRuntimeRunner(tmp / "int8.onnx")(xv), yv, fp32)
            rows.append((label, n, acc, seconds))
            print(f"{label:18s} {n:4d} images  top1 {acc.top1:.1f}  agree {acc.agreement:.1f}  cos {acc.cosine:.5f}",
                  flush=True)
    lines = ["# Q/DQ calibration methods on the trained bundled model", "",
             "`python benchmarks/jetson_calibration.py`: ONNX Runtime executes each TensorRT-rule Q/DQ graph on "
             "the 500 validation images; agreement and cosine against the FP32 ONNX.", "",
             "| method | calibration images | top-1 % | agreement % | logit cosine | seconds |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {m} | {n} | {a.top1:.1f} | {a.agreement:.1f} | {a.cosine:.5f} | {s:.1f} |" for m, n, a, s in rows]
    lines += ["", "Under every method the network input (a normalised image, bounded by construction) keeps its "
              "full range; the methods differ on the activations inside the network."]
    write_result("jetson_calibration", lines, "onnx", "onnxruntime")


if __name__ == "__main__":
    main()

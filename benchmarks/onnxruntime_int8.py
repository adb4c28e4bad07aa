"""ONNX Runtime CPU: FP32 against INT8 graphs of the deploy form, at batch 1 and batch 8.

    python benchmarks/onnxruntime_int8.py [--rounds 7] [--iters 8] [--threads 2]

sMLPNet-T at 224 (random weights: speed only), interleaved rounds in one process. The INT8 graphs:

* ``trt-s8``: the Jetson bundle's graph (TensorRT's placement), as ONNX Runtime runs it;
* ``ort-s8``: ONNX Runtime's placement (a Q/DQ after each Conv/MatMul/Gemm, none on the residual Adds),
  signed activations;
* ``ort-u8``: the same with u8 activations and u8 left weights: what `quantize --target onnxruntime`
  ships on x86;
* ``ort-quantize_static``: ONNX Runtime's own `quantize_static` (QDQ, per-channel s8 weights, u8
  asymmetric activations, Conv/MatMul/Gemm), the anchor.

For each, how many kernels ONNX Runtime runs in integers after its fusions, and how many Conv/MatMul in float.
Writes benchmarks/results/onnxruntime_int8.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import random_smlpnet_t, write_result  # noqa: E402


def integer_kernels(path: Path, tmp: Path) -> str:
    """'integer / float': the QLinearConv + QLinearMatMul kernels ONNX Runtime runs after its fusions, and the
    Conv / MatMul it still runs in float."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp / f"{path.stem}.optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    return f"{ops['QLinearConv'] + ops['QLinearMatMul']} / {ops['Conv'] + ops['FusedConv'] + ops['MatMul']}"


def ort_quantize_static(fp32: Path, out: Path, calib: np.ndarray) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(fp32)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"])


def main() -> None:
    import logging

    import onnx
    import torch

    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import export_onnx
    from edgesmlp.quantize.qdq import QDQConfig, quantize_qdq, to_unsigned_activations
    from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner
    from edgesmlp.targets.onnxruntime import ort_placement
    from edgesmlp.timing import interleaved, paired_ratio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's pre-processing advice
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    model = random_smlpnet_t()
    export_onnx(to_deploy(model), tmp / "fp32.onnx", 224, dynamic_batch=True, reference=model)
    calib = np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32)
    quantize_qdq(tmp / "fp32.onnx", tmp / "trt-s8.onnx", calib, QDQConfig(method="max"))
    quantize_qdq(tmp / "fp32.onnx", tmp / "ort-s8.onnx", calib, ort_placement(QDQConfig(method="max")))
    onnx.save(to_unsigned_activations(onnx.load(str(tmp / "ort-s8.onnx"))), str(tmp / "ort-u8.onnx"))
    ort_quantize_static(tmp / "fp32.onnx", tmp / "ort-quantize_static.onnx", calib)
    names = ["fp32", "trt-s8", "ort-s8", "ort-u8", "ort-quantize_static"]
    kernels = {k: integer_kernels(tmp / f"{k}.onnx", tmp) if k != "fp32" else "-" for k in names}
    runners = {k: OnnxRuntimeRunner(tmp / f"{k}.onnx", args.threads) for k in names}
    ref = runners["fp32"](calib[:8])
    cos = {k: float((o := r(calib[:8])).ravel() @ ref.ravel() / np.linalg.norm(o) / np.linalg.norm(ref))
           for k, r in runners.items()}
    lines = ["# ONNX Runtime CPU: FP32 vs INT8 graphs of the deploy form (sMLPNet-T, 224)", "",
             f"`python benchmarks/onnxruntime_int8.py --rounds {args.rounds} --iters {args.iters} --threads "
             f"{args.threads}`: random weights, interleaved rounds in one process. Speedup is the median over rounds "
             "of FP32 time / candidate time. 'integer / float': the QLinearConv and QLinearMatMul kernels "
             "ONNX Runtime runs after its fusions, and the Conv and MatMul it still runs in float between DQs. Cosine: the "
             "logits against FP32 on 8 random inputs.", ""]
    for batch in (1, 8):
        x = calib[:batch]
        timings, per_round = interleaved({k: (lambda r=r: r(x)) for k, r in runners.items()}, args.rounds,
                                         args.iters if batch == 1 else max(2, args.iters // 4))
        lines += [f"## Batch {batch}", "", "| graph | integer / float | cosine | p50 ms | img/s | speedup over FP32 |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for k, t in timings.items():
            lines.append(f"| {k} | {kernels[k]} | {cos[k]:.5f} | {t.p50:.2f} | {1000 * batch / t.p50:.1f} | "
                         f"{paired_ratio(per_round, 'fp32', k):.2f}x |")
            print(lines[-1], flush=True)
        lines.append("")
    lines += ["TensorRT's placement quantizes only the inputs of each Conv/MatMul, so ONNX Runtime finds no Q after "
              "any of them and runs each in float; ONNX Runtime's placement lets it fuse every one. On x86 its "
              "integer kernels want u8 activations (s8 runs slower even on this VNNI CPU), and the left weight of "
              "`P @ x` must be u8 too: ONNX Runtime has no s8 x u8 MatMul. LayerNorm and GELU run in float in all "
              "graphs, FP32 included."]
    write_result("onnxruntime_int8", lines, "onnxruntime")


if __name__ == "__main__":
    main()

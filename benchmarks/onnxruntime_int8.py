"""ONNX Runtime CPU: FP32 against INT8 graphs of the deploy form, at batch 1 and batch 8.

    python benchmarks/onnxruntime_int8.py [--rounds 7] [--iters 8] [--threads 2] [--name onnxruntime_int8]

sMLPNet-T at 224 (random weights: speed only), interleaved rounds in one process. The INT8 graphs:

* ``trt-s8``: the Jetson bundle's graph (TensorRT's placement), as ONNX Runtime runs it;
* ``ort-s8``: ONNX Runtime's placement (a Q/DQ after each Conv/MatMul/Gemm, none on the residual Adds),
  signed activations;
* ``ort-u8``: the same with u8 activations and u8 left weights: what `quantize --target onnxruntime`
  ships on x86 CPUs with VNNI;
* ``ort-u8-w7``: the same with 7-bit signed weights: what it ships on x86 CPUs without VNNI, whose u8 x s8
  kernels (VPMADDUBSW) saturate on 8-bit weights;
* ``ort-quantize_static``: ONNX Runtime's own `quantize_static` (QDQ, per-channel s8 weights, u8
  asymmetric activations, Conv/MatMul/Gemm), the anchor.

For each, how many kernels ONNX Runtime runs in integers after its fusions, and how many Conv/MatMul in float.
Then, on the bundled digits model (trained weights, its 500 validation images), whether ONNX Runtime's fused
integer kernels keep the class the same Q/DQ graph computes when executed unfused in float (saturation shows
here). Writes benchmarks/results/onnxruntime_int8.md (or --name NAME.md).
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
    from edgesmlp.quantization.qdq import QDQConfig, quantize_qdq, to_unsigned_activations
    from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner
    from edgesmlp.targets.onnxruntime import ort_placement
    from edgesmlp.timing import interleaved, paired_ratio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="onnxruntime_int8",
                        help="record as benchmarks/results/NAME.md (one record per kind of CPU)")
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
    quantize_qdq(tmp / "fp32.onnx", tmp / "ort-s8-w7.onnx", calib, ort_placement(QDQConfig(method="max", weight_bits=7)))
    onnx.save(to_unsigned_activations(onnx.load(str(tmp / "ort-s8-w7.onnx"))), str(tmp / "ort-u8-w7.onnx"))
    ort_quantize_static(tmp / "fp32.onnx", tmp / "ort-quantize_static.onnx", calib)
    names = ["fp32", "trt-s8", "ort-s8", "ort-u8", "ort-u8-w7", "ort-quantize_static"]
    kernels = {k: integer_kernels(tmp / f"{k}.onnx", tmp) if k != "fp32" else "-" for k in names}
    runners = {k: OnnxRuntimeRunner(tmp / f"{k}.onnx", args.threads) for k in names}
    ref = runners["fp32"](calib[:8])
    cos = {k: float((o := r(calib[:8])).ravel() @ ref.ravel() / np.linalg.norm(o) / np.linalg.norm(ref))
           for k, r in runners.items()}
    lines = ["# ONNX Runtime CPU: FP32 vs INT8 graphs of the deploy form (sMLPNet-T, 224)", "",
             f"`python benchmarks/onnxruntime_int8.py --rounds {args.rounds} --iters {args.iters} --threads "
             f"{args.threads} --name {args.name}`: random weights, interleaved rounds in one process. Speedup is the median over rounds "
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
    lines += bundled_fidelity(tmp)
    lines += ["TensorRT's placement quantizes only the inputs of each Conv/MatMul, so ONNX Runtime finds no Q after "
              "any of them and runs each in float; ONNX Runtime's placement lets it fuse every one. On x86 its "
              "integer kernels want u8 activations (s8 ran 1.5x slower even on a VNNI CPU), and the left weight of "
              "`P @ x` must be u8 too: ONNX Runtime has no s8 x u8 MatMul. Without VNNI they multiply u8 x s8 with "
              "VPMADDUBSW, whose int16 sum of two products clips above 32767 (2 x 255 x 127 = 64770): 7-bit weights "
              "cannot clip (2 x 255 x 63 = 32130). LayerNorm and GELU run in float in all graphs, FP32 included."]
    write_result(args.name, lines, "onnxruntime")


def bundled_fidelity(tmp: Path) -> list[str]:
    """On the bundled digits model: how often each x86/ARM INT8 graph's fused integer kernels keep the class the
    same graph computes unfused (every Q/DQ executed in float), and agreement with FP32."""
    import onnx
    import onnxruntime as ort

    from edgesmlp import bundled
    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import export_onnx
    from edgesmlp.quantization.qdq import QDQConfig, quantize_qdq, to_unsigned_activations
    from edgesmlp.timing import x86_without_vnni
    from edgesmlp.targets.onnxruntime import ort_placement

    ckpt = load_checkpoint()
    export_onnx(to_deploy(ckpt.model), tmp / "digits_fp32.onnx", 32, dynamic_batch=True, reference=ckpt.model)
    calib, (val, _) = bundled.split_tensors("calib")[0].numpy()[:300], bundled.split_tensors("val")
    val = val.numpy()
    graphs = {}
    for bits in (8, 7):
        s8 = tmp / f"digits_s8_w{bits}.onnx"
        quantize_qdq(tmp / "digits_fp32.onnx", s8, calib, ort_placement(QDQConfig(weight_bits=bits)))
        graphs[f"ort-s8{'-w7' * (bits == 7)}"] = s8
        onnx.save(to_unsigned_activations(onnx.load(str(s8))), str(tmp / f"digits_u8_w{bits}.onnx"))
        graphs[f"ort-u8{'-w7' * (bits == 7)}"] = tmp / f"digits_u8_w{bits}.onnx"

    def classes(path: Path, fused: bool) -> np.ndarray:
        options = ort.SessionOptions()
        if not fused:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(None, {session.get_inputs()[0].name: val[i:i + 100]})[0].argmax(1)
                               for i in range(0, len(val), 100)])

    fp32 = classes(tmp / "digits_fp32.onnx", True)
    lines = ["## The integer kernels against the graph (the bundled digits model)", "",
             f"Its {len(val)} validation images; the graphs calibrated on 300 of its calibration images (percentile, "
             "as `quantize` does). 'Kernels keep the graph's class': ONNX Runtime with its fusions (the integer "
             "kernels) against the same file with every optimization off (each Q/DQ executed in float, what the "
             f"graph means). This CPU {'has no VNNI: u8 x s8 saturates' if x86_without_vnni() else 'does not saturate u8 x s8'}.",
             "", "| graph | kernels keep the graph's class | agreement with FP32 |", "| --- | --- | --- |"]
    for name, path in graphs.items():
        fused = classes(path, True)
        lines.append(f"| {name} | {100 * (fused == classes(path, False)).mean():.1f}% | {100 * (fused == fp32).mean():.1f}% |")
        print(lines[-1], flush=True)
    return lines + [""]


if __name__ == "__main__":
    main()

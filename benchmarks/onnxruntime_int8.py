"""ONNX Runtime CPU: FP32 vs the Q/DQ INT8 graph with signed (s8) and unsigned (u8) activations.

    python benchmarks/onnxruntime_int8.py [--rounds 4] [--iters 6] [--threads 2]

sMLPNet-T at 224 (random weights: speed only), deploy form, batch 1, interleaved rounds in one
process. The s8 graph is the one TensorRT gets; u8 is the same graph with zero point 128, which
ONNX Runtime prefers on AVX2 CPUs without VNNI. Writes benchmarks/results/onnxruntime_int8.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import write_result  # noqa: E402


def main() -> None:
    import onnx
    import torch

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from benchmarks.common import random_smlpnet_t
    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import export_onnx
    from edgesmlp.quantize.qdq import QDQConfig, quantize_qdq, to_unsigned_activations
    from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner, cpu_has_int8_dot_product
    from edgesmlp.timing import interleaved, paired_ratio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    model = random_smlpnet_t()
    export_onnx(to_deploy(model), tmp / "fp32.onnx", 224, dynamic_batch=True, reference=model)
    calib = np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32)
    quantize_qdq(tmp / "fp32.onnx", tmp / "s8.onnx", calib, QDQConfig(method="max"))
    onnx.save(to_unsigned_activations(onnx.load(str(tmp / "s8.onnx"))), str(tmp / "u8.onnx"))
    runners = {k: OnnxRuntimeRunner(tmp / f"{k}.onnx", args.threads) for k in ("fp32", "s8", "u8")}
    x = calib[:1]
    timings, per_round = interleaved({k: (lambda r=r: r(x)) for k, r in runners.items()}, args.rounds, args.iters)
    lines = ["# ONNX Runtime CPU: FP32 vs INT8 Q/DQ (sMLPNet-T, 224, batch 1)", "",
             f"`python benchmarks/onnxruntime_int8.py --rounds {args.rounds} --iters {args.iters} --threads "
             f"{args.threads}`; this CPU {'has' if cpu_has_int8_dot_product() else 'lacks'} VNNI/AMX. Speedup is the "
             "median over rounds of FP32 time / candidate time.", "",
             "| graph | p50 ms | p90 ms | speedup over FP32 |", "| --- | --- | --- | --- |"]
    for k, t in timings.items():
        lines.append(f"| {k} | {t.p50:.2f} | {t.p90:.2f} | {paired_ratio(per_round, 'fp32', k):.2f}x |")
        print(lines[-1], flush=True)
    lines += ["", "The deploy form leaves INT8 around every GELU and LayerNorm; ONNX Runtime pays a "
              "quantize/dequantize at each, which is why its INT8 does not beat its FP32 on this graph. OpenVINO "
              "(benchmarks/results/openvino_int8.md) fuses them."]
    write_result("onnxruntime_int8", lines, "onnxruntime")


if __name__ == "__main__":
    main()

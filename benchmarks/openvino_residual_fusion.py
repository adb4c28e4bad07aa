"""Does fusing each residual Add into the convolution before it make edgesmlp's OpenVINO INT8 faster?

    python benchmarks/openvino_residual_fusion.py [--rounds 9] [--iters 10] [--threads 2]

OpenVINO's CPU plugin fuses an Add into the convolution feeding it (oneDNN's sum post-op) only when the Add's
input from the convolution is the convolution itself, its bias Add, or a FakeQuantize fused into it
(SnippetsMarkSkipped, isSuitableParentForFusingSumActivation). In an INT8 graph a dequantization Multiply sits
between the convolution and its bias, so the residual Adds fuse only when their inputs are quantized:
``OpenVINOPTQConfig(quantize_sums=True)``. Both IRs come from sMLPNet-T (random weights, 224, 32 calibration
images) through the openvino target's recipe, at a static batch of 1, compiled with no hint as shipped, timed in
interleaved rounds.
Writes benchmarks/results/openvino_residual_fusion.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import random_smlpnet_t, write_result  # noqa: E402


def fused_residuals(compiled) -> int:
    """Executed Convolution nodes that took a residual sum in (the top-level ``aten::add`` of DeploySMLPNet)."""
    return sum(op.get_rt_info()["layerType"].astype(str) == "Convolution"
               and any(name.startswith("aten::add/") for name in op.get_rt_info()["originalLayersNames"].astype(str).split(","))
               for op in compiled.get_runtime_model().get_ops())


def main() -> None:
    import openvino as ov

    from edgesmlp.deploy import to_deploy
    from edgesmlp.quantization.openvino_ptq import OpenVINOPTQConfig, calibration_graph, quantize_openvino
    from edgesmlp.quantization.sensitivity import cosine
    from edgesmlp.runtimes.openvino import with_batch
    from edgesmlp.timing import interleaved, paired_ratio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    deploy = to_deploy(random_smlpnet_t())
    calibration = np.random.default_rng(1).standard_normal((32, 3, 224, 224)).astype(np.float32)
    graph = calibration_graph(deploy, 3, 224)
    x = calibration[:1]
    expected = deploy(torch.from_numpy(x)).detach().numpy()
    candidates, facts = {}, {}
    for name, config in (("default (Adds left in float)", OpenVINOPTQConfig()),
                         ("quantize_sums=True", OpenVINOPTQConfig(quantize_sums=True))):
        int8 = with_batch(quantize_openvino(graph, calibration, config), 1)
        compiled = ov.Core().compile_model(int8, "CPU", {"INFERENCE_NUM_THREADS": args.threads,
                                                         "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        facts[name] = (fused_residuals(compiled), cosine(request.infer({0: x})[0], expected))
        candidates[name] = lambda r=request: r.infer({0: x})
    timings, per_round = interleaved(candidates, rounds=args.rounds, iters=args.iters)
    base = next(iter(candidates))
    lines = ["# OpenVINO INT8: residual Adds fused into the convolution before them, or not (sMLPNet-T, batch 1)", "",
             f"`python benchmarks/openvino_residual_fusion.py --rounds {args.rounds} --iters {args.iters} --threads "
             f"{args.threads}`. " + " ".join(__doc__.split("\n\n")[2].split()), "",
             "| recipe | residual Adds fused into a convolution | cosine to float | p50 ms | time over the default |",
             "| --- | --- | --- | --- | --- |"]
    for name, t in timings.items():
        fused, cos = facts[name]
        ratio = paired_ratio(per_round, name, base)  # median over rounds of this recipe's time / the default's
        lines.append(f"| {name} | {fused} | {cos:.5f} | {t.p50:.2f} | {ratio:.3f}x |")
        print(lines[-1], flush=True)
    write_result("openvino_residual_fusion", lines, "torch", "openvino", "nncf")


if __name__ == "__main__":
    main()

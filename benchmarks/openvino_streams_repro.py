"""A minimal reproduction, ready to report upstream: OpenVINO's CPU plugin compiles an NNCF INT8 model with
NUM_STREAMS=2 into one that computes different logits, on some compilations and not others.

    python benchmarks/openvino_streams_repro.py [--trials 20]

The model (53 ops): a 4x4 stem conv, GELU, then Concat([a, a @ W, P @ a]) into a 1x1 conv and a mean.
NNCF's default INT8 of it is compiled again and again, with NUM_STREAMS=1 and with NUM_STREAMS=2
(INFERENCE_PRECISION_HINT=f32 both, one synchronous request, the same input); each 2-stream compilation
is compared with the 1-stream output. Variants that are always right: without the left-operand MatMul
(P @ a) in the Concat, the left MatMul without the Concat, the Concat of plain copies, or FP32. Within
one compiled model the output is stable: the compilation, not the inference, goes wrong. That is why
edgesmlp compiles with one stream (the LATENCY hint). Writes benchmarks/results/openvino_streams_repro.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import write_result  # noqa: E402

C, N = 32, 8


def build(mode: str):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, C, 4, 4)
            self.w = torch.nn.Parameter(torch.randn(N, N) / N**0.5)
            self.p = torch.nn.Parameter(torch.randn(N, N) / N**0.5)
            self.fuse = torch.nn.Conv2d(C if mode == "left matmul alone" else 3 * C, C, 1, bias=False)

        def forward(self, x):
            a = torch.nn.functional.gelu(self.stem(x))
            y = {"concat with left matmul": lambda: torch.cat([a, a @ self.w, self.p @ a], 1),
                 "concat of right matmuls": lambda: torch.cat([a, a @ self.w, a @ self.w.t()], 1),
                 "left matmul alone": lambda: self.p @ a,
                 "concat of copies": lambda: torch.cat([a, a, a], 1)}[mode]()
            return self.fuse(y).mean((2, 3))

    torch.manual_seed(0)
    return Net().eval()


def trial(mode: str, trials: int, int8: bool = True) -> int:
    import nncf
    import openvino as ov
    import torch

    core = ov.Core()
    model = ov.convert_model(build(mode), example_input=torch.zeros(1, 3, 32, 32), input=[-1, 3, 32, 32])
    if int8:
        data = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(32)]
        model = nncf.quantize(model, nncf.Dataset(data), subset_size=32)
    model.reshape({model.inputs[0]: [8, 3, 32, 32]})
    x = np.random.default_rng(99).standard_normal((8, 3, 32, 32)).astype(np.float32)

    def run(streams: int) -> np.ndarray:
        config = {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": streams}
        return core.compile_model(model, "CPU", config).create_infer_request().infer({0: x})[0].copy()

    reference = run(1)
    scale = float(np.abs(reference).max())
    return sum(float(np.abs(run(2) - reference).max()) > 1e-3 * scale for _ in range(trials))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for mode in ("concat with left matmul", "concat of right matmuls", "left matmul alone", "concat of copies"):
        rows.append((mode, "int8", trial(mode, args.trials)))
        print(rows[-1], flush=True)
    rows.append(("concat with left matmul", "fp32", trial("concat with left matmul", args.trials, int8=False)))
    print(rows[-1], flush=True)
    lines = ["# OpenVINO: INT8 compiled with two streams computes other logits (minimal reproduction)", "",
             f"`python benchmarks/openvino_streams_repro.py --trials {args.trials}`: " + __doc__.split("\n\n")[2]
             .replace("\n", " "), "",
             "| model | precision | 2-stream compilations whose logits differ from 1 stream (> 0.1% of max) |",
             "| --- | --- | --- |"]
    lines += [f"| {m} | {p} | {bad} of {args.trials} |" for m, p, bad in rows]
    write_result("openvino_streams_repro", lines, "openvino", "nncf", "torch")


if __name__ == "__main__":
    main()

"""The FP16-typed graphs for strongly typed TensorRT, against their FP32-typed twins, on images the typing never saw.

    python benchmarks/jetson_fp16.py            # about 3 minutes on 2 cores

For the trained bundled model (the first 64 of its 300 calibration images decide which nodes stay FP32; the 500
validation images score) and sMLPNet-T at 224 with random weights (32 calibration images, 32 other images score), each graph is
typed FP16 (``quantize.fp16.to_fp16``) and run by ONNX Runtime through ``emulate_fp16`` (every FP16 tensor
rounded to FP16, as a strongly typed engine holds it). Rows: agreement, logit cosine and the largest logit
difference against the FP32 graph, the nodes kept FP32, and the seconds the typing took. Engine speed is the
device's: this measures what the graphs compute, not how fast TensorRT runs them. Writes
benchmarks/results/jetson_fp16.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import bundled_fp32_onnx, random_smlpnet_t, write_result  # noqa: E402


def run(model, x: np.ndarray) -> np.ndarray:
    from edgesmlp.runtimes.onnxruntime import cpu_session

    session = cpu_session(model.SerializeToString(), threads=2, unfused=True)
    return np.concatenate([session.run(None, {"input": x[i:i + 8]})[0] for i in range(0, len(x), 8)])


def measure(label: str, folder: Path, calibration: np.ndarray, x: np.ndarray, y: np.ndarray | None) -> list[str]:
    import onnx

    from edgesmlp.jobs.evaluate import score
    from edgesmlp.quantization.fp16 import emulate_fp16, float_ranges, to_fp16
    from edgesmlp.quantization.qdq import quantize_qdq

    quantize_qdq(folder / "fp32.onnx", folder / "int8.onnx", calibration)
    fp32_graph, int8_graph = onnx.load(str(folder / "fp32.onnx")), onnx.load(str(folder / "int8.onnx"))
    reference = run(fp32_graph, x)
    span = float(np.abs(reference).max())
    rows = []

    def row(name: str, logits: np.ndarray, kept: str, seconds: str) -> None:
        acc = score(logits, y, reference)
        top1 = "-" if acc.top1 is None else f"{acc.top1:.1f}"
        diff = float(np.abs(logits - reference).max()) / span
        rows.append(f"| {label} | {name} | {top1} | {acc.agreement:.2f} | {acc.cosine:.6f} | {100 * diff:.3f} | "
                    f"{kept} | {seconds} |")
        print(rows[-1], flush=True)

    row("fp32 (FP32-typed)", reference, "-", "-")
    start = time.perf_counter()
    amax = float_ranges(fp32_graph, calibration)  # as the Jetson target does: one pass serves both graphs
    ranges = time.perf_counter() - start
    for name, graph in (("fp16 (model_fp16.onnx)", fp32_graph), ("int8-fp16 (model_int8_qdq_fp16.onnx)", int8_graph)):
        start = time.perf_counter()
        typed, typing = to_fp16(graph, calibration, amax=amax)
        seconds = time.perf_counter() - start + (ranges if graph is fp32_graph else 0.0)
        kept = f"{len(typing.fp32_nodes)} of {len(typed.graph.node)}"
        row(name, run(emulate_fp16(typed), x), kept, f"{seconds:.1f}")
        if typing.fp32_nodes:  # what the 512 rule bought: the same graph typed FP16 throughout
            naive, _ = to_fp16(graph, calibration, data_max=float("inf"), amax=amax)
            row(f"{name.split()[0]}, every node FP16", run(emulate_fp16(naive), x), "0", "-")
    row("int8 (model_int8_qdq.onnx, FP32-typed)", run(int8_graph, x), "-", "-")
    return rows


def main() -> None:
    import torch

    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import export_onnx

    torch.set_num_threads(2)
    lines = ["# FP16-typed graphs for strongly typed TensorRT, emulated on the CPU", "",
             "`python benchmarks/jetson_fp16.py`. ONNX Runtime runs each graph; FP16-typed ones through "
             "`emulate_fp16`, every FP16 tensor rounded to FP16. Agreement, cosine and the largest logit difference "
             "(% of the FP32 logits' largest magnitude) are against the FP32 graph on images the typing never saw. "
             "\"kept FP32\": nodes the 512 rule left in FP32, of all nodes. Seconds: typing the graph; the fp16 row "
             "adds the one pass that measures every tensor's range (at most 64 calibration images), which the "
             "int8-fp16 row reuses, as `quantize --target jetson` does.", "",
             "| model | graph | top-1 % | agreement % | logit cosine | max logit diff % | kept FP32 | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        _, xc, xv, yv = bundled_fp32_onnx(folder)
        lines += measure("bundled digits (trained), 500 val images", folder, xc, xv, yv)
        model = random_smlpnet_t()
        export_onnx(to_deploy(model), folder / "fp32.onnx", 224, dynamic_batch=True, reference=model)
        rng = np.random.default_rng(0)
        images = rng.standard_normal((64, 3, 224, 224)).astype(np.float32)
        lines += measure("sMLPNet-T 224 (random weights), 32 other images", folder, images[:32], images[32:], None)
    lines += ["", "A random sMLPNet-T has no clear winner among its logits, so its agreement moves with any "
              "rounding; cosine and the logit difference say how close the FP16 graph stays."]
    write_result("jetson_fp16", lines, "onnx", "onnxruntime")


if __name__ == "__main__":
    main()

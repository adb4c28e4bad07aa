"""Reference form vs deploy form, FP32, in ONNX Runtime and OpenVINO, interleaved in one process.

    python benchmarks/deploy_form.py [--rounds 5] [--iters 10] [--threads 2]

Models: sMLPNet-T at 224 (random weights with non-trivial norm statistics: speed does not depend
on the values) and the bundled digits model. Prints p50/p90 per (model, batch, runtime, form) and the
median of per-round reference/deploy ratios (> 1: deploy is faster); writes the table, machine and
library versions to benchmarks/results/deploy_form.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgesmlp.checkpoint import load_checkpoint
from edgesmlp.deploy import to_deploy
from edgesmlp.export import export_onnx
from edgesmlp.timing import interleaved, paired_ratio

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import random_smlpnet_t, write_result  # noqa: E402


def ort_runner(path: Path, x: np.ndarray, threads: int):
    from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner

    run = OnnxRuntimeRunner(path, threads)
    return lambda: run(x)


def openvino_runner(path: Path, x: np.ndarray, threads: int):
    import openvino as ov

    from edgesmlp.runtimes.openvino import OpenVINORunner

    run = OpenVINORunner(ov.Core().read_model(str(path)), len(x), threads)  # FP32 hint, one stream
    return lambda: run(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {
        "sMLPNet-T 224 (random)": random_smlpnet_t(),
        "bundled digits 32": load_checkpoint().model,
    }
    rows, tmp = [], Path(tempfile.mkdtemp())
    for label, model in models.items():
        size = model.config.image_size
        paths = {"reference": tmp / "ref.onnx", "deploy": tmp / "deploy.onnx"}
        export_onnx(model, paths["reference"], size, dynamic_batch=True)
        export_onnx(to_deploy(model), paths["deploy"], size, dynamic_batch=True, reference=model)
        for batch in args.batches:
            x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
            candidates = {}
            for form, path in paths.items():
                candidates[("onnxruntime", form)] = ort_runner(path, x, args.threads)
                candidates[("openvino", form)] = openvino_runner(path, x, args.threads)
            named = {f"{rt}/{form}": fn for (rt, form), fn in candidates.items()}
            timings, per_round = interleaved(named, rounds=args.rounds, iters=args.iters)
            for runtime in ("onnxruntime", "openvino"):
                ratio = paired_ratio(per_round, f"{runtime}/reference", f"{runtime}/deploy")
                ref, dep = timings[f"{runtime}/reference"], timings[f"{runtime}/deploy"]
                rows.append(dict(model=label, batch=batch, runtime=runtime, ref_p50=ref.p50, ref_p90=ref.p90,
                                 deploy_p50=dep.p50, deploy_p90=dep.p90, speedup=ratio))
                print(f"{label:24s} b{batch:<2d} {runtime:12s} reference {ref.p50:8.2f} ms (p90 {ref.p90:8.2f})  "
                      f"deploy {dep.p50:8.2f} ms (p90 {dep.p90:8.2f})  speedup {ratio:.2f}x", flush=True)
    write_results(rows, args)


def write_results(rows: list[dict], args) -> None:
    lines = [
        "# Deploy form vs reference form (FP32)",
        "",
        f"`python benchmarks/deploy_form.py --rounds {args.rounds} --iters {args.iters} --threads {args.threads}`: "
        "both forms timed in interleaved rounds in one process; speedup is the median over rounds of "
        "reference/deploy (> 1: deploy is faster). OpenVINO runs with INFERENCE_PRECISION_HINT=f32 (its CPU "
        "default on bf16-capable CPUs is bf16).",
        "",
        "| model | batch | runtime | reference p50 ms | p90 | deploy p50 ms | p90 | speedup |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['runtime']} | {r['ref_p50']:.2f} | {r['ref_p90']:.2f} | "
                     f"{r['deploy_p50']:.2f} | {r['deploy_p90']:.2f} | {r['speedup']:.2f}x |")
    write_result("deploy_form", lines, "torch", "onnxruntime", "openvino")


if __name__ == "__main__":
    main()

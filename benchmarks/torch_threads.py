"""What PyTorch's OpenMP threads cost when they spin: its own row, the runtime evaluated next to it, and a machine
another job shares.

    python benchmarks/torch_threads.py [--rounds 3]

PyTorch's CPU wheel runs its ops on libgomp, whose threads spin after every parallel region (OMP_WAIT_POLICY
unset: a short spin, then sleep) instead of giving the cores back. Each measurement runs in a fresh process, so
the policy is read when torch loads, in interleaved rounds (default, PASSIVE, default, ...):

- the torch row alone: the bundled model's batch-1 p50 and batch-8 throughput, 2 threads;
- its neighbour: ONNX Runtime's batch-1 p50 of the same model right after a torch batch (as evaluation
  alternates rows), against ONNX Runtime after ONNX Runtime;
- a busy machine: the torch row's batch-8 throughput while a niced busy loop holds one of the 2 cores, at 2
  threads and at 1.

Writes benchmarks/results/torch_threads.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import write_result  # noqa: E402

POLICIES = ("default", "PASSIVE")
BUSY_LOOP = "import os; os.nice(10)\nwhile True: pass"


def child(onnx_path: str, threads: int) -> dict:
    """Measured in this process, whose OMP_WAIT_POLICY the parent set."""
    import numpy as np
    import torch

    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.runtimes.onnxruntime import OnnxRuntimeRunner

    torch.set_num_threads(threads)
    model = load_checkpoint().model.eval()
    x1 = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    x8 = np.random.default_rng(1).random((8, 3, 32, 32), dtype=np.float32)

    @torch.no_grad()
    def eager(x):
        return model(torch.from_numpy(x)).numpy()

    ort = OnnxRuntimeRunner(onnx_path, 2)
    for _ in range(50):
        eager(x1), eager(x8), ort(x1)

    def p50(f, x, n=300):
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            f(x)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples) * 1e3

    def after(first, x, n=300):  # ORT's batch-1 time right after ``first`` ran a batch
        samples = []
        for _ in range(n):
            first(x8)
            start = time.perf_counter()
            ort(x)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples) * 1e3

    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < 2.0:
        eager(x8)
        runs += 1
    got = {"torch_p50_ms": p50(eager, x1), "torch_ips": runs * 8 / (time.perf_counter() - start),
           "ort_after_torch_ms": after(eager, x1), "ort_after_ort_ms": after(ort, x1)}
    return got


def run_child(policy: str, onnx_path: Path, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, __file__, "--child", str(onnx_path), "--threads", str(threads)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.threads)))
        return
    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import export_onnx

    ckpt = load_checkpoint()
    onnx_path = Path(tempfile.mkdtemp()) / "digits.onnx"
    export_onnx(to_deploy(ckpt.model), onnx_path, 32, dynamic_batch=True, reference=ckpt.model)
    quiet = {p: [] for p in POLICIES}
    loaded = {(p, t): [] for p in POLICIES for t in (2, 1)}
    for r in range(args.rounds):
        for policy in POLICIES:
            quiet[policy].append(run_child(policy, onnx_path, 2))
            print(f"round {r + 1} quiet {policy}: {quiet[policy][-1]}", flush=True)
        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        try:
            time.sleep(0.5)
            for policy in POLICIES:
                for threads in (2, 1):
                    loaded[(policy, threads)].append(run_child(policy, onnx_path, threads))
                    print(f"round {r + 1} busy {policy} {threads} threads: {loaded[(policy, threads)][-1]}",
                          flush=True)
        finally:
            busy.kill()
            busy.wait()

    def med(rows, key):
        return statistics.median(row[key] for row in rows)

    lines = ["# PyTorch's OpenMP threads: spinning (the default) against passive waiting", "",
             f"`python benchmarks/torch_threads.py --rounds {args.rounds}`: the bundled model (32x32), FP32, torch "
             "eager and ONNX Runtime, 2 threads each unless said, each measurement in a fresh process with "
             "OMP_WAIT_POLICY unset (libgomp's default) or PASSIVE, policies interleaved; medians over rounds.", "",
             "Quiet machine:", "",
             "| OMP_WAIT_POLICY | torch batch-1 p50 ms | torch batch-8 img/s | ONNX Runtime batch-1 p50 ms after a "
             "torch batch | after an ONNX Runtime batch | cost of the torch neighbour |",
             "| --- | --- | --- | --- | --- | --- |"]
    for policy in POLICIES:
        rows = quiet[policy]
        lines.append(f"| {policy} | {med(rows, 'torch_p50_ms'):.3f} | {med(rows, 'torch_ips'):.0f} | "
                     f"{med(rows, 'ort_after_torch_ms'):.3f} | {med(rows, 'ort_after_ort_ms'):.3f} | "
                     f"{med(rows, 'ort_after_torch_ms') / med(rows, 'ort_after_ort_ms'):.2f}x |")
    lines += ["", "A niced busy loop holding one of the 2 cores:", "",
              "| OMP_WAIT_POLICY | torch threads | torch batch-8 img/s | against the quiet machine's default |",
              "| --- | --- | --- | --- |"]
    base = med(quiet["default"], "torch_ips")
    for (policy, threads), rows in loaded.items():
        lines.append(f"| {policy} | {threads} | {med(rows, 'torch_ips'):.0f} | {med(rows, 'torch_ips') / base:.2f}x |")
    lines += ["", "What edgesmlp does with this: it leaves libgomp's wait policy alone (passive waiting slows the torch "
              "row itself), runs the torch row on its own `--threads` for each call and gives the process's count "
              "back, and evaluates a chunk of images per row, so the spinning after a row's last batch is paid once "
              "a chunk. On a machine where other work holds cores, the report names it (`report.busy`) and "
              "`--threads` takes fewer."]
    print("\n".join(lines))
    write_result("torch_threads", lines, "torch", "onnxruntime")


if __name__ == "__main__":
    main()

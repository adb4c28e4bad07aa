"""Calibration batch size for edgesmlp's OpenVINO PTQ: time, memory and the INT8 graph (sMLPNet-T, 224).

    python benchmarks/openvino_ptq_batch.py [--calib 300] [--batches 1 2 4 8] [--rounds 2]

NNCF runs one inference per calibration item; `--calib-batch B` (``OpenVINOPTQConfig.calib_batch``) hands it B
images an item. With min-max activation ranges (edgesmlp's default) a range is the min or max over all the images
however they are batched, so every B should give the same INT8 graph in B times fewer inferences. Each B runs the
shipped recipe (``quantize_openvino``, on the openvino target's channels-last calibration graph, random weights) in a fresh
process, measured by ``openvino_int8.measure_ptq`` as that benchmark's PTQ row is; resident memory is sampled during the PTQ call
alone, and every FakeQuantize's four range constants are compared with the batch-1 graph's. Writes
benchmarks/results/openvino_ptq_batch.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))
from benchmarks.common import write_result  # noqa: E402
from openvino_int8 import measure_ptq  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=300)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the batch sizes, in alternating order")
    args = parser.parse_args()
    batches = sorted(set(args.batches) | {1})
    runs: dict[int, list[dict]] = {batch: [] for batch in batches}
    for k in range(args.rounds):  # the host drifts: alternate the order and pair each B with batch 1 in its round
        for batch in batches if k % 2 == 0 else batches[::-1]:
            runs[batch].append(r := measure_ptq("edgesmlp", args.calib, batch, ranges=True))
            print(f"round {k}, batch {batch}: {r['seconds']:.1f} s, peak RSS during PTQ {r['peak_rss_mb']:.0f} MB "
                  f"(+{r['ptq_rss_increase_mb']:.0f})", flush=True)
    results = {batch: {"seconds": statistics.median(r["seconds"] for r in rs),
                       "speedup": statistics.median(runs[1][k]["seconds"] / r["seconds"] for k, r in enumerate(rs)),
                       "peak_mb": max(r["peak_rss_mb"] for r in rs),
                       "increase_mb": max(r["ptq_rss_increase_mb"] for r in rs),
                       "ranges": rs[0]["ranges"]} for batch, rs in runs.items()}
    reference = results[1]["ranges"]
    lines = ["# OpenVINO PTQ: calibration images per NNCF item (sMLPNet-T, 224)", "",
             f"`python benchmarks/openvino_ptq_batch.py --calib {args.calib} --batches {' '.join(map(str, batches))} "
             f"--rounds {args.rounds}`: the shipped recipe with B of the same calibration images an item, each run in "
             "a fresh process, the batch sizes in alternating order each round; seconds are the median over rounds "
             "and the speedup the median of batch-1 time over batch-B time in the same round; memory (the most "
             "over rounds) is sampled during the PTQ call; range difference: the largest relative difference of any FakeQuantize "
             "range constant from the batch-1 graph's.", "",
             "| images an item | PTQ seconds | speedup | peak RSS during PTQ MB | increase during PTQ MB | "
             "FakeQuantizes | range difference |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for batch, r in results.items():
        same = set(r["ranges"]) == set(reference)
        diff = max(float(np.abs(r["ranges"][k] - v).max() / max(np.abs(v).max(), 1e-12))
                   for k, v in reference.items()) if same else float("nan")
        lines.append(f"| {batch} | {r['seconds']:.1f} | {r['speedup']:.2f}x | {r['peak_mb']:.0f} | {r['increase_mb']:.0f} | "
                     f"{len(r['ranges'])}{'' if same else ' (other nodes)'} | {diff:.1e} |")
    write_result("openvino_ptq_batch", lines, "openvino", "nncf", "torch")


if __name__ == "__main__":
    main()

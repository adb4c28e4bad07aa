"""What evaluation costs beyond the runtimes' own work: `bench` on a validation set, each row's seconds inside its
runner against one pass over the images at that row's own measured throughput (same batch), and the fixed costs
(decoding images, compiling, timing).

    python benchmarks/evaluation_overhead.py [--copies 8]

The bundled model, all CPU targets, the bundled digits' validation split augmented ``--copies`` times
(bundled.write_augmented_imagefolders: 500 x copies images). Goal (issue: time to a verdict): every row's
evaluation within 1.5x of its one pass. Writes benchmarks/results/evaluation_overhead.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import write_result  # noqa: E402

GOAL = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8)
    args = parser.parse_args()
    import edgesmlp
    from edgesmlp import bundled

    root = Path(tempfile.mkdtemp())
    bundled.write_augmented_imagefolders(root / "data", {"val": args.copies})
    start = time.perf_counter()
    report = edgesmlp.bench(val=root / "data" / "val", output=root / "bench", latency_seconds=2.0, progress=True)
    wall = time.perf_counter() - start
    seconds = report.data["seconds"]
    inside = seconds["evaluate_by_row"]
    lines = ["# Evaluation against one pass at each row's own throughput", "",
             f"`python benchmarks/evaluation_overhead.py --copies {args.copies}`: `edgesmlp.bench` (every CPU "
             f"target) on {report.data['data']['val_images']} augmented digit images, batch 8, 2 threads. A row's "
             "one pass is its images over its own throughput at batch 8 (measured by the same run); its evaluation "
             "is the time inside its runner while streaming the images once through every row.", "",
             "| row | evaluation (s) | one pass at its throughput (s) | ratio |", "| --- | --- | --- | --- |"]
    worst = 0.0
    for row in report.rows:
        key = next((k for k in inside if k in (f"{row.target}/{row.precision}", f"{row.target} {row.precision}")),
                   None)
        if row.status != "ok" or key is None or not row.throughput_ips:
            continue
        one_pass = row.images / row.throughput_ips
        ratio = inside[key] / one_pass
        worst = max(worst, ratio)
        lines.append(f"| {row.target} {row.precision} | {inside[key]:.2f} | {one_pass:.2f} | {ratio:.2f}x |")
    phases = {k: v for k, v in seconds.items() if isinstance(v, (int, float))}
    lines += ["", f"Worst row: {worst:.2f}x (goal: at most {GOAL}x). Decoding the images once for every row: "
              f"{inside.get('images', 0):.1f} s. Phases (s): "
              + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()) + f"; the whole bench: {wall:.0f} s."]
    print("\n".join(lines))
    write_result("evaluation_overhead", lines, "torch", "openvino", "onnxruntime")


if __name__ == "__main__":
    main()

"""Does QAT recover what PTQ loses? PTQ and QAT side by side on the bundled model, both targets.

    python benchmarks/qat_recovery.py

Settings: each target's defaults (PTQ already within 0.2 points there), and one where PTQ measurably
loses: OpenVINO calibrated on a single image, Jetson calibrated on blank images. QAT: 3 epochs on the
997-image train split. Writes benchmarks/results/qat_recovery.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.common import write_result  # noqa: E402


def main() -> None:
    from PIL import Image

    from edgesmlp.jobs.quantize import run_quantize
    from edgesmlp.jobs.spec import Calibration, QuantizeRequest
    from edgesmlp.quantization.qat import QATConfig
    from edgesmlp.targets.base import RunSettings

    tmp = Path(tempfile.mkdtemp())
    blank = tmp / "blank"
    blank.mkdir()
    for i in range(40):
        Image.new("RGB", (32, 32)).save(blank / f"{i}.png")
    settings = [
        ("openvino", "defaults (300 calibration images)", {}),
        ("openvino", "1 calibration image", {"calibration": Calibration(size=1, seed=3)}),
        ("jetson", "defaults (300 calibration images)", {}),
        ("jetson", "40 blank calibration images", {"calibration": Calibration(images=blank)}),
    ]
    rows = []
    for target, label, extra in settings:
        start = time.perf_counter()
        outcome = run_quantize(QuantizeRequest(target=target, output=tmp / f"{len(rows)}",
                                               run=RunSettings(latency_iters=5), qat=QATConfig(epochs=3), **extra), log=lambda _: None)
        r = {x["precision"]: x for x in outcome.report["results"]}
        rows.append((target, label, r["fp32"], r["int8-ptq"], r["int8"], time.perf_counter() - start))
        print(f"{target:9s} {label:36s} fp32 {r['fp32']['top1']:.1f} ptq {r['int8-ptq']['top1']:.1f} "
              f"qat {r['int8']['top1']:.1f}", flush=True)
    lines = ["# QAT recovery on the bundled model (500 validation images)", "",
             "`python benchmarks/qat_recovery.py`: `quantize --method qat --epochs 3` on the 997-image train split; "
             "the PTQ row is the same job's post-training result. Jetson INT8 is emulated (ONNX Runtime executing the "
             "Q/DQ graph).", "",
             "| target | setting | FP32 top-1 | PTQ top-1 | PTQ agree | QAT top-1 | QAT agree | job seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for target, label, f, p, q, s in rows:
        lines.append(f"| {target} | {label} | {f['top1']:.1f} | {p['top1']:.1f} | {p['agreement']:.1f} | "
                     f"{q['top1']:.1f} | {q['agreement']:.1f} | {s:.0f} |")
    write_result("qat_recovery", lines, "torch", "openvino", "nncf", "onnxruntime")


if __name__ == "__main__":
    main()

"""edgesmlp from Python: quantize for both targets, benchmark what was built, gate it, rank layers.

    python examples/python_api.py [OUT]

Runs on the bundled digits model and its images in about a minute on 2 cores. With your own model, give
``weights="smlp_t.pth"`` (or the sMLPNet you trained) and ``calib=``/``val=`` your image folders.
"""

import sys
from pathlib import Path

import numpy as np

import edgesmlp

out = Path(sys.argv[1] if len(sys.argv) > 1 else "edgesmlp-example")

# The checkpoint: an eval-mode sMLPNet, its config, and the preprocessing it was trained with.
ckpt = edgesmlp.load()
print(f"loaded {ckpt.config.variant or 'custom'} sMLPNet at {ckpt.config.image_size}px, sha256 {ckpt.sha256[:12]}")

# Images in memory work as well as folders: here 64 calibration images, preprocessed as the model expects.
from edgesmlp.calibration.sources import open_images  # noqa: E402 (the bundled digits, as PIL images)

calib = np.stack([ckpt.preprocess(item.image) for item in open_images(None, "calib").items[:64]])

# INT8 for the Jetson (TensorRT Q/DQ bundle) and for Intel CPUs (OpenVINO IR), judged against the same budget.
for target in ("jetson", "openvino"):
    result = edgesmlp.quantize(ckpt, target=target, calib=calib, output=out, force=True, max_drop=1.0,
                               latency_seconds=0.2)
    int8 = next(row for row in result.rows if row.precision == "int8")
    verdict = "PASS" if result.gate.ok else "FAIL: " + "; ".join(result.gate.violations)
    print(f"{target}: {verdict}; int8 top-1 {int8.top1:.1f}%, agreement {int8.agreement:.1f}%, "
          f"{len(int8.kept_float or [])} layers in float -> {result.folder}")

# Benchmark what was built (as `edgesmlp bench --from OUT`), then gate the report (as `edgesmlp check`).
report = edgesmlp.bench(source=out, output=f"{out}-bench", force=True, latency_seconds=0.2)
for row in report.rows:
    if row.status == "ok":
        print(f"  {row.target:<12} {row.precision:<9} top-1 {row.top1:5.1f}%  p50 {row.latency_ms_p50:.3f} ms")
gate = edgesmlp.check(report, max_drop=1.0)
print(f"gate: {'PASS' if gate.ok else 'FAIL'} ({gate.checked} comparisons) on {report.path}")

# A bad argument raises the error the command line prints, with the same message.
try:
    edgesmlp.quantize(ckpt, target="jetson", fuse="conv")
except edgesmlp.InputError as error:
    print(f"refused: {error}")
sys.exit(0 if gate.ok else 1)

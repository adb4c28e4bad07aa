"""Make the ModelOpt INT8 Q/DQ fixtures that tests/test_qdq_lint.py checks lint-qdq against.

    pip install -c constraints.txt -e ".[workstation]" "nvidia-modelopt[onnx]"
    python scripts/make_modelopt_fixture.py

NVIDIA's ModelOpt (``modelopt.onnx.quantization``, its ONNX PTQ for TensorRT) quantizes the bundled digits
model's FP32 ONNX, both forms (the deploy form and the official graph), with its defaults (entropy
calibration, FP16 for what stays in float) on the bundled calibration split; ONNX Runtime's CPU provider
runs the calibration. Writes tests/fixtures/modelopt_int8_{deploy,reference}.onnx. The tests need no
ModelOpt: they read these files.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "fixtures"


def main() -> None:
    from modelopt.onnx.quantization import quantize

    from edgesmlp.calibration.sources import load_tensors, open_images
    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import export_onnx

    ckpt = load_checkpoint(None)
    images = open_images(None, "calib").sample(128, 0)
    calibration = np.ascontiguousarray(load_tensors(images, ckpt.preprocess, "calibration").x, dtype=np.float32)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for form, model in (("deploy", to_deploy(ckpt.model)), ("reference", ckpt.model)):
            fp32 = Path(scratch) / f"{form}.onnx"
            export_onnx(model, fp32, 32, reference=ckpt.model)
            out = FIXTURES / f"modelopt_int8_{form}.onnx"
            quantize(str(fp32), quantize_mode="int8", calibration_data=calibration, calibration_eps=["cpu"],
                     output_path=str(out))
            print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

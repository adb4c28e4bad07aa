"""Shared by the benchmark scripts: where results go and the machine/versions footer they end with."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgesmlp.timing import library_versions, machine_info

RESULTS = Path(__file__).parent / "results"


def random_smlpnet_t():
    """sMLPNet-T with seeded random weights and non-trivial BatchNorm statistics: speed does not depend on
    the values, but folding must see real statistics (the defaults fold to identities)."""
    import torch

    from edgesmlp import create_model

    torch.manual_seed(0)
    model = create_model("smlpnet_t")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5, generator=g)
                m.running_var.uniform_(0.1, 2.0, generator=g)
    return model.eval()


def bundled_fp32_onnx(folder: Path):
    """The bundled model's deploy form as FP32 ONNX (dynamic batch) in ``folder``, and its calibration and
    validation splits as arrays: (path, calibration, validation images, validation labels)."""
    from edgesmlp import bundled
    from edgesmlp.checkpoint import load_checkpoint
    from edgesmlp.deploy import to_deploy
    from edgesmlp.export import export_onnx

    ckpt = load_checkpoint()
    path = folder / "fp32.onnx"
    export_onnx(to_deploy(ckpt.model), path, 32, dynamic_batch=True, reference=ckpt.model)
    xc, _ = bundled.split_tensors("calib")
    xv, yv = bundled.split_tensors("val")
    return path, xc.numpy(), xv.numpy(), yv.numpy()


def write_result(name: str, lines: list[str], *packages: str) -> Path:
    """Write ``lines`` plus the machine and library versions to benchmarks/results/<name>.md."""
    info = {**machine_info(), **library_versions(*packages, "edgesmlp")}
    text = "\n".join([*lines, "", "Machine and versions:", "", "```json", json.dumps(info, indent=2), "```", ""])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)
    return path

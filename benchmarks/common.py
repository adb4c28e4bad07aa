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


def write_result(name: str, lines: list[str], *packages: str) -> Path:
    """Write ``lines`` plus the machine and library versions to benchmarks/results/<name>.md."""
    info = {**machine_info(), **library_versions(*packages, "edgesmlp")}
    text = "\n".join([*lines, "", "Machine and versions:", "", "```json", json.dumps(info, indent=2), "```", ""])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)
    return path

"""Shared by the benchmark scripts: where results go and the machine/versions footer they end with."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgesmlp.timing import library_versions, machine_info

RESULTS = Path(__file__).parent / "results"


def write_result(name: str, lines: list[str], *packages: str) -> Path:
    """Write ``lines`` plus the machine and library versions to benchmarks/results/<name>.md."""
    info = {**machine_info(), **library_versions(*packages, "edgesmlp")}
    text = "\n".join([*lines, "", "Machine and versions:", "", "```json", json.dumps(info, indent=2), "```", ""])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)
    return path

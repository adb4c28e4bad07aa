"""`edgesmlp check`: the CI gate on a report, alone or against a baseline report.

Exit codes: 0 every check passed, 1 a check failed (each violation listed), 2 usage error (a
missing or unreadable report, another schema), 3 any other failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgesmlp.errors import InputError
from edgesmlp.jobs.report import SCHEMA


@dataclass
class GateOutcome:
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def passed(self) -> bool:
        return not self.violations


def load_report(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise InputError(f"{path}: no such report; give a report.json written by edgesmlp quantize or bench")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e.__class__.__name__}); regenerate it with edgesmlp bench") from None
    schema = report.get("schema") if isinstance(report, dict) else None
    if schema != SCHEMA:
        raise InputError(f"{path} has schema {schema!r}, but this edgesmlp reads {SCHEMA!r}: regenerate the report "
                         "with this version (edgesmlp bench), or check it with the edgesmlp that wrote it")
    return report


def _key(row: dict) -> str:
    return f"{row['target']}/{row['precision']}"


def check_report(report: dict, baseline: dict | None = None, max_drop: float = 0.5,
                 max_latency_regression: float = 0.15) -> GateOutcome:
    out = GateOutcome()
    rows = report["results"]
    for row in rows:
        if row["status"] == "failed":
            out.violations.append(f"{_key(row)} failed: {row.get('note') or 'no reason given'}")
        elif row["status"] == "skipped":
            out.notes.append(f"{row['target']} skipped: {row.get('note')}")
    for row in (r for r in rows if r["status"] == "ok" and r["precision"] == "int8"):
        out.checked += 1
        if row.get("drop_top1") is None:
            agreement = row.get("agreement")
            out.notes.append(f"{_key(row)}: no labels, so no top-1 drop; agreement with FP32 {agreement:.2f}%"
                             if agreement is not None else f"{_key(row)}: no accuracy to check")
            continue
        if row["drop_top1"] > max_drop:
            out.violations.append(f"{_key(row)} top-1 {row['top1']:.2f}% is {row['drop_top1']:.2f} points below its "
                                  f"FP32 (allowed {max_drop:g})")
    if baseline is not None:
        _against_baseline(out, rows, baseline["results"], max_drop, max_latency_regression)
    return out


def _against_baseline(out: GateOutcome, rows, base_rows, max_drop: float, max_regression: float) -> None:
    current = {_key(r): r for r in rows if r["status"] == "ok"}
    before = {_key(r): r for r in base_rows if r["status"] == "ok"}
    for key in sorted(current.keys() & before.keys()):
        now, was = current[key], before[key]
        out.checked += 1
        if now.get("top1") is not None and was.get("top1") is not None and was["top1"] - now["top1"] > max_drop:
            out.violations.append(f"{key} top-1 {now['top1']:.2f}% is {was['top1'] - now['top1']:.2f} points below "
                                  f"the baseline's {was['top1']:.2f}% (allowed {max_drop:g})")
        p50, base_p50 = now.get("latency_ms_p50"), was.get("latency_ms_p50")
        if p50 is not None and base_p50 and p50 > base_p50 * (1 + max_regression):
            out.violations.append(f"{key} latency p50 {p50:.3g} ms is {100 * (p50 / base_p50 - 1):.0f}% above the "
                                  f"baseline's {base_p50:.3g} ms (allowed {100 * max_regression:.0f}%)")
    for key in sorted(current.keys() - before.keys()):
        out.notes.append(f"{key}: not in the baseline, not compared")
    for key in sorted(before.keys() - current.keys()):
        out.notes.append(f"{key}: in the baseline only, not compared")

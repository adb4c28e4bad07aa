"""`edgesmlp check`: the CI gate on a report, alone or against a baseline report.

The gate trusts no stored verdict: it validates the report's structure, recomputes every drop from
the rows' own top-1 values, and fails when there is nothing to compare (unless told that is fine).

Exit codes: 0 every check passed, 1 a check failed (each violation listed), 2 usage error (a
missing, unreadable or malformed report, a threshold that is not a finite non-negative number).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from edgesmlp.artifacts import strict_json
from edgesmlp.errors import ConfigError, InputError
from edgesmlp.jobs.report import SCHEMA
from edgesmlp.precision import FLOAT, Precision, accuracy_reference
from edgesmlp.quantization.budget import DEFAULT_MAX_DROP

ROW_KEYS = {"target": str, "precision": str, "status": str}
STATUSES = ("ok", "failed", "skipped")
# Every number the gate reads, and the range a measurement can have: a report outside it was not written by a
# run (or was edited), and judging it would pass what no run measured.
NUMBER_KEYS = {"top1": (0.0, 100.0), "agreement": (0.0, 100.0), "latency_ms_p50": (0.0, None),
               "latency_ms_iqr": (0.0, None), "speedup": (0.0, None)}


@dataclass
class GateOutcome:
    """The gate's verdict (``edgesmlp.Gate`` in the Python API): ``ok``, or the ``violations``."""

    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)  # each comparison that passed, with its margin

    @property
    def checked(self) -> int:
        return len(self.passes) + len(self.violations)

    @property
    def passed(self) -> bool:
        return not self.violations

    ok = passed

    def __bool__(self) -> bool:
        return self.passed


def check_threshold(value: float, option: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{option} must be a finite number of 0 or more, got {value}")
    return float(value)


def load_report(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise InputError(f"{path}: no such report; give a report.json written by edgesmlp quantize or bench")
    try:
        report = strict_json(path.read_text())
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(f"{path} is not valid JSON ({e.__class__.__name__}: {str(e)[:80]}); regenerate it with "
                         "edgesmlp bench") from None
    schema = report.get("schema") if isinstance(report, dict) else None
    if schema != SCHEMA:
        raise InputError(f"{path} has schema {schema!r}, but this edgesmlp reads {SCHEMA!r}: regenerate the report "
                         "with this version (edgesmlp bench), or check it with the edgesmlp that wrote it")
    _check_structure(report, path)
    return report


def _number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _check_structure(report: dict, path: Path) -> None:
    rows = report.get("results")
    if not isinstance(rows, list):
        raise InputError(f"{path}: 'results' is {type(rows).__name__}, not a list of rows; regenerate the report")
    asked = report.get("targets", [])
    if not isinstance(asked, list) or not all(isinstance(t, str) for t in asked):
        raise InputError(f"{path}: 'targets' is not a list of target names; regenerate the report")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(f"{path}: results[{i}] is {type(row).__name__}, not a row; regenerate the report")
        for key, kind in ROW_KEYS.items():
            if not isinstance(row.get(key), kind):
                raise InputError(f"{path}: results[{i}] has no {key!r} string; regenerate the report")
            if not row[key].isprintable() or len(row[key]) > 200:  # it is printed: no escape sequence may reach a terminal
                raise InputError(f"{path}: results[{i}] {key!r} holds control characters or is over 200 characters; "
                                 "regenerate the report")
        if row["status"] not in STATUSES:
            raise InputError(f"{path}: results[{i}] status {row['status']!r} is none of {', '.join(STATUSES)}")
        for key, (low, high) in NUMBER_KEYS.items():
            value = row.get(key)
            if not _number(value) or (value is not None and not math.isfinite(value)):
                raise InputError(f"{path}: results[{i}] {key!r} is {value!r}, not a finite number or null")
            if value is not None and (value < low or (high is not None and value > high)):
                span = f"[{low:g}, {high:g}]" if high is not None else f"{low:g} or more"
                raise InputError(f"{path}: results[{i}] {key!r} is {value!r}, outside {span}: no run measures that; "
                                 "regenerate the report")
    seen: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        key = (row["target"], row["precision"])
        if key in seen:  # which of two rows is "the" row would decide the verdict by their order
            raise InputError(f"{path}: results[{i}] repeats {_key(row)} of results[{seen[key]}]; one report holds one "
                             "row per target and precision: regenerate it")
        seen[key] = i


def check_same_subject(report: dict, baseline: dict) -> None:
    """Refuse a baseline of another model (architecture, classes, input size) or another validation set (its
    image count): their numbers say nothing of this run's. Fields a report lacks are not compared."""
    def subject(r: dict) -> dict:
        model = r.get("model") if isinstance(r.get("model"), dict) else {}
        data = r.get("data") if isinstance(r.get("data"), dict) else {}
        config = model.get("config") if isinstance(model.get("config"), dict) else {}
        fields = {f"model {k}": config.get(k, model.get(k)) for k in ("num_classes", "image_size", "dim", "depths")}
        return {**fields, "validation images": data.get("val_images")}

    now, then = subject(report), subject(baseline)
    differ = [k for k in now if now[k] is not None and then[k] is not None and now[k] != then[k]]
    if differ:
        k = differ[0]
        raise InputError(f"the baseline is of another model or data set ({k} {_printable(then[k])} there, "
                         f"{_printable(now[k])} in this report): give the baseline of this model and images, or pass "
                         "--allow-other-baseline")


def _printable(text) -> str:
    """A report's free text as it may reach a terminal: control characters (an escape sequence, a newline that
    would forge an output line) shown as escapes, at most 300 characters."""
    text = str(text or "")[:300]
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _key(row: dict) -> str:
    return f"{row['target']}/{row['precision']}"


def check_report(report: dict, baseline: dict | None = None, max_drop: float = DEFAULT_MAX_DROP,
                 max_latency_regression: float | None = None, allow_empty: bool = False,
                 latency: str = "speedup", min_agreement: float | None = None,
                 allow_other_baseline: bool = False) -> GateOutcome:
    """Every INT8 row within ``max_drop`` top-1 points of its own target's float row, recomputed here, and
    (with ``min_agreement``) agreeing with FP32 on at least that % of images. Comparison rows (``compare_only``:
    full INT8 beside a shipped model that keeps layers in float) are shown, never gated."""
    max_drop = check_threshold(max_drop, "--max-drop")
    out = GateOutcome()
    rows = report["results"]
    for row in rows:
        if row["status"] == "failed":
            out.violations.append(f"{_key(row)} failed: {_printable(row.get('note')) or 'no reason given'}")
        elif row["status"] == "skipped":
            out.notes.append(f"{row['target']} skipped: {_printable(row.get('note'))}")
    float_row = accuracy_reference(rows)
    asked = report.get("targets")  # what the run was asked for (older reports: every row's target)
    unasked = sorted({r["target"] for r in rows if asked is not None and r["target"] not in asked})
    if unasked:
        out.notes.append(f"{', '.join(unasked)}: not asked for by the run, so listed, not gated")
    for row in (r for r in rows if r["status"] == "ok" and r["precision"].startswith(Precision.int8.value)
                and not r.get("compare_only") and r["target"] not in unasked):
        _check_int8(out, row, float_row(row["target"]), max_drop)
        if min_agreement is not None:
            _check_agreement(out, row, min_agreement)
    if baseline is not None:
        if not allow_other_baseline:
            check_same_subject(report, baseline)
        _against_baseline(out, rows, baseline["results"], max_drop, max_latency_regression, latency)
    if out.checked == 0 and not allow_empty:
        out.violations.append("nothing was compared: the report has no INT8 row with a float row to compare it "
                              "with (pass --allow-empty if that is expected)")
    return out


def _check_int8(out: GateOutcome, row: dict, base: dict | None, max_drop: float) -> None:
    if base is None:
        out.violations.append(f"{_key(row)} has no float row to compare with: re-run bench with an FP32 row "
                              "(its own target's, or torch)")
        return
    if row["top1"] is None or base["top1"] is None:
        agreement = row.get("agreement")
        if agreement is None:
            out.violations.append(f"{_key(row)} has neither top-1 nor agreement: the report cannot be gated")
            return
        out.notes.append(f"{_key(row)}: no labels, so no top-1 drop; agreement with FP32 {agreement:.2f}%")
        out.passes.append(f"{_key(row)} agreement {agreement:.2f}% (no labels: top-1 drop not computable)")
        return
    drop = base["top1"] - row["top1"]
    against = "its FP32" if base["target"] == row["target"] else f"{_key(base)}"
    if drop > max_drop:
        out.violations.append(f"{_key(row)} top-1 {row['top1']:.2f}% is {drop:.2f} points below {against} "
                              f"(allowed {max_drop:g})")
    else:
        out.passes.append(f"{_key(row)} drop {drop:.2f} <= {max_drop:g} points (margin {max_drop - drop:.2f})")


def _check_agreement(out: GateOutcome, row: dict, min_agreement: float) -> None:
    agreement = row.get("agreement")
    if agreement is None:
        out.violations.append(f"{_key(row)} has no agreement with FP32 to hold to --min-agreement {min_agreement:g}")
    elif agreement < min_agreement - 1e-9:
        out.violations.append(f"{_key(row)} agrees with FP32 on {agreement:.2f}% of images (asked {min_agreement:g}%)")
    else:
        out.passes.append(f"{_key(row)} agreement {agreement:.2f}% >= {min_agreement:g}%")


LATENCY_MODES = ("speedup", "absolute", "off")


def _against_baseline(out: GateOutcome, rows, base_rows, max_drop: float, max_regression: float | None,
                      latency: str = "speedup") -> None:
    """Top-1 against the baseline's; latency as the INT8 speedup over float within each run (robust to a
    slower runner), or, asked for, absolute p50 beyond the noise both runs measured."""
    if latency not in LATENCY_MODES:
        raise ConfigError(f"--latency {latency!r} unknown: use {', '.join(LATENCY_MODES)}")
    max_regression = None if max_regression is None else check_threshold(max_regression, "--max-latency-regression")
    current = {_key(r): r for r in rows if r["status"] == "ok"}
    before = {_key(r): r for r in base_rows if r["status"] == "ok"}
    for key in sorted(current.keys() & before.keys()):
        now, was = current[key], before[key]
        if now.get("top1") is not None and was.get("top1") is not None:
            fall = was["top1"] - now["top1"]
            if fall > max_drop:
                out.violations.append(f"{key} top-1 {now['top1']:.2f}% is {fall:.2f} points below the baseline's "
                                      f"{was['top1']:.2f}% (allowed {max_drop:g})")
            else:
                out.passes.append(f"{key} top-1 vs baseline {0.0 - fall:+.2f} points (margin {max_drop - fall:.2f})")
        if max_regression is not None and latency == "speedup":
            _speedup(out, key, now, was, max_regression)
        elif max_regression is not None and latency == "absolute":
            _absolute(out, key, now, was, max_regression)
    for key in sorted(current.keys() - before.keys()):
        out.notes.append(f"{key}: not in the baseline, not compared")
    for key in sorted(before.keys() - current.keys()):
        out.notes.append(f"{key}: in the baseline only, not compared")


def _speedup(out: GateOutcome, key: str, now: dict, was: dict, max_loss: float) -> None:
    if now.get("precision") in FLOAT or not now.get("speedup") or not was.get("speedup"):
        return
    loss = 1 - now["speedup"] / was["speedup"]
    # A speedup is a ratio of timings: what both runs measured as this row's spread (IQR over p50) can move it
    # that much by chance, so the gate allows the larger of the threshold and that noise.
    noise = sum(r["latency_ms_iqr"] / r["latency_ms_p50"] for r in (now, was)
                if r.get("latency_ms_iqr") is not None and r.get("latency_ms_p50"))
    allowed = max(max_loss, noise)
    why = f"{100 * allowed:.0f}%" + (" (the measured noise)" if allowed > max_loss else "")
    if loss > allowed:
        out.violations.append(f"{key} speedup over float {now['speedup']:.2f}x is {100 * loss:.0f}% below the "
                              f"baseline's {was['speedup']:.2f}x (allowed {why})")
    else:
        out.passes.append(f"{key} speedup {now['speedup']:.2f}x vs baseline {was['speedup']:.2f}x "
                          f"(allowed loss {why})")


def _absolute(out: GateOutcome, key: str, now: dict, was: dict, max_rise: float) -> None:
    p50, base_p50 = now.get("latency_ms_p50"), was.get("latency_ms_p50")
    if p50 is None or not base_p50:
        return
    if now.get("latency_unstable") or was.get("latency_unstable"):
        out.notes.append(f"{key}: latency not compared, the measurement is unstable (IQR over 25% of p50)")
        return
    noise = (now.get("latency_ms_iqr") or 0.0) + (was.get("latency_ms_iqr") or 0.0)
    rise = p50 / base_p50 - 1
    if rise > max_rise and p50 - base_p50 > noise:
        out.violations.append(f"{key} latency p50 {p50:.3g} ms is {100 * rise:.0f}% above the baseline's "
                              f"{base_p50:.3g} ms (allowed {100 * max_rise:.0f}%)"
                              + (f"; the measured noise is {noise:.2g} ms" if noise else ""))
    else:
        out.passes.append(f"{key} latency p50 vs baseline {100 * rise:+.0f}% (allowed {100 * max_rise:.0f}% beyond "
                          f"{noise:.2g} ms noise)")

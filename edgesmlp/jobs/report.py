"""report.json / report.md: one row per (target, precision), plus the context needed to trust it.

Schema ``edgesmlp.report/1``: ``{"schema", "created", "model", "data", "machine", "versions",
"notes", "results": [Result...]}``. Later fields are only ever added, never renamed.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgesmlp.precision import Precision

SCHEMA = "edgesmlp.report/1"
VERSIONED = ("edgesmlp", "torch", "numpy", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt")


@dataclass
class Result:
    target: str
    precision: str
    status: str = "ok"  # ok, failed or skipped
    note: str = ""
    runtime: str = ""  # what executed it, e.g. "OpenVINO CPU"
    top1: float | None = None
    top5: float | None = None
    drop_top1: float | None = None  # FP32 top-1 minus this top-1, in points
    agreement: float | None = None  # % top-1 equal to FP32's
    cosine: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_iqr: float | None = None  # p75 - p25 of the batch-1 samples: the measured noise
    latency_unstable: bool | None = None  # the noise is too large for this p50 to be compared
    speedup: float | None = None  # the target's reference row's p50 over this row's, from interleaved rounds
    throughput_ips: float | None = None
    throughput_batch: int | None = None
    size_mb: float | None = None
    quantize_seconds: float | None = None  # calibration + quantization, or engine build
    images: int | None = None
    latency_samples_ms: list[float] | None = None  # batch-1 samples behind p50/p90
    kept_float: list[str] | None = None  # INT8 rows: node names left in float ([] when none)
    quantized_layers: int | None = None  # INT8 rows: layers that run INT8
    compare_only: bool | None = None  # a comparison row (not shipped, not gated)


def model_info(path: str, bundled: bool, sha256: str, weights: str, config: dict, variant: str | None) -> dict:
    """The report's model block, from a loaded checkpoint or from the manifest a quantize job wrote."""
    return {"path": path, "bundled": bundled, "sha256": sha256, "weights": weights, "variant": variant or "custom",
            "config": config, "image_size": config["image_size"], "num_classes": config["num_classes"]}


def busy(rows: list[dict]) -> list[str]:
    """The report rows whose measurements say other work competed for the CPU: a batch-1 spread (IQR) over a
    quarter of the p50 (``latency_unstable``), or a throughput under half the row's own batch-1 rate."""
    return [f"{r['target']}/{r['precision']}" for r in rows if r["status"] == "ok" and r.get("latency_ms_p50") and (
        r.get("latency_unstable") or (r.get("throughput_ips") is not None
                                      and r["throughput_ips"] < 0.5 * 1000.0 / r["latency_ms_p50"]))]


def build_report(results: list[Result], model: dict, data: dict, machine: dict, versions: dict,
                 notes: list[str]) -> dict:
    rows = [asdict(r) for r in results]
    competed = busy(rows)
    if competed:
        notes = [f"The machine was busy while this ran: {', '.join(competed)} measured a batch-1 spread over a "
                 "quarter of its median or a throughput under half its batch-1 rate, so other work competed for the "
                 "CPU. Compare these latencies with care, or run again on a quiet machine.", *notes]
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "data": data,
        "machine": machine,
        "versions": versions,
        "notes": notes,
        "results": rows,
    }


@dataclass(frozen=True)
class Column:
    """One report column: its JSON key, the header people read (with the unit), what it means, and how
    many decimals it shows. ``short`` is its header in the compact terminal table (None: --wide only)."""

    key: str
    header: str
    legend: str
    digits: int | None = None  # None: text
    short: str | None = None


COLUMNS = (
    Column("target", "target", "where the model runs: the edgesmlp target", short="target"),
    Column("precision", "precision", "fp32/fp16: float; bf16: the CPU's default precision for a float model; int8: "
           "quantized; int8-ptq: post-training beside a QAT int8; int8-all: every layer INT8, beside an int8 "
           "that keeps layers in float to meet the budget (for comparison: not shipped, not gated)",
           short="prec"),
    Column("runtime", "runtime", "what executed the row on this machine"),
    Column("status", "status", "ok, skipped (not available here, with the reason) or failed (with the reason)"),
    Column("top1", "top-1 (%)", "images whose top class is their label", 2, "top-1%"),
    Column("top5", "top-5 (%)", "images whose label is among the five top classes", 2),
    Column("drop_top1", "drop (points)", "the target's float top-1 minus this row's: positive means accuracy lost", 2,
           "drop"),
    Column("agreement", "agreement (%)", "images whose top class equals the first row's (the reference)", 2,
           "agree%"),
    Column("cosine", "logit cosine", "mean cosine similarity of the logits with the first row's", 5),
    Column("latency_ms_p50", "latency p50 (ms)", "median time for one image at batch 1; ~ marks an unstable "
           "measurement (IQR over 25% of p50)", 2, "p50 ms"),
    Column("latency_ms_iqr", "IQR (ms)", "p75 minus p25 of the batch-1 times: the noise of this measurement", 2),
    Column("latency_ms_p90", "p90 (ms)", "90th-percentile time for one image at batch 1", 2),
    Column("speedup", "speedup (x)", "the reference row's p50 over this row's, timed in interleaved rounds in the "
           "same run; the reference is what users get without edgesmlp: the CPU's default precision where the "
           "target has one (OpenVINO: bf16 on bf16 CPUs), else the target's float row", 2, "speedup"),
    Column("throughput_ips", "throughput (img/s)", "images per second at the throughput batch", 0, "img/s"),
    Column("size_mb", "size (MB)", "the artifact's size on disk", 2, "MB"),
    Column("quantize_seconds", "quantize (s)", "calibration and quantization time (engine build time on the device)",
           1),
    Column("quantized_layers", "INT8 layers", "INT8 rows: the layers that run INT8; report.json's kept_float names "
           "those left in float", 0),
)


def cell(row: dict, column: Column) -> str:
    value = row.get(column.key)
    if value is None:
        return "-"
    if column.digits is None:
        return str(value)
    text = f"{value:,.{column.digits}f}" if column.key == "throughput_ips" else f"{value:.{column.digits}f}"
    return text + ("~" if column.key == "latency_ms_p50" and row.get("latency_unstable") else "")


def render_terminal(results: list[dict], wide: bool = False) -> str:
    """An aligned table for the terminal: the compact columns (under 80 characters), or all with ``wide``."""
    columns = [c for c in COLUMNS if wide or c.short]
    ok = [r for r in results if r["status"] == "ok"]
    headers = [c.header if wide else c.short for c in columns]
    body = [[cell(r, c) for c in columns] for r in ok]
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    lines = [line(headers)] + [line(values) for values in body]
    for r in results:
        if r["status"] != "ok":
            precision = "" if r["precision"] == "-" else f" ({r['precision']})"
            lines.append(textwrap.fill(f"{r['target']}: {r['status']}{precision} - {r['note']}", 80,
                                       subsequent_indent="  ", break_on_hyphens=False))
    return "\n".join(lines)


def terminal_legend(results: list[dict]) -> list[str]:
    """A line for each mark the terminal table uses."""
    if any(r.get("latency_unstable") for r in results if r["status"] == "ok"):
        return ["~ after a latency: its spread (IQR) is over a quarter of its p50: the machine was busy (other work "
                "competed for the CPU), so compare it with care"]
    return []


def render_table(results: list[dict]) -> str:
    """Every column as a Markdown table, with the headers people read."""
    lines = ["| " + " | ".join(c.header for c in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in results:
        if r["status"] == "ok":
            lines.append("| " + " | ".join(cell(r, c) for c in COLUMNS) + " |")
    return "\n".join(lines)


def legend() -> list[str]:
    return [f"- **{c.header}**: {c.legend}" for c in COLUMNS]


WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul", "FullyConnected", "FullyConnectedQuantizedLegacy", "Conv",
                "Gemm", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "CaskConvolution",
                "CaskGemmMatrixMultiply", "CaskGemmConvolution", "gemm")


def profile_summary(entry: dict, top: int = 4) -> str:
    """One line: how many weighted layers ran in which precision, and the op types that took the most time."""
    if "layers" not in entry:
        return f"{entry['target']}/{entry['precision']}: {entry.get('note', 'not profiled')}"
    weighted = [layer for layer in entry["layers"] if layer["op"] in WEIGHTED_OPS]
    counts: dict[str, int] = {}
    for layer in weighted:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    ran = ", ".join(f"{n} {p}" for p, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    heavy = ", ".join(f"{r['op']} {r['precision']} {r['share']:.0%}" for r in entry["by_type"][:top])
    return (f"{entry['target']}/{entry['precision']}: {entry['total_ms']:.3f} ms per image in {len(entry['layers'])} "
            f"layers; weighted layers ran {ran or 'none'}; most time: {heavy}")


def profile_table(entry: dict, top: int = 12) -> list[str]:
    if "by_type" not in entry:
        return []
    lines = [f"`{entry['target']}/{entry['precision']}` ({entry['source']}, {entry['runs']} runs, batch "
             f"{entry['batch']}; {entry['total_ms']:.3f} ms in {len(entry['layers'])} layers)", "",
             "| op type | precision | layers | ms | share |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['op']} | {r['precision']} | {r['count']} | {r['ms']:.4f} | {r['share']:.1%} |"
              for r in entry["by_type"][:top]]
    return lines + [""]


def budget_lines(report: dict) -> list[str]:
    """What the accuracy budget asked for and what was done to meet it, as sentences (empty: no search ran)."""
    budget = report.get("budget") or {}
    search = budget.get("search")
    if not search:
        return []
    asked = " and ".join(([f"agreement >= {budget['min_agreement']:g}%"] if budget.get("min_agreement") is not None
                          else []) + ([f"top-1 drop <= {budget['max_drop']:g} points"]
                                      if budget.get("max_drop") is not None else []))
    curve = ", ".join(f"{p['kept']}: {p['expected']:.2f}%" for p in search["curve"])
    reached = search["reached"]
    origin = search.get("origin") or f"{search['images']} images of the calibration source"
    lines = [f"Budget: {asked}; --fallback {budget.get('fallback')}, at most {budget.get('max_float', 0):.0%} of the "
             f"layers in float, searched on {origin} (never the validation images)."]
    if search.get("overlap"):
        lines.append("The search images were the calibration images (the source held no others): INT8's ranges were "
                     "fitted to them, so the estimate had to leave half the allowance unused. Give --search images "
                     "for a search they do not flatter.")
    if "confidence" in search:
        bound = f"at least {search['agreement_bound']:.2f}% agreement" + (
            f", a drop of at most {search['drop_bound']:.2f} points" if search.get("drop_bound") is not None else "")
        needed = search.get("needed")
        if search.get("certified", True):
            lines.append(f"Met with {search['confidence']:.0%} confidence on {search['images']} search images "
                         f"({bound}; the ask needs {needed:,} images or more to be certified at all).")
        else:
            lines.append(f"Not certified: {search['images']} search images cannot certify the default budget (it "
                         f"needs {'more than any number' if needed is None else f'{needed:,}'}); it was decided on "
                         "INT8's expected agreement alone.")
    ignored = [n for n in (budget.get("validation") or {}).get("kept_float") or [] if n not in search["kept_float"]]
    given = f" --ignore kept {len(ignored)} more in float: {', '.join(ignored)}." if ignored else ""
    if not search["kept_float"]:
        lines.append(f"Full INT8 met it there ({reached['expected']:.2f}% expected agreement): the search kept no "
                     f"layer in float.{given}")
    else:
        kept = ", ".join(f"{m} ({n})" for m, n in zip(search["kept_modules"], search["kept_float"]))
        lines.append(f"Kept in float: {len(search['kept_float'])} of {search['layers']} quantized layers, most "
                     f"sensitive first: {kept}. Searched in {search['seconds']:.1f} s (ranked "
                     f"{search.get('ranking_method') or 'exact'} in {search.get('rank_seconds', 0):.1f} s); expected "
                     f"agreement by layers kept in float: {curve}.{given}")
    shipped = budget.get("validation") or {}
    rows = {r["precision"]: r for r in report["results"]}
    if shipped.get("agreement") is not None:
        full = rows.get(Precision.int8_all)
        text = f"On the {report['data'].get('val_images')} validation images INT8 agrees with FP32 on " \
               f"{shipped['agreement']:.2f}%" + (f" (full INT8: {full['agreement']:.2f}%)" if full else "")
        if shipped.get("drop") is not None:
            text += f", top-1 drop {shipped['drop']:.2f} points"
        if budget.get("latency_cost") is not None:
            text += f"; its latency is {budget['latency_cost']:.2f}x full INT8's"
        lines.append(text + ".")
        missed = ((budget.get("min_agreement") is not None and shipped["agreement"] < budget["min_agreement"] - 1e-9)
                  or (budget.get("max_drop") is not None and shipped.get("drop") is not None
                      and shipped["drop"] > budget["max_drop"] + 1e-9))
        if missed:
            found = "; ".join(f"{p['kept']} in float: agreement {p['agreement']:.2f}% (expected {p['expected']:.2f}%)"
                              + (f", drop {p['drop']:.2f}" if p.get("drop") is not None else "")
                              for p in search["curve"])
            lines.append(f"The validation images missed the budget the search images met, so those are not like "
                         f"these. The trade-off the search found: {found}. Give --search images drawn like --val (a "
                         "split of it that --val does not hold), or ask with more margin.")
    return lines


def render_markdown(report: dict) -> str:
    model, data, machine = report["model"], report["data"], report["machine"]
    batch = next((r["throughput_batch"] for r in report["results"] if r.get("throughput_batch")), None)
    lines = [
        f"# edgesmlp report ({report['created']})",
        "",
        f"Model: `{model.get('path')}` ({model.get('variant')}, {model.get('image_size')}x{model.get('image_size')}, "
        f"{model.get('num_classes')} classes), sha256 `{model.get('sha256', '')[:16]}...`",
        f"Validation: {data.get('val')} ({data.get('val_images')} images"
        + (f", {data['val_skipped']} unreadable skipped" if data.get("val_skipped") else "") + ")",
        f"Calibration: {data.get('calib')} ({data.get('calib_images')} images)",
        f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores; latency is batch 1, throughput at batch {batch}",
        "",
        render_table(report["results"]),
        "",
    ]
    failed = [r for r in report["results"] if r["status"] != "ok"]
    lines += [f"- {r['target']}{'' if r['precision'] == '-' else ' ' + r['precision']}: {r['status']} - {r['note']}"
              for r in failed]
    if report.get("notes"):
        lines += ["", "## Why these numbers", "", *(f"- {note}" for note in report["notes"])]
    if report.get("profiles"):
        lines += ["", "## Where the time goes", "", "Each runtime's own profiler; precision is what it executed in.", ""]
        for entry in report["profiles"]:
            lines += profile_table(entry) or [f"- {profile_summary(entry)}", ""]
    mixed = budget_lines(report)
    if mixed:
        lines += ["", "## Mixed precision", "", *(f"- {line}" for line in mixed)]
    lines += ["", "Columns:", "", *legend()]
    return "\n".join(lines) + "\n"


def write_report(directory: Path, report: dict) -> None:
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (directory / "report.md").write_text(render_markdown(report))

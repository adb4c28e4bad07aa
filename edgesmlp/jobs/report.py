"""report.json / report.md: one row per (target, precision), plus the context needed to trust it.

Schema ``edgesmlp.report/1``: ``{"schema", "created", "model", "data", "machine", "versions",
"notes", "results": [Result...]}``. Later fields are only ever added, never renamed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

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
    throughput_ips: float | None = None
    throughput_batch: int | None = None
    size_mb: float | None = None
    quantize_seconds: float | None = None  # calibration + quantization, or engine build
    images: int | None = None
    latency_samples_ms: list[float] | None = None  # batch-1 samples behind p50/p90


def model_info(path: str, bundled: bool, sha256: str, weights: str, config: dict, variant: str | None) -> dict:
    """The report's model block, from a loaded checkpoint or from the manifest a quantize job wrote."""
    return {"path": path, "bundled": bundled, "sha256": sha256, "weights": weights, "variant": variant or "custom",
            "config": config, "image_size": config["image_size"], "num_classes": config["num_classes"]}


def build_report(results: list[Result], model: dict, data: dict, machine: dict, versions: dict,
                 notes: list[str]) -> dict:
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "data": data,
        "machine": machine,
        "versions": versions,
        "notes": notes,
        "results": [asdict(r) for r in results],
    }


def _fmt(value, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def render_table(results: list[dict]) -> str:
    header = ("| target | precision | runtime | status | size MB | top-1 % | top-5 % | drop | agree % | cosine "
              "| p50 ms | p90 ms | img/s | prep s |")
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for r in results:
        lines.append(
            f"| {r['target']} | {r['precision']} | {r.get('runtime') or '-'} | {r['status']} | {_fmt(r['size_mb'])} | "
            f"{_fmt(r['top1'])} | {_fmt(r['top5'])} | {_fmt(r['drop_top1'])} | {_fmt(r['agreement'])} | "
            f"{_fmt(r['cosine'], 5)} | {_fmt(r['latency_ms_p50'])} | {_fmt(r['latency_ms_p90'])} | "
            f"{_fmt(r['throughput_ips'], 1)} | {_fmt(r.get('quantize_seconds'), 1)} |"
        )
    return "\n".join(lines)


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
    lines += [f"- {r['target']} {r['precision']}: {r['status']} - {r['note']}" for r in failed]
    lines += [f"- {note}" for note in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def write_report(directory: Path, report: dict) -> None:
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (directory / "report.md").write_text(render_markdown(report))

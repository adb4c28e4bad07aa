"""A self-contained report.html: the results table, accuracy-versus-latency, and latency distributions.

Plots are drawn with matplotlib's Agg backend and embedded as base64 PNGs, so the file can be
mailed or attached to a CI run as it is.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
from pathlib import Path


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def plot_accuracy_latency(rows: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = {t: f"C{i}" for i, t in enumerate(dict.fromkeys(r["target"] for r in rows))}
    markers = {"int8": "o", "fp16": "^", "fp32": "s"}
    for r in rows:
        y = r["top1"] if r["top1"] is not None else r["agreement"]
        ax.scatter(r["latency_ms_p50"], y, marker=markers.get(r["precision"], "D"), s=70, alpha=0.85,
                   color=colours[r["target"]], label=f"{r['target']} {r['precision']}")
    ax.legend(fontsize=8, loc="best")
    ax.set_xscale("log")
    labelled = all(r["top1"] is not None for r in rows)
    ax.set_xlabel("latency p50, batch 1 (ms, log scale)")
    ax.set_ylabel("top-1 (%)" if labelled else "top-1 agreement with the reference (%)")
    ax.set_title("Accuracy versus latency")
    ax.grid(alpha=0.3)
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def plot_latency_distributions(rows: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.45 * len(rows)))
    ax.boxplot([r["latency_samples_ms"] for r in rows], orientation="horizontal", showfliers=True)
    ax.set_yticks(range(1, len(rows) + 1), [f"{r['target']} {r['precision']}" for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel("latency per image, batch 1 (ms, log scale)")
    ax.set_title("Latency distributions")
    ax.grid(alpha=0.3, axis="x")
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def _cell(value, digits=2) -> str:
    return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value)))


def render_html(report: dict) -> str:
    rows = report["results"]
    timed = [r for r in rows if r["status"] == "ok" and r.get("latency_samples_ms")]
    columns = [("target", 0), ("precision", 0), ("runtime", 0), ("status", 0), ("size_mb", 2), ("top1", 2),
               ("top5", 2), ("drop_top1", 2), ("agreement", 2), ("cosine", 5), ("latency_ms_p50", 2),
               ("latency_ms_p90", 2), ("throughput_ips", 1), ("quantize_seconds", 1), ("note", 0)]
    head = "".join(f"<th>{name}</th>" for name, _ in columns)
    body = "".join(
        f"<tr class='{html.escape(r['status'])}'>" + "".join(f"<td>{_cell(r.get(n), d)}</td>" for n, d in columns)
        + "</tr>" for r in rows
    )
    figures = ""
    if timed and importlib.util.find_spec("matplotlib") is None:
        figures = "<p>Plots need matplotlib, which is not installed here: pip install 'edgesmlp[workstation]'.</p>"
    elif timed:
        figures = (f"<img alt='accuracy versus latency' src='data:image/png;base64,{plot_accuracy_latency(timed)}'>"
                   f"<img alt='latency distributions' src='data:image/png;base64,"
                   f"{plot_latency_distributions(timed)}'>")
    m, machine = report["model"], report["machine"]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.get("notes", []))
    versions = ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgesmlp report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#eee}}
tr.failed td{{background:#fdd}}tr.skipped td{{color:#888}}img{{margin:1em 1em 0 0;max-width:48%}}</style></head>
<body><h1>edgesmlp report</h1>
<p>{html.escape(report['created'])} &middot; model {html.escape(str(m.get('path')))} ({html.escape(str(m.get('variant')))},
{m.get('image_size')}px, {m.get('num_classes')} classes) &middot; {html.escape(str(report['data'].get('val')))}
&middot; {html.escape(str(machine.get('cpu')))}, {machine.get('cores')} cores</p>
<table><tr>{head}</tr>{body}</table>
<div>{figures}</div>
<ul>{notes}</ul>
<p style="color:#666;font-size:12px">{html.escape(versions)} &middot; schema {html.escape(report['schema'])}</p>
</body></html>
"""


def write_html(path: Path, report: dict) -> None:
    path.write_text(render_html(report))

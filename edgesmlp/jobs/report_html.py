"""A self-contained report.html: the results table with the columns people read, what each column means,
and three charts (accuracy versus latency with the drop budget, throughput and size, latency spread).

Plots are drawn with matplotlib and embedded as inline SVG whose text stays text, so the file can be mailed or
attached to a CI run as it is, stays sharp at any zoom, and a browser test can measure the tick labels it draws. Without matplotlib (the lean device install) the page says so.
"""

from __future__ import annotations

import html
import importlib.util
import io
from pathlib import Path

from edgesmlp.jobs.report import COLUMNS, budget_lines, busy, cell, profile_summary
from edgesmlp.precision import Precision, accuracy_reference

MARKERS = {Precision.int8: "o", Precision.int8_ptq: "v", Precision.fp16: "^", Precision.fp32: "s"}
TABLE_COLUMNS = [c for c in COLUMNS if c.key not in ("status",)]
SHORT_COLUMNS = [c for c in TABLE_COLUMNS if c.short]  # the table that fits 1280 px; the rest behind a toggle


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_axis(axis, values) -> None:
    """Log-scale ticks written as plain numbers (0.4, 1, 2), not powers of ten; 1-2-5 steps only where the values
    span less than two decades, so labels never collide."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator

    low, high = min(values), max(values)
    decades = math.log10(high / low) if low > 0 and high > 0 else 0.0
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,)))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.4g}"))


def _label(r: dict) -> str:
    return f"{r['target']} {r['precision']}"


def _colours(rows: list[dict]) -> dict[str, str]:
    """One colour per row, the same in every chart."""
    return {_label(r): f"C{i % 10}" for i, r in enumerate(rows)}


def _svg(plt, fig) -> str:
    """The figure as an inline ``<svg>`` element: text as text (the page's fonts), ids salted by the title so that
    two charts on one page never share a clip path, and no XML prologue."""
    import matplotlib

    buffer = io.StringIO()
    title = fig.axes[0].get_title() if fig.axes else "figure"
    try:
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": title}):
            fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    finally:
        plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _figure(name: str, svg: str) -> str:
    return f"<figure role=img aria-label='{html.escape(name)}'>{svg}</figure>"


def tick_overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of tick labels whose drawn boxes overlap on any axis of ``fig`` (the charts must have none)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pairs = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            boxes = [t.get_window_extent(renderer) for t in labels]
            for i in range(len(labels)):
                for j in range(i + 1, len(labels)):
                    if boxes[i].overlaps(boxes[j]):
                        pairs.append((labels[i].get_text(), labels[j].get_text()))
    return pairs


def plot_accuracy_latency(rows: list[dict], max_drop: float | None) -> str:
    """Accuracy against latency; the band is the drop budget under the float row's accuracy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = _colours(rows)
    labelled = all(r["top1"] is not None for r in rows)
    key = "top1" if labelled else "agreement"
    for r in rows:
        ax.scatter(r["latency_ms_p50"], r[key], marker=MARKERS.get(r["precision"], "D"), s=70, alpha=0.85,
                   color=colours[_label(r)], label=_label(r))
    float_row = accuracy_reference(rows)(rows[0]["target"])
    reference = (float_row or rows[0])[key]
    budget = max_drop if max_drop is not None else 1.0
    if max_drop is not None:
        ax.axhspan(reference - max_drop, reference, color="green", alpha=0.08,
                   label=f"within the {max_drop:g}-point drop budget")
        ax.axhline(reference - max_drop, color="green", linestyle="--", linewidth=0.8)
    values = [r[key] for r in rows]
    low = min(min(values), reference - budget) - budget / 2
    high = max(max(values), reference) + budget / 2
    ax.set_ylim(low, min(high, 100.5) if labelled or key == "agreement" else high)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis, [r["latency_ms_p50"] for r in rows])
    ax.set_xlabel("latency p50, batch 1 (ms, log scale)")
    ax.set_ylabel("top-1 (%)" if labelled else "top-1 agreement with the first row (%)")
    ax.set_title("Accuracy versus latency")
    ax.grid(alpha=0.3)
    return _svg(plt, fig)


def plot_throughput_size(rows: list[dict]) -> str:
    """Throughput per row, each bar labelled with the artifact's size."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.42 * len(rows)))
    names = [_label(r) for r in rows]
    values = [r["throughput_ips"] or 0.0 for r in rows]
    colours = _colours(rows)
    bars = ax.barh(names, values, color=[colours[n] for n in names], alpha=0.8)
    for bar, r in zip(bars, rows):
        size = "" if r.get("size_mb") is None else f"  {r['size_mb']:.2f} MB"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {bar.get_width():,.0f} img/s{size}",
                va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(values + [1.0]) * 1.45)
    batch = next((r["throughput_batch"] for r in rows if r.get("throughput_batch")), None)
    ax.set_xlabel(f"throughput at batch {batch} (images per second); label: artifact size")
    ax.set_title("Throughput and size")
    ax.grid(alpha=0.3, axis="x")
    return _svg(plt, fig)


def plot_latency_distributions(rows: list[dict]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.42 * len(rows)))
    boxes = ax.boxplot([r["latency_samples_ms"] for r in rows], orientation="horizontal", showfliers=True,
                       patch_artist=True)
    colours = _colours(rows)
    for box, r in zip(boxes["boxes"], rows):
        box.set_facecolor(colours[_label(r)])
        box.set_alpha(0.6)
    ax.set_yticks(range(1, len(rows) + 1), [_label(r) for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis, [v for r in rows for v in r["latency_samples_ms"]])
    ax.set_xlabel("latency per image, batch 1 (ms, log scale); box: p25 to p75")
    ax.set_title("Latency spread")
    ax.grid(alpha=0.3, axis="x")
    return _svg(plt, fig)


def _figures(rows: list[dict], max_drop: float | None) -> str:
    timed = [r for r in rows if r["status"] == "ok" and r.get("latency_samples_ms")]
    if not timed:
        return ""
    if importlib.util.find_spec("matplotlib") is None:
        return "<p>Plots need matplotlib, which is not installed here: pip install 'edgesmlp[workstation]'.</p>"
    images = [("accuracy versus latency", plot_accuracy_latency(timed, max_drop)),
              ("throughput and size", plot_throughput_size(timed)),
              ("latency spread", plot_latency_distributions(timed))]
    return "".join(_figure(name, svg) for name, svg in images)


def _table(rows: list[dict], columns=SHORT_COLUMNS) -> str:
    head = "".join(f"<th title='{html.escape(c.legend)}'>{html.escape(c.short if columns is SHORT_COLUMNS else c.header)}"
                   "</th>" for c in columns)
    body = []
    for r in rows:
        if r["status"] == "ok":
            cells = "".join(f"<td>{html.escape(cell(r, c))}</td>" for c in columns)
            body.append(f"<tr>{cells}</tr>")
        else:  # one readable line for a row that did not run, whatever its reason's length
            what = html.escape(r["target"] + ("" if r["precision"] == "-" else f" {r['precision']}"))
            body.append(f"<tr class='{html.escape(r['status'])}'><td>{what}</td>"
                        f"<td colspan='{len(columns) - 1}'><b>{html.escape(r['status'])}</b>: "
                        f"{html.escape(r.get('note') or '')}</td></tr>")
    return f"<div class=scroll><table><tr>{head}</tr>{''.join(body)}</table></div>"  # scrolls, never overflows


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1280px;color:#222}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0;vertical-align:bottom}td:first-child,td:nth-child(2),td:nth-child(3),th:first-child,th:nth-child(2),th:nth-child(3){text-align:left}
tr.failed td{background:#fdd;text-align:left}tr.skipped td{color:#666;text-align:left}
figure{display:inline-block;margin:1em 1em 0 0;width:46%;vertical-align:top}figure svg{width:100%;height:auto}dl{font-size:13px;columns:2}dt{font-weight:600}
dd{margin:0 0 .4em 0;color:#444}.meta{color:#555;font-size:14px}
.verdict{padding:.6em 1em;border-radius:6px;margin:1em 0;font-size:15px}.verdict b{font-size:20px;margin-right:.4em}
.verdict.pass{background:#e6f4ea;border:1px solid #8c8}.verdict.fail{background:#fde8e8;border:1px solid #d88}
.verdict ul{margin:.3em 0 0 0;font-size:13px}li.bad{color:#a00}
.warning{background:#fff4d6;border:1px solid #e0b84a;padding:.5em 1em;border-radius:6px;margin:1em 0}
code.line{display:block;background:#f4f4f4;padding:.5em;white-space:pre-wrap;word-break:break-all}"""


def _verdict(report: dict) -> str:
    """The banner: PASS or FAIL against the budget the run used, each gated row with its margin or violation."""
    from edgesmlp.jobs.check import check_report
    from edgesmlp.quantization.budget import DEFAULT_MAX_DROP

    budget = report.get("budget") or {}
    max_drop = budget.get("max_drop", DEFAULT_MAX_DROP)
    gate = check_report(report, max_drop=max_drop, allow_empty=True, min_agreement=budget.get("min_agreement"))
    asked = f"top-1 drop at most {max_drop:g} points" + (f", agreement at least {budget['min_agreement']:g}%"
                                                          if budget.get("min_agreement") is not None else "")
    lines = [*(f"<li class=bad>{html.escape(v)}</li>" for v in gate.violations),
             *(f"<li>{html.escape(p)}</li>" for p in gate.passes)]
    word = "PASS" if gate.passed else "FAIL"
    return (f"<div class='verdict {word.lower()}'><b>{word}</b> against the budget ({html.escape(asked)})"
            f"<ul>{''.join(lines)}</ul></div>")


def _busy(rows: list[dict]) -> str:
    """A visible warning when a row's timing says other work competed for the CPU."""
    competed = [key.replace("/", " ") for key in busy(rows)]  # as the charts label rows
    if not competed:
        return ""
    return (f"<div class=warning>The machine was busy while this ran: {html.escape(', '.join(competed))} measured a "
            "batch-1 spread over a quarter of its median (marked ~) or a throughput under half its batch-1 rate. "
            "Compare these latencies with care, or run again on a quiet machine.</div>")


def render_html(report: dict) -> str:
    rows = report["results"]
    m, machine, data = report["model"], report["machine"], report["data"]
    max_drop = (report.get("budget") or {}).get("max_drop")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.get("notes", []))
    legend = "".join(f"<dt>{html.escape(c.header)}</dt><dd>{html.escape(c.legend)}</dd>" for c in TABLE_COLUMNS)
    versions = ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgesmlp report</title><style>{STYLE}</style></head>
<body><h1>edgesmlp report</h1>
<p class="meta">{html.escape(report['created'])} &middot; model {html.escape(str(m.get('path')))}
({html.escape(str(m.get('variant')))}, {m.get('image_size')}px, {m.get('num_classes')} classes) &middot;
validation {html.escape(str(data.get('val')))} ({data.get('val_images')} images) &middot;
{html.escape(str(machine.get('cpu')))}, {machine.get('cores')} cores, {machine.get('threads')} threads</p>
{_verdict(report)}{_busy(rows)}
{_table(rows)}
<details><summary>every column</summary>{_table(rows, TABLE_COLUMNS)}</details>
<div>{_figures(rows, max_drop)}</div>
{_mixed(report)}{_profiles(report)}<h2>Why these numbers</h2><ul>{notes}</ul>
<h2>Columns</h2><dl>{legend}</dl>
<p class="meta">{html.escape(versions)} &middot; schema {html.escape(report['schema'])}</p>
</body></html>
"""


def _mixed(report: dict) -> str:
    lines = budget_lines(report)
    return "<h2>Mixed precision</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>" if lines else ""


def _profiles(report: dict) -> str:
    """Per target and precision: time per op type, and what precision the layers executed in."""
    parts = []
    for entry in report.get("profiles") or []:
        head = f"<h3>{html.escape(entry['target'])}/{html.escape(entry['precision'])}</h3>"
        if "by_type" not in entry:
            parts.append(f"{head}<p>{html.escape(entry.get('note', ''))}</p>")
            continue
        rows = "".join(f"<tr><td>{html.escape(r['op'])}</td><td>{r['precision']}</td><td>{r['count']}</td>"
                       f"<td>{r['ms']:.4f}</td><td>{r['share']:.1%}</td></tr>" for r in entry["by_type"][:12])
        parts.append(f"{head}<p class=meta>{html.escape(profile_summary(entry))}</p><table><tr><th>op type</th>"
                     f"<th>precision</th><th>layers</th><th>ms</th><th>share</th></tr>{rows}</table>")
    return "<h2>Where the time goes</h2>" + "".join(parts) if parts else ""


def write_html(path: Path, report: dict) -> None:
    path.write_text(render_html(report))


def plot_sensitivity(layers: list[dict], limit: int = 20) -> str:
    """The most sensitive layers: the KL divergence of the model with only that layer INT8."""
    plt = _pyplot()
    top = layers[:limit][::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.28 * len(top) + 1.2))
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.barh([r["module"] for r in top], [r["alone_kl"] for r in top], color="C3")
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax.set_xlabel("KL from FP32 with only this layer INT8 (nats)")
    ax.set_title(f"The {len(top)} most sensitive layers")
    ax.grid(axis="x", alpha=0.3)
    return _svg(plt, fig)


def plot_block_cosines(blocks: list[dict]) -> str:
    """FP32-vs-INT8 cosine at each residual sum, through the network: where the error starts."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.plot(range(1, len(blocks) + 1), [b["cosine"] for b in blocks], marker="o")
    ax.set_xlabel("residual sum (two per block, in order)")
    ax.set_ylabel("cosine, FP32 vs INT8")
    ax.set_title("Where the INT8 error builds up")
    ax.grid(alpha=0.3)
    return _svg(plt, fig)


def _ignore(result: dict) -> str:
    """The suggested --ignore line, ready to copy, and what it reaches."""
    suggestion = result.get("ignore") or {}
    if not suggestion.get("line"):
        return "<h2>What to keep in float</h2><p>Nothing: full INT8 meets the budget on these images.</p>"
    return (f"<h2>What to keep in float</h2><p>The fewest top-ranked layers that meet the budget on these images "
            f"({html.escape(str(suggestion.get('reached', '')))}); add this to <code>edgesmlp quantize</code>:</p>"
            f"<code class=line>{html.escape(suggestion['line'])}</code>")


def render_sensitivity_html(result: dict) -> str:
    """A self-contained sensitivity.html: the ranked layers as a bar chart and table, and the block cosines."""
    base = result["full_int8"]
    if importlib.util.find_spec("matplotlib") is None:
        figures = "<p>Plots need matplotlib, which is not installed here: pip install 'edgesmlp[workstation]'.</p>"
    else:
        figures = "".join(_figure(name, svg) for name, svg in (
            ("layer sensitivity", plot_sensitivity(result["layers"])),
            ("block cosines", plot_block_cosines(result["blocks"]))))
    rows = "".join(f"<tr><td>{i}</td><td>{html.escape(r['module'])}</td><td>{html.escape(r['layer'])}</td>"
                   f"<td>{r['op']}</td><td>{r['alone_kl']:.3e}</td><td>{r['kl_gain']:.3e}</td>"
                   f"<td>{r['agreement']:.2f}</td></tr>"
                   for i, r in enumerate(result["layers"], 1))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgesmlp sensitivity</title><style>{STYLE}</style></head>
<body><h1>edgesmlp sensitivity ({html.escape(result['target'])})</h1>
<p class="meta">model {html.escape(str(result['model'].get('path')))} &middot; full INT8 against FP32 on
{result['data']['val_images']} held-out images: agreement {base['agreement']:.2f}%, KL {base['kl']:.3e}</p>
<div>{figures}</div>
{_ignore(result)}
<h2>Every quantized layer, most sensitive first</h2>
<p>Ranked by the KL divergence from FP32 of the model with only that layer INT8 (alone); beside it, the KL that
leaving only that layer in float removes from full INT8, and the agreement that model reaches. A negative "KL
removed" means full INT8 with that one layer in float was further from FP32 than full INT8 itself: INT8 errors of
different layers can cancel, and removing one leaves the others unbalanced. Such a layer gains nothing in float.</p>
<div class=scroll><table><tr><th>rank</th><th>module</th><th>node</th><th>op</th><th>KL alone</th>
<th>KL removed in float</th><th>agreement in float (%)</th></tr>{rows}</table></div>
</body></html>
"""

"""The report pages a person pastes into a PR: the verdict first, a table that fits, charts whose tick labels do
not collide, one colour per row, a busy machine named, and on the sensitivity page a ready --ignore line; checked
in matplotlib's own layout and in Chromium's (tests/browser.py)."""

import matplotlib
import pytest

from edgesmlp.jobs import report_html
from edgesmlp.jobs.report import SCHEMA, COLUMNS
from tests import browser


def row(target, precision, top1, p50, samples, throughput, **extra):
    return {"target": target, "precision": precision, "status": "ok", "top1": top1, "agreement": 99.0, "note": "",
            "latency_ms_p50": p50, "latency_samples_ms": samples, "throughput_ips": throughput,
            "throughput_batch": 8, "size_mb": 4.0, **extra}


def report(max_drop=1.0):
    rows = [row("torch", "fp32", 80.0, 141.0, [120.0, 141.0, 1400.0, 2300.0], 40.0, latency_unstable=True),
            row("openvino", "fp32", 80.0, 62.0, [60.0, 62.0, 64.0], 17.0),
            row("openvino", "int8", 79.5, 20.0, [19.0, 20.0, 21.0], 55.0)]
    return {"schema": SCHEMA, "created": "now", "model": {"path": "m.pth"}, "machine": {"cpu": "x"},
            "data": {"val": "v"}, "notes": [], "results": rows, "budget": {"max_drop": max_drop}}


def test_the_verdict_comes_first_with_the_budget_the_run_used():
    page = report_html.render_html(report())
    assert page.index("class='verdict pass'") < page.index("<table>")
    assert "top-1 drop at most 1 points" in page and "openvino/int8 drop 0.50" in page
    failing = report_html.render_html(report(max_drop=0.25))
    assert "class='verdict fail'" in failing and "top-1 drop at most 0.25 points" in failing


def test_a_busy_row_is_named_and_the_table_fits():
    page = report_html.render_html(report())
    assert "class=warning>The machine was busy" in page and "torch fp32" in page.split("class=warning>")[1]
    compact = page.split("<table>")[1].split("</table>")[0]
    assert compact.count("<th") == sum(1 for c in COLUMNS if c.short and c.key != "status")
    assert "<details><summary>every column</summary>" in page


@pytest.fixture
def figures(monkeypatch):
    """Every figure the page draws, kept open to be measured."""
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    plt.close("all")
    monkeypatch.setattr(plt, "close", lambda *args: None)
    yield plt
    monkeypatch.undo()
    plt.close("all")


def test_no_tick_labels_collide_and_each_row_keeps_its_colour(figures):
    report_html.render_html(report())
    report_html.render_sensitivity_html({
        "target": "jetson", "model": {"path": "m"}, "data": {"val_images": 10},
        "full_int8": {"agreement": 99.0, "kl": 1e-5}, "blocks": [{"cosine": 0.999}, {"cosine": 0.998}],
        "ignore": {"line": "--ignore token_mix.0.1.proj_h", "reached": "agreement 99.5%"},
        "layers": [{"module": f"token_mix.{i}.1.proj_h", "layer": f"n{i}", "op": "MatMul",
                    "alone_kl": 5.3e-5 / (i + 1), "kl_gain": -1e-6, "agreement": 99.0} for i in range(12)]})
    fig_numbers = figures.get_fignums()
    assert len(fig_numbers) == 5
    for number in fig_numbers:
        fig = figures.figure(number)
        assert report_html.tick_overlaps(fig) == [], fig.axes[0].get_title()
    scatter, bars, spread = (figures.figure(n).axes[0] for n in fig_numbers[:3])
    scatter_colours = [tuple(c.get_facecolor()[0][:3]) for c in scatter.collections if len(c.get_offsets())]
    bar_colours = [tuple(p.get_facecolor()[:3]) for p in bars.patches]
    box_colours = [tuple(p.get_facecolor()[:3]) for p in spread.patches]
    assert scatter_colours == bar_colours == box_colours and len(set(bar_colours)) == 3


def test_the_sensitivity_page_gives_the_ignore_line_and_the_sign():
    page = report_html.render_sensitivity_html({
        "target": "jetson", "model": {"path": "m"}, "data": {"val_images": 10},
        "full_int8": {"agreement": 99.0, "kl": 1e-5}, "blocks": [{"cosine": 0.999}],
        "ignore": {"line": "--ignore token_mix.0.1.proj_h", "reached": "agreement 99.5%"},
        "layers": [{"module": "token_mix.0.1.proj_h", "layer": "n0", "op": "MatMul", "alone_kl": 1e-5,
                    "kl_gain": -1e-6, "agreement": 99.0}]})
    assert "<code class=line>--ignore token_mix.0.1.proj_h</code>" in page and "A negative" in page


# --- in a real browser: Chromium, headless, 1280 px wide (tests/browser.py) -----------------------------------

def test_chromium_shows_the_verdict_first_and_every_chart_readable(tmp_path):
    seen = browser.look(report_html.render_html(report()), tmp_path)
    verdict, warning, table = seen["verdict"], seen["warning"], seen["table"]
    assert verdict["text"].startswith("PASS against the budget (top-1 drop at most 1 points)")
    assert "openvino/int8 drop 0.50 <= 1 points (margin 0.50)" in verdict["text"]
    assert verdict["box"][3] <= warning["box"][1] <= warning["box"][3] <= table["box"][1]  # verdict, warning, table
    assert "busy" in warning["text"] and "torch fp32" in warning["text"]
    browser.assert_readable(seen)
    assert [c["name"] for c in seen["charts"]] == ["accuracy versus latency", "throughput and size", "latency spread"]
    assert seen["charts"][1]["ticks"][1] == ["torch fp32", "openvino fp32", "openvino int8"]
    left, top, right, bottom = verdict["box"]
    assert browser.colour_at(seen["screenshot"], right - 20, bottom - 8) == (0xe6, 0xf4, 0xea)  # drawn green

    failing = browser.look(report_html.render_html(report(max_drop=0.25)), tmp_path)
    assert failing["verdict"]["text"].startswith("FAIL") and "openvino/int8" in failing["verdict"]["text"]
    left, top, right, bottom = failing["verdict"]["box"]
    assert browser.colour_at(failing["screenshot"], right - 20, bottom - 8) == (0xfd, 0xe8, 0xe8)  # drawn red


def test_chromium_finds_colliding_tick_labels(tmp_path, figures):
    """The check itself: a chart with crowded labels, as the old sensitivity axis was, is caught."""
    fig, ax = figures.subplots(figsize=(3, 2))
    ax.bar([f"token_mix.{i}.proj_h" for i in range(12)], range(12))
    page = f"<!doctype html><html><body>{report_html._figure('crowded', report_html._svg(figures, fig))}</body></html>"
    seen = browser.look(page, tmp_path)
    assert seen["charts"][0]["overlaps"], seen["charts"]

"""A report page as a person sees it: Debian's Chromium, headless, 1280 px wide. ``look(page)`` loads a copy of the
page with a measuring script appended, reads back what the browser laid out (the verdict, the table's width, header
lines, every chart's tick-label boxes) and takes a screenshot.

Chromium is a system package (``apt-get install chromium``). Without it the browser tests skip, unless
``EDGESMLP_REQUIRE_BROWSER=1`` (set by ``.ci/run``, which installs it) makes its absence a failure."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

WIDTH = 1280
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)

# Runs in the page once it is parsed; layout queries force layout, so the numbers are the rendered ones.
MEASURE = """<script>(() => {
  const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const lines = el => { const range = document.createRange(); range.selectNodeContents(el);
    return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size; };
  const overlaps = texts => { const pairs = [];
    for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
      const a = texts[i].getBoundingClientRect(), b = texts[j].getBoundingClientRect();
      if (a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5)
        pairs.push([texts[i].textContent, texts[j].textContent]); }
    return pairs; };
  const first = (selector) => document.querySelector(selector);
  const table = first('table');
  const out = {
    text: document.body.innerText,
    verdict: first('.verdict') && { text: first('.verdict').innerText, box: box(first('.verdict')) },
    warning: first('.warning') && { text: first('.warning').innerText, box: box(first('.warning')) },
    table: table && { box: box(table),
      overflow: table.parentElement.scrollWidth - table.parentElement.clientWidth,
      wrapped: [...table.querySelectorAll('th')].filter(th => lines(th) > 1).map(th => th.innerText) },
    page_width: document.documentElement.scrollWidth,
    ignore: first('code.line') && first('code.line').innerText,
    charts: [...document.querySelectorAll('figure')].map(f => ({
      name: f.getAttribute('aria-label'), box: box(f.querySelector('svg')),
      ticks: ['x', 'y'].map(a => [...f.querySelectorAll(`[id^="${a}tick_"] text`)].map(t => t.textContent)),
      overlaps: ['x', 'y'].flatMap(a => overlaps([...f.querySelectorAll(`[id^="${a}tick_"] text`)])) })),
  };
  const pre = document.createElement('pre'); pre.id = 'measured'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();</script>"""


def require() -> None:
    if CHROMIUM is None:
        if os.environ.get("EDGESMLP_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed: apt-get install chromium (.ci/run does)")
        pytest.skip("chromium is not installed (apt-get install chromium)")


def _chromium(folder: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             "--force-device-scale-factor=1", f"--user-data-dir={folder / 'profile'}", f"--window-size={WIDTH},2000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def look(page: str, folder: Path) -> dict:
    """What Chromium laid out for ``page`` (an HTML string), with ``screenshot``: the PNG it drew of the top."""
    require()
    measured, shown = folder / "measured.html", folder / "page.html"
    shown.write_text(page)
    measured.write_text(page.replace("</body>", MEASURE + "</body>"))
    dom = _chromium(folder, "--dump-dom", measured.as_uri())
    found = re.search(r"<pre id=\"measured\">(.*?)</pre>", dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    screenshot = folder / "page.png"
    _chromium(folder, f"--screenshot={screenshot}", shown.as_uri())
    assert screenshot.exists(), "chromium drew no screenshot"
    result["screenshot"] = screenshot
    return result


def colour_at(screenshot: Path, x: float, y: float) -> tuple[int, int, int]:
    from PIL import Image

    with Image.open(screenshot) as image:
        return image.convert("RGB").getpixel((int(x), int(y)))


def assert_readable(seen: dict) -> None:
    """What every page must be: no wider than the window, no header over two lines, charts inside the window with
    tick labels that do not collide."""
    assert seen["page_width"] <= WIDTH, seen["page_width"]
    if seen["table"]:
        assert seen["table"]["overflow"] <= 0 and seen["table"]["wrapped"] == [], seen["table"]
    for chart in seen["charts"]:
        left, top, right, bottom = chart["box"]
        assert 0 <= left and right <= WIDTH and bottom - top > 100, chart
        assert all(len(ticks) >= 2 for ticks in chart["ticks"]), chart
        assert chart["overlaps"] == [], chart

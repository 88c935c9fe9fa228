"""The report opened in a real headless Chromium: no console errors, every chart drawn.

Each chart is saved as a PNG to $REPORT_SCREENSHOTS (default: the test's tmp_path), so a
person can look at what the page shows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from contracts import FinishEvent
from service.tools.report import render_report
from tests.unit.test_report import RESULT, rich_result

pytestmark = pytest.mark.browser

PAGES = {
    # every chart: a sweep, a server search, latency quantiles and a throughput timeline
    "rich": (rich_result, ["throughput-chart", "throughput-timeline-chart", "latency-cdf-chart",
                           "sweep-throughput-chart", "latency-throughput-chart"]),
    # an older result: the percentile bars instead of the CDF, and no sweep or timeline
    "plain": (lambda: json.loads(RESULT.read_text()), ["throughput-chart", "latency-chart"]),
}  # fmt: skip


def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("REPORT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def severe(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["message"] for entry in entries if entry.get("level") == "SEVERE"]


def test_console_errors_are_seen(browser: Any) -> None:
    """The log this checks is live: a page's console.error comes back as a SEVERE entry."""
    browser.get_log("browser")
    browser.get("data:text/html,<title>probe</title><script>console.error('probe-42')</script>")
    assert any("probe-42" in message for message in severe(browser.get_log("browser")))


@pytest.mark.parametrize("case", list(PAGES))
def test_report_charts_render_in_chromium(browser: Any, tmp_path: Path, case: str) -> None:
    """Opened via file://: no console errors, nothing fetched, each chart has a size and lines."""
    make, expected = PAGES[case]
    page = tmp_path / f"report-{case}.html"
    page.write_text(render_report(FinishEvent.model_validate(make())), encoding="utf-8")
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(page.as_uri())
    assert browser.title.startswith("Benchmark")
    ids = browser.execute_script("return [...document.querySelectorAll('svg')].map(s => s.id)")
    assert ids == expected
    folder = screenshots(tmp_path)
    for element_id in expected:
        chart = browser.find_element("id", element_id)
        assert chart.size["width"] > 0 and chart.size["height"] > 0, element_id
        box = browser.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", chart
        )
        assert box[0] > 100 and box[1] > 100, (element_id, box)
        assert chart.get_attribute("aria-label"), element_id
        drawn = browser.execute_script(
            "return [...arguments[0].querySelectorAll('rect, polyline, circle')]"
            ".map(e => e.getBBox()).filter(b => b.width > 0 || b.height > 0).length",
            chart,
        )
        assert drawn > 0, f"{element_id} draws nothing"
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", chart)
        shot = folder / f"{case}-{element_id}.png"
        assert chart.screenshot(str(shot)), element_id
        assert abs(png_size(shot)[0] - box[0]) <= 2 and abs(png_size(shot)[1] - box[1]) <= 2, (
            f"{shot} is cropped: {png_size(shot)} for a chart of {box}"
        )
    fetched = browser.execute_script("return performance.getEntriesByType('resource').length")
    assert fetched == 0, "the page fetched something"
    errors = severe(browser.get_log("browser"))
    assert errors == [], errors

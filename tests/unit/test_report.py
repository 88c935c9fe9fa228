"""The HTML report of a result: its table equals the result, its charts are inline, and it copes."""

from __future__ import annotations

import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from contracts import FinishEvent
from service.cli import main
from service.tools.report import latency_points, render_report

# A real result.json of the sample pair (written by `bench`; paths shortened).
RESULT = Path(__file__).parent / "data" / "result.json"


class _Elements(HTMLParser):
    """Every start tag with its attributes and the text directly inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = {"tag": tag, **{k: v or "" for k, v in attrs}, "text": ""}
        self.elements.append(element)
        if tag not in ("meta", "line", "br"):
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1]["text"] += data


def parse(page: str) -> list[dict[str, Any]]:
    parser = _Elements()
    parser.feed(page)
    return parser.elements


def comparison_cells(page: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(row key, role) → (data-value, shown text) of the comparison table."""
    table = re.search(r'<table id="comparison">.*?</table>', page, re.S)
    assert table, "no comparison table"
    cells: dict[tuple[str, str], tuple[str, str]] = {}
    row = ""
    for element in parse(table.group(0)):
        if element["tag"] == "tr":
            row = element.get("data-key", "")
        elif element["tag"] == "td":
            cells[(row, element["data-role"])] = (element["data-value"], element["text"])
    return cells


@pytest.fixture
def result() -> dict[str, Any]:
    return json.loads(RESULT.read_text())


def test_comparison_table_values_equal_the_results(result: dict[str, Any]) -> None:
    """Each cell's value and text is the result's: throughput, p50, p99, accuracy, changes."""
    data = result["data"]
    page = render_report(FinishEvent.model_validate(result))
    cells = comparison_cells(page)
    details = data["execution_details"]
    for role in ("input_model", "optimized_model"):
        perf = details[f"{role}_benchmark"]["performance"]
        expected = {
            "throughput": (data[f"perf_throughput_{role}"], "{:,.1f}"),
            "latency_p50": (perf["latency_ms_p50"], "{:.3f}"),
            "latency_p99": (perf["latency_ms_p99"], "{:.3f}"),
            "accuracy": (data[f"acc_{role}"], "{:.4f}"),
        }
        for key, (value, fmt) in expected.items():
            raw, text = cells[(key, role)]
            assert float(raw) == value, (key, role)
            assert text == fmt.format(value), (key, role)
    assert float(cells[("throughput", "change")][0]) == data["speedup"]
    assert cells[("throughput", "change")][1] == f"×{data['speedup']:.2f}"
    assert float(cells[("accuracy", "change")][0]) == data["accuracy_delta"]
    assert cells[("accuracy", "change")][1] == f"{data['accuracy_delta']:+.4f}"


def test_charts_show_every_instance_and_every_percentile(result: dict[str, Any]) -> None:
    """Throughput bars are the per-instance figures; latency bars include p99.9 when reported."""
    page = render_report(FinishEvent.model_validate(result))
    elements = parse(page)
    details = result["data"]["execution_details"]
    bars = [e for e in elements if e["tag"] == "rect" and "data-label" not in e]
    expected = [
        (role, instance["throughput_samples_per_s"])
        for role in ("input_model", "optimized_model")
        for instance in details[f"{role}_benchmark"]["performance"]["per_instance"]
    ]
    assert [(b["data-role"], float(b["data-value"])) for b in bars] == expected
    latency = {(e["data-role"], e["data-label"]): float(e["data-value"])
               for e in elements if e["tag"] == "rect" and "data-label" in e}  # fmt: skip
    perf = details["input_model_benchmark"]["performance"]
    assert latency[("input_model", "p99.9")] == perf["latency_ms_p999"]
    assert latency[("input_model", "p50")] == perf["latency_ms_p50"]
    assert latency[("input_model", "mean")] == perf["latency_ms_mean"]


def test_verdict_fingerprint_and_speedup_interval_are_shown(result: dict[str, Any]) -> None:
    """The worker's verdict (status, each warning), machine fingerprint and speedup CI appear."""
    data = result["data"]
    page = render_report(FinishEvent.model_validate(result))
    verdict = re.search(r'<div class="verdict" id="verdict">.*?</div>', page, re.S)
    assert verdict and data["verdict"]["status"] in verdict.group(0)
    for item in data["verdict"]["warnings"] + data["verdict"]["reasons"]:
        assert html.escape(item["message"]) in verdict.group(0)
    low, high = data["speedup_ci95"]
    assert f"[{low:.3f}, {high:.3f}]" in page
    fingerprint = re.search(r'<div id="fingerprint">.*?</div>', page, re.S)
    assert fingerprint and html.escape(data["fingerprint"]["cpu"]["model"]) in fingerprint.group(0)


def test_page_is_self_contained(result: dict[str, Any]) -> None:
    """No scripts, stylesheets, images or fonts from elsewhere: one file opens anywhere."""
    page = render_report(FinishEvent.model_validate(result))
    assert page.count("<svg") == 2
    for forbidden in ("<script", "<link", "<img", "@import", "url(", "<iframe"):
        assert forbidden not in page, forbidden
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert references == []
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}


def test_renders_what_is_present_and_lists_unknown_figures() -> None:
    """An input-only result without per-instance data still renders; new fields are listed."""
    finish = FinishEvent.model_validate({
        "status": "success",
        "data": {
            "id": "lean", "progress": "1/1", "current_step": 1, "number_of_steps": 1,
            "perf_throughput_input_model": 50.0,
            "node": {"hostname": "bench-01", "worker_id": "w1", "cpus": "0-3", "version": "0"},
            "verdict": {"outcome": "no change", "confidence": 0.95},
            "execution_details": {"input_model_benchmark": {"performance": {
                "instances": 1, "cores_per_instance": 4, "model_path": "/m/a.pb",
                "precision": "fp32", "mode": "performance", "batch_size": 1,
                "framework": "tensorflow", "config_path": "/w/config.yaml",
                "benchmark_script": "runner", "command": "python -m service.runner",
                "latency_ms": 20.0, "latency_ms_p50": 19.5, "energy_joules": 12.25,
            }}},
        },
    })  # fmt: skip
    page = render_report(finish)
    cells = comparison_cells(page)
    assert cells[("throughput", "input_model")] == ("50.0", "50.0")
    assert cells[("throughput", "optimized_model")] == ("", "-")
    assert cells[("latency_p99", "input_model")] == ("", "-")
    assert "No per-instance figures" in page and "energy_joules" in page and "12.25" in page
    assert 'id="verdict"' in page and "no change" in page and "bench-01" in page


def test_error_result_renders_what_failed() -> None:
    """An error finish renders its step and message instead of a table."""
    finish = FinishEvent.model_validate({"status": "error", "data": {
        "id": "x", "message": "input_model not found: <a.pb>", "step": "validate"}})  # fmt: skip
    page = render_report(finish)
    assert "validate" in page and "not found: &lt;a.pb&gt;" in page
    assert 'id="comparison"' not in page


def test_latency_points_read_fields_when_no_percentile_list() -> None:
    """p999 means the 99.9th percentile; points come mean first, then ascending."""
    step = {"latency_ms_mean": 1.0, "latency_ms_p99": 3.0, "latency_ms_p50": 0.9,
            "latency_ms_p999": 7.0}  # fmt: skip
    assert latency_points(step) == [("mean", 1.0), ("p50", 0.9), ("p99", 3.0), ("p99.9", 7.0)]


def test_report_verb_writes_beside_the_result_and_explains_a_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report DIR` writes DIR/report.html; a directory without result.json exits 2 with why."""
    workload = tmp_path / "workloads" / "fp32_sample"
    workload.mkdir(parents=True)
    shutil.copy(RESULT, workload / "result.json")
    assert main(["report", str(workload)]) == 0
    assert (workload / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert capsys.readouterr().out.strip() == str(workload / "report.html")
    out = tmp_path / "elsewhere.html"
    assert main(["report", str(workload / "result.json"), "-o", str(out)]) == 0
    assert out.is_file()
    assert main(["report", str(tmp_path)]) == 2
    assert "no result.json" in capsys.readouterr().err


def test_summary_docstring_example_runs() -> None:
    """The comparison rows' documented example (shared by terminal, HTML and text) holds."""
    import doctest

    import service.tools.summary

    result = doctest.testmod(service.tools.summary)
    assert result.attempted > 0 and result.failed == 0

"""The HTML report of a result: its table equals the result, its charts are inline, and it copes."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest
from pydantic import ValidationError

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


# A finish event with every chart's input: the sample result above plus a sweep, a server
# search, latency quantiles and a throughput timeline, with plausible numbers. The real sweep
# runs the offline scenario only, so sweep and search never share a result; here they do so
# that one page shows every chart (the browser test renders it too).
SWEEP_BATCHES = (1, 4, 16, 64)
SWEEP_LAYOUTS = ((1, 2), (2, 1))
TARGET_MS = 0.5
SEARCH = {  # (target_qps, latency ms at p99) per model; invalid where latency > the target
    "input_model": ((2000, 0.21), (4000, 0.24), (8000, 1.9), (6000, 0.33), (7000, 0.62),
                    (6500, 0.41)),
    "optimized_model": ((2000, 0.15), (4000, 0.17), (8000, 0.22), (12000, 2.5), (10000, 0.31),
                        (11000, 0.7)),
}  # fmt: skip
TIMELINE_BUCKETS = 20


def _quantiles(median: float, spread: float) -> list[float]:
    """51 quantiles (0%, 2% .. 100%) of a log-normal latency around ``median``."""
    normal = NormalDist()
    return [round(median * math.exp(spread * normal.inv_cdf(min(max(i / 50, 0.001), 0.999))), 4)
            for i in range(51)]  # fmt: skip


def _sweep_figures(throughput: float, batch: int, instances: int) -> dict[str, Any]:
    latency = 1000.0 * batch * instances / throughput
    return {
        "throughput_samples_per_s": round(throughput, 1),
        "throughput_ci95": [round(throughput * 0.985, 1), round(throughput * 1.012, 1)],
        "latency_ms": round(latency, 4), "latency_ms_p50": round(latency * 0.97, 4),
        "latency_ms_p90": round(latency * 1.18, 4), "latency_ms_p99": round(latency * 1.55, 4),
        "verdict": {"status": "ok", "reasons": [], "warnings": []},
    }  # fmt: skip


def sweep() -> dict[str, Any]:
    """Four batch sizes × two layouts; batch 64 on 2×1 failed, and so did the optimized model
    at batch 16 on 2×1."""
    points: list[dict[str, Any]] = []
    for instances, cores in SWEEP_LAYOUTS:
        for batch in SWEEP_BATCHES:
            point: dict[str, Any] = {"batch_size": batch, "instances": instances,
                                     "cores_per_instance": cores,
                                     "main": (batch, instances) == (1, 2)}  # fmt: skip
            if (batch, instances) == (64, 2):
                point["error"] = "optimized_model: ResourceExhaustedError at batch 64"
                points.append(point)
                continue
            base = 5200.0 * batch / (1 + batch / 12) * (1.0 if instances == 1 else 1.15)
            point["models"] = {"input_model": _sweep_figures(base, batch, instances)}
            if (batch, instances) == (16, 2):
                point["models"]["optimized_model"] = {"error": "instance 1 exited with code 137"}
            else:
                optimized = base * (1.6 + 0.1 * SWEEP_BATCHES.index(batch))
                point["models"]["optimized_model"] = _sweep_figures(optimized, batch, instances)
                point["speedup"] = round(optimized / base, 3)
            points.append(point)
    best = {role: {
        "by_throughput": max(({"batch_size": p["batch_size"], "instances": p["instances"],
                               "cores_per_instance": p["cores_per_instance"],
                               "throughput_samples_per_s": p["models"][role]
                               ["throughput_samples_per_s"]}
                              for p in points if "throughput_samples_per_s"
                              in p.get("models", {}).get(role, {})),
                             key=lambda b: b["throughput_samples_per_s"]),
        "by_latency": {"batch_size": 1, "instances": 1, "cores_per_instance": 2,
                       "latency_ms_p99": points[0]["models"][role]["latency_ms_p99"]},
    } for role in ("input_model", "optimized_model")}  # fmt: skip
    return {"points": points, "best": best}


def rich_result() -> dict[str, Any]:
    """The sample result.json with a sweep, a server search, quantiles and a timeline."""
    result: dict[str, Any] = json.loads(RESULT.read_text())
    data = result["data"]
    data["sweep"] = sweep()
    for role in ("input_model", "optimized_model"):
        perf = data["execution_details"][f"{role}_benchmark"]["performance"]
        perf["latency_quantiles_ms"] = _quantiles(perf["latency_ms_p50"], 0.12)
        throughput = perf["throughput_samples_per_s"]
        perf["window_s"] = TIMELINE_BUCKETS * 0.5
        perf["throughput_timeline"] = {"bucket_s": 0.5, "samples_per_s": [
            round(throughput * (0.9 if i == 0 else 1 + 0.02 * math.sin(i)), 1)
            for i in range(TIMELINE_BUCKETS)]}  # fmt: skip
        perf["scenario"] = {"name": "server", "target_latency_ms": TARGET_MS,
                            "target_percentile": 99.0, "search": [
            {"target_qps": qps, "achieved_qps": round(qps * 0.995, 1),
             "latency_ms_at_percentile": ms, "valid": ms <= TARGET_MS}
            for qps, ms in SEARCH[role]]}  # fmt: skip
    return result


def svg(page: str, element_id: str) -> str:
    """The inline <svg> with ``element_id`` (the test fails if it is missing)."""
    found = re.search(rf'<svg [^>]*id="{element_id}".*?</svg>', page, re.S)
    assert found, f"no svg#{element_id}"
    return found.group(0)


def series(page: str, element_id: str) -> list[dict[str, Any]]:
    """Each series of a chart: its attributes, its line's point count and its markers."""
    out = []
    for attrs, body in re.findall(r'<g class="series"([^>]*)>(.*?)</g>', svg(page, element_id)):
        line = re.search(r'<polyline points="([^"]*)"', body)
        out.append({
            **dict(re.findall(r'([\w-]+)="([^"]*)"', attrs)),
            "line": len(line.group(1).split()) if line else 0,
            "markers": [e for e in parse(body) if "point" in e.get("class", "").split()],
        })  # fmt: skip
    return out


@pytest.fixture
def rich() -> dict[str, Any]:
    return rich_result()


def test_sweep_chart_has_a_line_per_model_and_layout(rich: dict[str, Any]) -> None:
    """Throughput against batch size: one line per model and layout, failed points left out."""
    page = render_report(FinishEvent.model_validate(rich))
    lines = {s["data-series"]: s for s in series(page, "sweep-throughput-chart")}
    assert list(lines) == ["input model 1×2", "input model 2×1", "optimized model 1×2",
                           "optimized model 2×1"]  # fmt: skip
    assert [s["line"] for s in lines.values()] == [4, 3, 4, 2]
    assert [float(m["data-x"]) for m in lines["input model 2×1"]["markers"]] == [1, 4, 16]
    point = rich["data"]["sweep"]["points"][1]["models"]["input_model"]
    assert (
        float(lines["input model 1×2"]["markers"][1]["data-y"])
        == (point["throughput_samples_per_s"])
    )
    chart = svg(page, "sweep-throughput-chart")
    assert 'aria-label="Throughput against batch size' in chart
    assert "batch size (samples per call)" in chart and "throughput (samples/s)" in chart
    assert chart.count('class="ci"') == 13  # each figure's 95% interval


def test_sweep_of_one_layout_labels_lines_by_model_only(rich: dict[str, Any]) -> None:
    points = rich["data"]["sweep"]["points"]
    rich["data"]["sweep"]["points"] = [p for p in points if p["instances"] == 1]
    page = render_report(FinishEvent.model_validate(rich))
    assert [s["data-series"] for s in series(page, "sweep-throughput-chart")] == [
        "input model", "optimized model"]  # fmt: skip


def test_sweep_table_lists_every_point_and_the_best(rich: dict[str, Any]) -> None:
    """A row per point (failed ones say why), both models' figures, the speedup; best points."""
    page = render_report(FinishEvent.model_validate(rich))
    table = re.search(r'<table id="sweep-table">.*?</table>', page, re.S)
    assert table
    rows = re.findall(r"<tr class='sweep-point'>(.*?)</tr>", table.group(0))
    assert len(rows) == len(SWEEP_BATCHES) * len(SWEEP_LAYOUTS)
    first = rich["data"]["sweep"]["points"][0]
    assert "2×1 (main)" in rows[4] and "(main)" not in rows[0]
    assert f"×{first['speedup']:.2f}" in rows[0]
    assert f"{first['models']['optimized_model']['latency_ms_p99']:.3f}" in rows[0]
    assert ">ok<" in rows[0]
    assert "failed: instance 1 exited with code 137" in rows[6]
    assert "failed: optimized_model: ResourceExhaustedError at batch 64" in rows[7]
    best = re.search(r'<ul id="sweep-best">.*?</ul>', page, re.S)
    assert best
    top = rich["data"]["sweep"]["best"]["optimized_model"]["by_throughput"]
    assert f"highest throughput {top['throughput_samples_per_s']:,.1f} samples/s" in best.group(0)
    assert "lowest latency p99" in best.group(0)


def test_capacity_chart_has_sweep_points_search_trials_and_the_target(
    rich: dict[str, Any],
) -> None:
    """p99 against throughput: the sweep's lines, each model's search (invalid hollow), target."""
    page = render_report(FinishEvent.model_validate(rich))
    lines = series(page, "latency-throughput-chart")
    assert [s["data-series"] for s in lines] == [
        "input model 1×2 sweep", "input model 2×1 sweep", "optimized model 1×2 sweep",
        "optimized model 2×1 sweep", "input model server search (queries/s)",
        "optimized model server search (queries/s)"]  # fmt: skip
    assert [s["line"] for s in lines] == [4, 3, 4, 2, 6, 6]
    for role, trials in SEARCH.items():
        search = next(s for s in lines if s["data-series"].endswith("search (queries/s)")
                      and s["data-role"] == role)  # fmt: skip
        hollow = [m for m in search["markers"] if "hollow" in m["class"]]
        assert len(hollow) == sum(ms > TARGET_MS for _, ms in trials)
        assert all(float(m["data-y"]) > TARGET_MS for m in hollow)
        xs = [float(m["data-x"]) for m in search["markers"]]
        assert xs == sorted(xs)  # joined by rate, not in the order they were tried
    chart = svg(page, "latency-throughput-chart")
    assert chart.count('class="rule"') == 1 and f'data-value="{TARGET_MS!r}"' in chart
    assert "target p99 ≤ 0.5 ms" in chart and "latency p99 (ms)" in chart


def test_capacity_chart_from_the_search_alone_and_absent_without_both(
    rich: dict[str, Any],
) -> None:
    del rich["data"]["sweep"]
    page = render_report(FinishEvent.model_validate(rich))
    assert len(series(page, "latency-throughput-chart")) == 2
    assert 'id="sweep-table"' not in page and 'id="sweep-throughput-chart"' not in page
    plain = render_report(FinishEvent.model_validate(json.loads(RESULT.read_text())))
    assert 'id="latency-throughput-chart"' not in plain and "<h2>Sweep</h2>" not in plain


def test_latency_cdf_replaces_the_bars_when_quantiles_are_reported(rich: dict[str, Any]) -> None:
    """51 quantiles per model make a CDF; the percentile bars are left out."""
    page = render_report(FinishEvent.model_validate(rich))
    curves = series(page, "latency-cdf-chart")
    assert [(s["data-role"], s["line"]) for s in curves] == [
        ("input_model", 51), ("optimized_model", 51)]  # fmt: skip
    assert 'id="latency-chart"' not in page
    chart = svg(page, "latency-cdf-chart")
    assert "latency (ms)" in chart and "calls at or below (%)" in chart and ">100%<" in chart
    assert "latency_quantiles_ms" not in page  # not listed as a 51-number figure either


def test_latency_bars_remain_for_results_without_quantiles(result: dict[str, Any]) -> None:
    page = render_report(FinishEvent.model_validate(result))
    assert 'id="latency-chart"' in page and 'id="latency-cdf-chart"' not in page
    assert 'id="throughput-timeline-chart"' not in page


def test_cdf_of_one_model_says_which_has_no_quantiles(rich: dict[str, Any]) -> None:
    details = rich["data"]["execution_details"]
    del details["optimized_model_benchmark"]["performance"]["latency_quantiles_ms"]
    page = render_report(FinishEvent.model_validate(rich))
    assert [s["data-role"] for s in series(page, "latency-cdf-chart")] == ["input_model"]
    assert "No latency quantiles for the optimized model." in page


def test_throughput_timeline_has_a_point_per_bucket(rich: dict[str, Any]) -> None:
    page = render_report(FinishEvent.model_validate(rich))
    lines = series(page, "throughput-timeline-chart")
    assert [(s["data-role"], s["line"]) for s in lines] == [
        ("input_model", TIMELINE_BUCKETS), ("optimized_model", TIMELINE_BUCKETS)]  # fmt: skip
    xs = [float(m["data-x"]) for m in lines[0]["markers"]]
    assert xs[0] == 0.25 and xs[-1] == TIMELINE_BUCKETS * 0.5 - 0.25
    perf = rich["data"]["execution_details"]["input_model_benchmark"]["performance"]
    assert [float(m["data-y"]) for m in lines[0]["markers"]] == (
        perf["throughput_timeline"]["samples_per_s"]
    )
    assert "time in the timed window (s)" in svg(page, "throughput-timeline-chart")


def test_rich_page_is_self_contained_and_has_no_bad_coordinates(rich: dict[str, Any]) -> None:
    """Every chart is inline SVG with an aria-label; no NaN or inf reaches an attribute."""
    page = render_report(FinishEvent.model_validate(rich))
    ids = re.findall(r'<svg [^>]*id="([^"]+)"', page)
    assert ids == ["throughput-chart", "throughput-timeline-chart", "latency-cdf-chart",
                   "sweep-throughput-chart", "latency-throughput-chart"]  # fmt: skip
    for element_id in ids:
        assert re.search(rf'id="{element_id}" role="img" aria-label="[^"]+"', page)
    for forbidden in ("<script", "<link", "<img", "@import", "url(", "<iframe"):
        assert forbidden not in page, forbidden
    assert not re.search(r'="[^"]*\b(nan|inf)\b', page, re.I)
    search = re.search(r'<h3 id="input_model-performance">.*?</table>', page, re.S)
    assert search and "scenario.target_latency_ms" in search.group(0)
    assert "achieved_qps" not in search.group(0)  # the search is charted, not listed


def test_failed_and_malformed_sweep_points_never_crash(result: dict[str, Any]) -> None:
    """A failed point, missing models, missing figures and an empty best are skipped, not
    fatal; odd step figures (untyped in the contract) too. A sweep table of the wrong shape
    is refused by the contract, naming the field."""
    data = result["data"]
    bad = {**data, "sweep": {"points": [{"batch_size": "x", "models": {}}]}}
    with pytest.raises(ValidationError, match=r"sweep.points.0.batch_size"):
        FinishEvent.model_validate({**result, "data": bad})
    data["sweep"] = {
        "points": [
            {"batch_size": 1, "instances": 1, "cores_per_instance": 4, "error": "OOM"},
            {"batch_size": 2, "instances": 1, "cores_per_instance": 4},
            {
                "batch_size": 4, "instances": 2, "cores_per_instance": 1,
                "models": {
                    "input_model": {"throughput_samples_per_s": None, "latency_ms_p99": None},
                    "optimized_model": {"error": "broken"},
                },
            },
        ],
        "best": {"input_model": {"by_throughput": None}},
    }  # fmt: skip
    perf = data["execution_details"]["input_model_benchmark"]["performance"]
    perf["latency_quantiles_ms"] = [1.0, None, 3.0]
    perf["throughput_timeline"] = {"bucket_s": 0, "samples_per_s": [1.0]}
    perf["scenario"] = {
        "name": "server",
        "target_latency_ms": "soon",
        "search": [{"target_qps": 5}, "x", {"latency_ms_at_percentile": 1}],
    }
    optimized = data["execution_details"]["optimized_model_benchmark"]["performance"]
    optimized["latency_quantiles_ms"] = "none"
    optimized["throughput_timeline"] = {"bucket_s": 0.5, "samples_per_s": "many"}
    optimized["scenario"] = {"search": None}  # fmt: skip
    page = render_report(FinishEvent.model_validate(result))
    for absent in ("sweep-throughput-chart", "latency-throughput-chart", "latency-cdf-chart",
                   "throughput-timeline-chart", "sweep-best"):  # fmt: skip
        assert f'id="{absent}"' not in page, absent
    assert 'id="latency-chart"' in page  # the fallback
    table = re.search(r'<table id="sweep-table">.*?</table>', page, re.S)
    assert table and table.group(0).count("<tr class='sweep-point'>") == 3
    assert "failed: OOM" in table.group(0) and "failed: broken" in table.group(0)


def test_sweep_with_every_point_failed_keeps_its_table(result: dict[str, Any]) -> None:
    result["data"]["sweep"] = {"points": [
        {"batch_size": b, "instances": 1, "cores_per_instance": 1, "error": "died"}
        for b in (1, 8)]}  # fmt: skip
    page = render_report(FinishEvent.model_validate(result))
    assert page.count("failed: died") == 2 and 'id="sweep-throughput-chart"' not in page


def test_best_latency_falls_back_to_the_mean_and_speedup_shows_its_interval(
    rich: dict[str, Any],
) -> None:
    """A window too short for a p99 makes the sweep's best latency a mean; the page says so."""
    best = rich["data"]["sweep"]["best"]["input_model"]["by_latency"]
    best.update(latency_ms_p99=None, latency_ms=0.4)
    rich["data"]["sweep"]["points"][0]["speedup_ci95"] = [1.55, 1.66]
    page = render_report(FinishEvent.model_validate(rich))
    summary = re.search(r"<li data-role='input_model'>.*?</li>", page)
    assert summary and "lowest latency mean 0.400 ms at batch 1, 1×2" in summary.group(0)
    assert 'title="95% interval [1.550, 1.660]"' in page

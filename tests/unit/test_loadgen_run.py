"""MLPerf LoadGen scenarios in the runner (service.runner.loadgen_run), with a fake call.

The fake call sleeps 2 ms (it releases the GIL, as a TensorFlow session call does). The runs
are short (0.5 s min duration), so each test takes seconds.

Agreement of our per-query latencies with LoadGen's: ours run from ``issue_queries``'
receipt to the end of the call, LoadGen's from the query's scheduled time to its completion
stamp inside ``QuerySamplesComplete``, so every query's LoadGen latency holds ours plus
LoadGen's own scheduled-to-callback time. Hence LoadGen's percentile is never below ours (up
to clock slew: LoadGen stamps with CLOCK_REALTIME, we with CLOCK_MONOTONIC), and above by that
overhead: about 0.02 ms in single_stream and 0.1 ms in server near capacity on a 2-CPU VM
(its timer wake-ups reach 1-3 ms only at low rates). ``AGREE_MS`` / ``AGREE_FRACTION``
(0.3 ms or 5 %, whichever is larger) leave room for a busy machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from service.runner import loadgen_run
from service.runner.__main__ import loadgen_dir
from service.runner.loadgen_run import (
    early_stopping_min_queries,
    loadgen_percentile,
    read_summary,
    run_scenario,
)
from service.runner.protocol import PerformanceResult, ScenarioConfig
from service.runner.runlength import RunLength

CALL_S = 0.002
AGREE_MS = 0.3
AGREE_FRACTION = 0.05
CLOCK_SLACK_MS = 0.02
SHORT = RunLength(iterations=None, duration_s=0.5, min_iterations=1, max_duration_s=10.0)


def sleep_call() -> None:
    time.sleep(CALL_S)


def assert_agrees(loadgen: dict[str, object], key: str) -> None:
    ours = loadgen["our_percentiles_ms"][key]  # type: ignore[index]
    theirs = loadgen["loadgen_percentiles_ms"][key]  # type: ignore[index]
    tolerance = max(AGREE_MS, AGREE_FRACTION * theirs)
    assert -CLOCK_SLACK_MS <= theirs - ours <= tolerance, (key, ours, theirs)


def assert_timings(result: PerformanceResult) -> None:
    assert result.loadgen is not None
    ends = result.batch_end_times_s
    assert len(ends) == len(result.batch_latencies_ms) == result.loadgen["queries"]
    assert ends == sorted(ends) and ends[0] > result.window_start_s
    assert min(result.batch_latencies_ms) >= CALL_S * 1000
    json.dumps(result.model_dump(mode="json"))  # the result file can hold it
    assert PerformanceResult.model_validate_json(result.model_dump_json()) == result


def test_single_stream_valid_and_agrees_with_loadgen(tmp_path: Path) -> None:
    scenario = ScenarioConfig(name="single_stream")

    result = run_scenario(sleep_call, scenario, SHORT, tmp_path, 1, cpus=[0])

    assert result.cpu_window is not None and result.cpu_window.cpus == [0]
    loadgen = result.loadgen
    assert loadgen is not None
    assert loadgen["status"] == "valid" and loadgen["result_valid"] is True, loadgen
    assert loadgen["invalid_reasons"] == []
    assert loadgen["target_percentile"] == 90.0  # mlperf.conf's single-stream percentile
    assert loadgen["loadgen_queries"] == loadgen["queries"] >= 64  # early stopping's minimum
    for key in ("50", "90", "99"):
        assert_agrees(loadgen, key)
    assert loadgen["full_length"] is False
    rules = loadgen["rules"]
    assert rules["min_duration_s"] == 0.5 and rules["min_query_count"] == 64
    assert rules["loadgen_defaults"]["min_duration_s"] == 600.0
    assert "min_duration_s" in rules["shortened"]
    assert Path(loadgen["summary_path"]).is_file() and Path(loadgen["detail_path"]).is_file()
    assert Path(loadgen["log_dir"]) == tmp_path / "single_stream"
    assert loadgen["loadgen_version"]
    assert result.stop_reason == "duration_and_min_iterations"
    assert_timings(result)


def test_server_finds_a_valid_rate_and_agrees_with_loadgen(tmp_path: Path) -> None:
    scenario = ScenarioConfig(name="server", target_latency_ms=50.0, target_percentile=99.0)

    result = run_scenario(sleep_call, scenario, SHORT, tmp_path, 1)

    loadgen = result.loadgen
    assert loadgen is not None
    assert loadgen["status"] == "valid" and loadgen["result_valid"] is True, loadgen
    assert loadgen["found_qps"] > 0
    search = loadgen["search"]
    assert 1 <= len(search) <= loadgen_run.SEARCH_RUNS
    assert loadgen["found_qps"] == max(e["target_qps"] for e in search if e["valid"])
    assert loadgen["found_qps"] <= loadgen["search_top_qps"]
    for entry in search:
        assert (tmp_path / entry["log_dir"] / loadgen_run.SUMMARY_FILE).is_file()
        assert entry["queries"] >= 459  # early stopping's minimum at p99
    assert Path(loadgen["log_dir"]) == tmp_path / loadgen["reported_run"]
    assert_agrees(loadgen, "99")
    assert_agrees(loadgen, "50")
    assert loadgen["overlatency_queries"] == 0 or loadgen["loadgen_percentiles_ms"]["99"] <= 50
    assert_timings(result)


def test_server_target_below_the_call_is_unreachable(tmp_path: Path) -> None:
    scenario = ScenarioConfig(name="server", target_latency_ms=0.5)

    result = run_scenario(sleep_call, scenario, SHORT, tmp_path, 4)

    loadgen = result.loadgen
    assert loadgen is not None
    assert loadgen["status"] == "target_unreachable"
    assert loadgen["found_qps"] is None and loadgen["search"] == []
    assert loadgen["result_valid"] is None
    assert "target 0.5 ms is below the model's single-call latency" in loadgen["message"]
    assert "at batch 4: no arrival rate can meet it" in loadgen["message"]
    assert list(tmp_path.iterdir()) == []  # no LoadGen run
    assert len(result.batch_latencies_ms) == loadgen_run.PROBE_CALLS
    assert result.stop_reason == "iterations"
    assert_timings(result)


def test_a_failing_call_ends_the_run_and_is_raised(tmp_path: Path) -> None:
    calls = 0

    def call() -> None:
        nonlocal calls
        calls += 1
        if calls == 20:
            raise RuntimeError("inference failed")
        time.sleep(0.001)

    with pytest.raises(RuntimeError, match="inference failed"):
        run_scenario(call, ScenarioConfig(name="single_stream"), SHORT, tmp_path, 1)
    assert calls == 20  # later samples were completed without calling


@pytest.mark.parametrize(
    ("percentile", "overlatency", "queries"),
    [
        (90.0, 1, 64),  # LoadGen: "Processed at least 64 queries" (single_stream, p90)
        (99.0, 0, 459),  # server, no query over the bound
        (99.0, 1, 662),  # mlperf.conf's MultiStream.min_query_count
    ],
)
def test_early_stopping_minimum_matches_loadgen(
    percentile: float, overlatency: int, queries: int
) -> None:
    assert early_stopping_min_queries(percentile, overlatency) == queries


def test_percentile_is_loadgens_index() -> None:
    values = [float(v) for v in range(10)]
    assert loadgen_percentile(values, 0.9) == 9.0  # sorted[int(10 * 0.9)]; numpy linear: 8.1
    assert loadgen_percentile(values, 0.5) == 5.0
    assert loadgen_percentile(values[:1], 0.999) == 0.0


INVALID_SERVER_SUMMARY = """\
================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : Server
Mode     : PerformanceOnly
Completed samples per second    : 194.47
Result is : INVALID
  Performance constraints satisfied : NO
  Min duration satisfied : Yes
  Min queries satisfied : Yes
  Early stopping satisfied: NO
Recommendations:
 * Reduce target QPS to improve latency.
Early Stopping Result:
 * Run unsuccessful.
 * Processed 392 queries.
 * Would need to run at least 67 more queries,
 with the run being successful if every additional
 query were under latency.

================================================
Additional Stats
================================================
Scheduled samples per second : 194.70
Min latency (ns)                : 2146762
Max latency (ns)                : 7377482
Mean latency (ns)               : 2919097
50.00 percentile latency (ns)   : 2312424
99.00 percentile latency (ns)   : 6588645
99.90 percentile latency (ns)   : 7377482
"""


def test_summary_reasons_in_loadgens_words(tmp_path: Path) -> None:
    (tmp_path / loadgen_run.SUMMARY_FILE).write_text(INVALID_SERVER_SUMMARY)
    error = {"key": "error_runtime", "value": "Ending early: Max test duration reached."}
    error["metadata"] = {"is_error": True}  # type: ignore[assignment]
    (tmp_path / loadgen_run.DETAIL_FILE).write_text(f":::MLLOG {json.dumps(error)}\n")

    summary = read_summary(tmp_path)

    assert summary.valid is False
    assert summary.completed_qps == 194.47 and summary.scheduled_qps == 194.70
    assert summary.percentiles_ms == {"50": 2.312424, "99": 6.588645, "99.9": 7.377482}
    assert summary.invalid_reasons() == [
        "Performance constraints satisfied : NO",
        "Early stopping satisfied : NO",
        "recommendation: Reduce target QPS to improve latency.",
        "early stopping: Run unsuccessful. Processed 392 queries. Would need to run at least "
        "67 more queries, with the run being successful if every additional query were "
        "under latency.",
        "error: error_runtime: Ending early: Max test duration reached.",
    ]


def test_logs_go_next_to_the_result_file() -> None:
    output = Path("/runs/w/input_model_performance_benchmark_0.json")
    assert loadgen_dir(output) == Path("/runs/w/input_model_performance_benchmark_0_loadgen")

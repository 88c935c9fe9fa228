"""The window plan said before timing, and the verdict's hints for short windows (pure logic)."""

from __future__ import annotations

import pytest

from contracts import BenchmarkRequest
from service.engine.window_plan import plan_window, settings_fix
from service.figures import aggregate, verdict
from service.runner.runlength import RunLength
from tests.unit.test_aggregate_verdict import codes, instance, steady

PERCENTILES = aggregate.PERCENTILES
REQUIRED = verdict.REQUIRED_PERCENTILES


def test_a_slow_model_under_the_defaults_is_told_the_cap_ends_it_and_how_long_it_would_need() -> (
    None
):
    rule = RunLength(iterations=None, duration_s=2.0, min_iterations=1000, max_duration_s=60.0)

    plan = plan_window(rule, call_s=0.166, instances=2, percentiles=PERCENTILES, required=REQUIRED)

    assert plan.ends_by == "max_duration_s"
    assert plan.window_s == 60.0
    assert plan.calls_per_instance == 362  # ceil(60 / 0.166)
    assert "before min_iterations 1000 (~166 s)" in plan.message
    p99 = next(f for f in plan.floors if f.percentile == 99.0)
    assert p99.reached and p99.expected_samples == 724  # 2 instances x 362 >= 662
    assert [f.percentile for f in plan.floors if not f.reached] == [99.9]


def test_a_short_window_names_the_percentiles_it_cannot_back_and_the_settings_that_would() -> None:
    rule = RunLength(iterations=None, duration_s=1.0, min_iterations=5, max_duration_s=3.0)

    plan = plan_window(rule, call_s=0.3, instances=1, percentiles=PERCENTILES, required=REQUIRED)

    assert plan.ends_by == "min_iterations" and plan.calls_per_instance == 5
    assert "p50, p90, p99, p99.9 will not be reported" in plan.message
    # the fix is for p99, the highest required floor: 662 calls at 0.3 s = 198.6 s
    assert "set benchmark.min_iterations to 662 and benchmark.max_duration_s to 219" in (
        plan.message
    )


def test_a_fast_model_reaches_every_required_floor_and_ends_by_duration() -> None:
    rule = RunLength(iterations=None, duration_s=5.0, min_iterations=1000, max_duration_s=60.0)

    plan = plan_window(rule, call_s=0.001, instances=2, percentiles=PERCENTILES, required=REQUIRED)

    assert plan.ends_by == "duration_s" and plan.window_s == 5.0
    assert all(f.reached for f in plan.floors if f.percentile in REQUIRED)
    assert "will not be reported" not in plan.message


def test_exact_iterations_are_fixed_by_iterations_not_by_the_cap() -> None:
    rule = RunLength(iterations=20, duration_s=1.0, min_iterations=5, max_duration_s=3.0)
    assert settings_fix(rule, 662, 200.0) == "set benchmark.iterations to 662"
    plan = plan_window(rule, call_s=0.3, instances=1, percentiles=PERCENTILES, required=REQUIRED)
    assert plan.ends_by == "iterations" and plan.window_s == pytest.approx(6.0)


def _figures(run_length: dict[str, object] | None, stop: str = "max_duration") -> dict:
    results = [instance(0, steady(40, 3, median_ms=100.0), stop_reason=stop)]
    figures = aggregate.summarize_performance(results, 1)
    if run_length is not None:
        figures["run_length"] = run_length
    return figures


DEFAULTS = {"iterations": None, "duration_s": 2.0, "min_iterations": 1000, "max_duration_s": 60.0}


def test_under_the_defaults_too_few_latencies_are_invalid_with_a_hint_that_works() -> None:
    step = verdict.performance_verdict(_figures({**DEFAULTS, "chosen": []}))

    assert step["status"] == "invalid"
    p99 = next(r for r in step["reasons"] if r.get("percentile") == 99.0)
    # 662 calls at ~100 ms: the cap (60 s) is what stops it, so the hint raises the cap
    assert "benchmark.max_duration_s to" in p99["message"]
    assert "raise min_iterations or duration_s" not in p99["message"]
    assert p99["window_needed_s"] == pytest.approx(66.2, rel=0.1)
    # the default min_iterations is not a demand of the request: the cap is only a warning
    assert "min_iterations_not_met" in codes(step["warnings"])
    assert "min_iterations_not_met" not in codes(step["reasons"])


def test_an_explicit_short_run_marks_percentiles_insufficient_without_invalidating() -> None:
    chosen = {**DEFAULTS, "min_iterations": 10, "max_duration_s": 4.0}
    step = verdict.performance_verdict(
        _figures({**chosen, "chosen": ["max_duration_s", "min_iterations"]})
    )

    assert step["status"] == "valid", step["reasons"]
    insufficient = [w for w in step["warnings"] if w["code"] == "insufficient_samples"]
    assert {w["percentile"] for w in insufficient} == {90.0, 99.0, 99.9}
    assert "the request set max_duration_s, min_iterations" in insufficient[1]["message"]


def test_min_iterations_asked_for_and_cut_by_the_default_cap_is_invalid() -> None:
    step = verdict.performance_verdict(
        _figures({**DEFAULTS, "min_iterations": 30, "chosen": ["min_iterations"]})
    )
    (reason,) = [r for r in step["reasons"] if r["code"] == "min_iterations_not_met"]
    assert "before min_iterations (30)" in reason["message"]


def test_a_request_knows_which_run_length_settings_it_set_and_its_cap() -> None:
    seed = {"id": "x", "input_model": {"path": "/m.pb", "precision": "fp32"}}
    plain = BenchmarkRequest.model_validate(seed)
    assert plain.benchmark.run_length_chosen() == ()
    assert plain.benchmark.cap_s() == 60.0
    long = BenchmarkRequest.model_validate({**seed, "benchmark": {"duration_s": 100}})
    assert long.benchmark.cap_s() == 100.0  # a long duration_s raises the default cap
    chosen = BenchmarkRequest.model_validate(
        {**seed, "benchmark": {"iterations": 50, "max_duration_s": 9}}
    )
    assert chosen.benchmark.run_length_chosen() == ("iterations", "max_duration_s")

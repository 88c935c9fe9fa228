"""Step figures from synthetic runner results, and the verdict they earn. No TensorFlow."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.figures import aggregate, verdict
from service.runner.protocol import CpuWindow, PerformanceResult, RunnerResult


def cpu_window(cpu: int, foreign: float = 0.0, **extra: Any) -> CpuWindow:
    return CpuWindow(
        cpus=[cpu],
        wall_s=2.0,
        clock_ticks_per_s=100,
        busy_ticks={cpu: 200},
        steal_ticks={cpu: 0},
        total_ticks={cpu: 200},
        own_cpu_s=2.0 * (1 - foreign),
        foreign_busy_fraction=foreign,
        steal_fraction=extra.pop("steal", 0.0),
        resolution_fraction=4 / 200,
        cpu_busy_fraction={cpu: 1.0},
        **extra,
    )


def instance(
    number: int,
    latencies_ms: np.ndarray,
    *,
    gap_ms: float = 0.05,
    stop_reason: str = "duration_and_min_iterations",
    window: CpuWindow | None = None,
    observed: list[int] | None = None,
) -> RunnerResult:
    """One instance whose calls run back to back from t=100 s (gap_ms between calls)."""
    ends_s = 100.0 + np.cumsum(latencies_ms + gap_ms) / 1000.0
    return RunnerResult(
        model="input_model",
        mode="performance",
        instance=number,
        pid=1000 + number,
        cpus_planned=[number],
        cpus_observed=[number] if observed is None else observed,
        batch_size=2,
        load_time_s=0.5,
        first_inference_s=0.1,
        warmup_iterations=10,
        warmup_s=0.5,
        peak_rss_bytes=500_000_000 + number,
        performance=PerformanceResult(
            window_start_s=100.0,
            batch_end_times_s=ends_s.tolist(),
            batch_latencies_ms=latencies_ms.tolist(),
            stop_reason=stop_reason,
            cpu_window=window if window is not None else cpu_window(number),
        ),
    )


def steady(n: int, seed: int, median_ms: float = 2.0, sigma: float = 0.05) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(median_ms), sigma, n)


def codes(items: list[dict[str, Any]]) -> list[str]:
    return [item["code"] for item in items]


def test_figures_of_two_steady_instances() -> None:
    results = [instance(0, steady(1500, 0)), instance(1, steady(1500, 1))]

    figures = aggregate.summarize_performance(results, batch_size=2)

    perfs = [r.performance for r in results]
    end = min(p.batch_end_times_s[-1] for p in perfs)  # type: ignore[union-attr]
    in_window = sum(sum(100 < e <= end for e in p.batch_end_times_s) for p in perfs)  # type: ignore[union-attr]
    assert figures["throughput_samples_per_s"] == pytest.approx(in_window * 2 / (end - 100))
    low, high = figures["throughput_ci95"]
    assert low < figures["throughput_samples_per_s"] < high
    assert (high - low) / figures["throughput_samples_per_s"] < 0.02  # 3000 steady calls
    all_ms = np.sort(np.concatenate([r.performance.batch_latencies_ms for r in results]))  # type: ignore[union-attr]
    assert figures["latency_ms_p99"] == pytest.approx(all_ms[int(np.ceil(0.99 * 3000)) - 1], 1e-3)
    assert figures["latency_ms_std"] == pytest.approx(np.std(all_ms, ddof=1), abs=1e-4)
    assert figures["latency_ms_median_ci95"][0] <= figures["latency_ms_median"]
    assert figures["latency_ms_median"] <= figures["latency_ms_median_ci95"][1]
    statuses = {e["percentile"]: e["status"] for e in figures["latency_percentiles"]}
    assert statuses == {50: "ok", 90: "ok", 99: "ok", 99.9: "insufficient"}
    assert figures["latency_ms_p999"] is None  # 3000 < 6636: not the maximum in disguise
    assert figures["stop_reason"] == "duration_and_min_iterations"
    assert figures["costs"]["peak_rss_bytes_per_instance"] == [500_000_000, 500_000_001]
    assert figures["per_instance"][1]["cpu_window"]["foreign_busy_fraction"] == 0.0

    step = verdict.performance_verdict(figures)
    assert step["status"] == "valid", step
    assert codes(step["warnings"]) == ["insufficient_samples"]  # p99.9: a warning only


def test_too_few_samples_for_p90_and_p99_is_invalid_and_says_how_many() -> None:
    figures = aggregate.summarize_performance([instance(0, steady(40, 2))], batch_size=2)

    assert figures["latency_ms_p50"] is not None
    assert figures["latency_ms_p90"] is None and figures["latency_ms_p99"] is None

    step = verdict.performance_verdict(figures)
    assert step["status"] == "invalid"
    messages = [r["message"] for r in step["reasons"] if r["code"] == "insufficient_samples"]
    assert len(messages) == 2
    assert "p90 needs at least 64" in messages[0] and "has 40" in messages[0]
    assert "p99 needs at least 662" in messages[1]


def test_other_processes_on_our_cpu_make_it_invalid_and_name_the_cpu() -> None:
    busy = cpu_window(1, foreign=0.45)
    results = [instance(0, steady(1000, 3)), instance(1, steady(1000, 4), window=busy)]

    step = verdict.performance_verdict(aggregate.summarize_performance(results, 2))

    assert step["status"] == "invalid"
    (reason,) = [r for r in step["reasons"] if r["code"] == "foreign_cpu_load"]
    assert reason["cpus"] == [1] and reason["instance"] == 1
    assert "45% of cpu 1 (instance 1)" in reason["message"]


def test_a_little_foreign_load_is_a_warning_and_tick_noise_nothing() -> None:
    noise = [instance(0, steady(1000, 5), window=cpu_window(0, foreign=0.04))]
    some = [instance(0, steady(1000, 5), window=cpu_window(0, foreign=0.08))]

    quiet = verdict.performance_verdict(aggregate.summarize_performance(noise, 2))
    assert "foreign_cpu_load" not in codes(quiet["warnings"]) + codes(quiet["reasons"])
    step = verdict.performance_verdict(aggregate.summarize_performance(some, 2))
    assert step["status"] == "valid" and "foreign_cpu_load" in codes(step["warnings"])


def test_wide_latency_spread_is_a_warning_with_its_evidence_not_invalid() -> None:
    rng = np.random.default_rng(6)
    bimodal = np.where(rng.random(1000) < 0.5, 1.0, 3.0) * rng.lognormal(0, 0.02, 1000)

    step = verdict.performance_verdict(
        aggregate.summarize_performance([instance(0, bimodal)], batch_size=2)
    )

    assert step["status"] == "valid"
    (spread,) = [w for w in step["warnings"] if w["code"] == "latency_spread"]
    assert spread["value"] > verdict.SPREAD_LARGE and spread["threshold"] == verdict.SPREAD_LARGE
    assert "vary a lot" in spread["message"]


def _details(tf_version: str, onednn_enabled: bool) -> dict:
    return {"tensorflow_version": tf_version, "onednn_enabled": onednn_enabled, "verdict": {}}


def test_steps_under_different_onednn_settings_make_the_result_invalid() -> None:
    same = {
        "input_model_benchmark": {"performance": _details("2.21.0", True)},
        "optimized_model_benchmark": {"performance": _details("2.21.0", True)},
    }
    mixed = {
        "input_model_benchmark": {"performance": _details("2.21.0", False)},
        "optimized_model_benchmark": {"performance": _details("2.21.0", True)},
    }

    assert verdict.overall(same)["status"] == "valid"
    result = verdict.overall(mixed)
    assert result["status"] == "invalid"
    (reason,) = result["reasons"]
    assert reason["code"] == "runtime_mismatch" and reason["setting"] == "onednn_enabled"
    assert "False in input_model/performance" in reason["message"]
    assert "True in optimized_model/performance" in reason["message"]


def test_capped_run_pinning_mismatch_throttling_and_steal_are_each_invalid() -> None:
    window = cpu_window(0, steal=0.3, throttle_events={0: 12})
    results = [
        instance(0, steady(800, 7), stop_reason="max_duration", window=window, observed=[0, 1])
    ]

    figures = aggregate.summarize_performance(results, 2)
    step = verdict.performance_verdict(figures, aggregate.pinning_mismatches(results))

    assert step["status"] == "invalid"
    assert set(codes(step["reasons"])) == {
        "min_iterations_not_met", "cpu_steal", "throttling", "pinning_mismatch",
    }  # fmt: skip
    pinning = next(r for r in step["reasons"] if r["code"] == "pinning_mismatch")
    assert "planned cpus [0]" in pinning["message"] and "[0, 1]" in pinning["message"]


def test_straggler_is_a_warning() -> None:
    results = [instance(0, steady(1000, 8)), instance(1, steady(1000, 9, median_ms=4.0))]
    step = verdict.performance_verdict(aggregate.summarize_performance(results, 2))
    assert "straggler" in codes(step["warnings"])


def test_speedup_interval_holds_the_point_ratio() -> None:
    base = [instance(0, steady(1500, 10, median_ms=2.0))]
    new = [instance(0, steady(1500, 11, median_ms=1.0))]

    low, high = aggregate.speedup_interval(base, new, batch_size=2)  # type: ignore[misc]

    ratio = (
        aggregate.summarize_performance(new, 2)["throughput_samples_per_s"]
        / aggregate.summarize_performance(base, 2)["throughput_samples_per_s"]
    )
    assert 1.8 < low < ratio < high < 2.1


def test_overall_verdict_names_the_step_and_adds_machine_warnings() -> None:
    bad = verdict.performance_verdict(
        aggregate.summarize_performance([instance(0, steady(40, 12))], 2)
    )
    good = verdict.accuracy_verdict()
    details = {
        "input_model_benchmark": {"performance": {"verdict": bad}, "accuracy": {"verdict": good}},
    }
    fingerprint = {"frequency": {"governors": ["powersave"]}}

    overall = verdict.overall(details, verdict.machine_warnings(fingerprint))

    assert overall["status"] == "invalid"
    assert {r["step"] for r in overall["reasons"]} == {"input_model/performance"}
    assert "governor" in codes(overall["warnings"])
    assert overall["thresholds"]["foreign_busy_fraction_invalid"] == verdict.FOREIGN_BUSY_INVALID
    assert verdict.overall({})["status"] == "valid"


def test_accuracy_pinning_mismatch_is_only_a_warning() -> None:
    step = verdict.accuracy_verdict(["instance 0 planned cpus [0] but ..."])
    assert step["status"] == "valid" and codes(step["warnings"]) == ["pinning_mismatch"]


def test_an_instance_that_measured_nothing_is_an_error() -> None:
    empty = instance(0, np.array([]))
    with pytest.raises(ValueError, match="measured nothing"):
        aggregate.summarize_performance([empty], 2)


@pytest.mark.parametrize(("pct", "key"), [(50, "latency_ms_p50"), (99.9, "latency_ms_p999")])
def test_percentile_keys_have_no_dot(pct: float, key: str) -> None:
    assert aggregate.percentile_key(pct) == key

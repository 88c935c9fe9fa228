"""Turning raw runner results into the figures a step reports. Pure functions, no I/O.

Throughput across instances is measured over one common window: every instance starts at the
same instant (the barrier), and the window ends when the first instance stops, so every
instance was running through all of it. Aggregate throughput = samples completed by all
instances inside the window / the window's length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean, median
from typing import Any

from service.runner.protocol import RunnerResult

PERCENTILES = (50.0, 90.0, 99.0)
STRAGGLER_RATIO = 0.8  # an instance below 80% of the median instance throughput is flagged
PERCENTILE_METHOD = "nearest-rank"


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (``pct`` in 0..100)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize_performance(results: Sequence[RunnerResult], batch_size: int) -> dict[str, Any]:
    """The step's performance figures from each instance's raw timings."""
    perfs = [r.performance for r in results]
    if not results or any(p is None or not p.batch_end_times_s for p in perfs):
        raise ValueError("an instance measured nothing")
    window_start_s = max(p.window_start_s for p in perfs if p)
    window_end_s = min(p.batch_end_times_s[-1] for p in perfs if p)
    window_s = window_end_s - window_start_s
    if window_s <= 0:
        raise ValueError("the common measurement window is empty")
    in_window = sum(
        sum(1 for end in p.batch_end_times_s if window_start_s < end <= window_end_s)
        for p in perfs
        if p
    )
    latencies = sorted(ms for p in perfs if p for ms in p.batch_latencies_ms)
    per_instance = [_instance_figures(r, batch_size) for r in results]
    _flag_stragglers(per_instance)
    instance_means = [i["latency_ms_mean"] for i in per_instance]
    return {
        "throughput_samples_per_s": round(in_window * batch_size / window_s, 4),
        "latency_ms": round(fmean(instance_means), 4),
        "latency_ms_mean": round(fmean(latencies), 4),
        **{f"latency_ms_p{pct:g}": round(percentile(latencies, pct), 4) for pct in PERCENTILES},
        "latency_samples": len(latencies),
        "percentile_method": PERCENTILE_METHOD,
        "window_s": round(window_s, 6),
        "samples_in_window": in_window * batch_size,
        "per_instance": per_instance,
    }


def _instance_figures(result: RunnerResult, batch_size: int) -> dict[str, Any]:
    perf = result.performance
    assert perf is not None
    own_window_s = perf.batch_end_times_s[-1] - perf.window_start_s
    return {
        "instance": result.instance,
        "pid": result.pid,
        "cpus_planned": result.cpus_planned,
        "cpus_observed": result.cpus_observed,
        "intra_op_threads": result.intra_op_threads,
        "inter_op_threads": result.inter_op_threads,
        "iterations": len(perf.batch_latencies_ms),
        "throughput_samples_per_s": round(
            len(perf.batch_end_times_s) * batch_size / own_window_s, 4
        ),
        "latency_ms_mean": round(fmean(perf.batch_latencies_ms), 4),
        "stop_reason": perf.stop_reason,
        "load_time_s": result.load_time_s,
        "first_inference_s": result.first_inference_s,
        "peak_rss_bytes": result.peak_rss_bytes,
        "straggler": False,
    }


def _flag_stragglers(per_instance: list[dict[str, Any]]) -> None:
    if len(per_instance) < 2:
        return
    typical = median(i["throughput_samples_per_s"] for i in per_instance)
    for figures in per_instance:
        figures["straggler"] = figures["throughput_samples_per_s"] < STRAGGLER_RATIO * typical


def summarize_accuracy(result: RunnerResult) -> dict[str, Any]:
    if result.accuracy is None:
        raise ValueError("the accuracy run reported no accuracy")
    acc = result.accuracy
    return {
        "accuracy": round(acc.accuracy, 4),
        "correct": acc.correct,
        "samples": acc.samples,
        "metric": f"top{acc.topk}",
        "load_time_s": result.load_time_s,
        "peak_rss_bytes": result.peak_rss_bytes,
    }


def pinning_mismatches(results: Sequence[RunnerResult]) -> list[str]:
    """Instances whose threads were allowed on CPUs other than the planned ones."""
    return [
        f"instance {r.instance} planned cpus {r.cpus_planned} but its threads were allowed "
        f"on {r.cpus_observed}"
        for r in results
        if sorted(r.cpus_observed) != sorted(r.cpus_planned)
    ]

"""Turning raw runner results into the figures a step reports. Pure functions, no I/O.

Throughput across instances is measured over one common window: every instance starts at the
same instant (the barrier), and the window ends when the first instance stops, so every
instance was running through all of it. Aggregate throughput = samples completed by all
instances inside the window / the window's length.

Latency figures are over every timed batch of every instance (per-batch latency, ms).
Percentiles by nearest rank, each with its sample count and floor (:mod:`service.figures.stats`).

Confidence intervals (95%, bootstrap, :mod:`service.figures.stats`):

* throughput: each instance's inter-completion intervals inside the common window (time from
  the window start to its first completion, then between completions) are resampled in
  blocks of consecutive batches; a replicate is Σ over instances of ``batch_size / mean
  interval``. Intervals, not latencies, because throughput also pays for the time between
  calls.
* median latency: each instance's latency series resampled in blocks, pooled, median.
* speedup: optimized over input throughput replicates (independent runs, seeds per model).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean, median
from typing import Any

import numpy as np

from service.figures import stats
from service.runner.protocol import PerformanceResult, RunnerResult

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
STRAGGLER_RATIO = 0.8  # an instance below 80% of the median instance throughput is flagged
PERCENTILE_METHOD = stats.PERCENTILE_METHOD
ROLE_SEEDS = {"input_model": stats.BOOTSTRAP_SEED, "optimized_model": stats.BOOTSTRAP_SEED + 1}


def percentile_key(pct: float) -> str:
    """``latency_ms_p50``, ``latency_ms_p99``, ``latency_ms_p999`` (no dot in a JSON key)."""
    return "latency_ms_p" + f"{pct:g}".replace(".", "")


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _common_window(perfs: Sequence[PerformanceResult]) -> tuple[float, float]:
    start_s = max(p.window_start_s for p in perfs)
    end_s = min(p.batch_end_times_s[-1] for p in perfs)
    if end_s - start_s <= 0:
        raise ValueError("the common measurement window is empty")
    return start_s, end_s


def _window_intervals(perf: PerformanceResult, start_s: float, end_s: float) -> np.ndarray:
    """Inter-completion intervals of one instance inside the window, the first from its start."""
    ends = np.asarray(perf.batch_end_times_s)
    inside = ends[(ends > start_s) & (ends <= end_s)]
    return np.diff(np.concatenate(([start_s], inside)))


def _perfs(results: Sequence[RunnerResult]) -> list[PerformanceResult]:
    perfs = [r.performance for r in results]
    if not results or any(p is None or not p.batch_end_times_s for p in perfs):
        raise ValueError("an instance measured nothing")
    return [p for p in perfs if p is not None]


def throughput_replicates(
    results: Sequence[RunnerResult], batch_size: int, seed: int = stats.BOOTSTRAP_SEED
) -> np.ndarray | None:
    """Bootstrap replicates of the step's aggregate throughput (None: too few completions)."""
    perfs = _perfs(results)
    start_s, end_s = _common_window(perfs)
    intervals = [_window_intervals(p, start_s, end_s) for p in perfs]
    return stats.throughput_replicates(intervals, batch_size, seed=seed)


def summarize_performance(
    results: Sequence[RunnerResult], batch_size: int, seed: int = stats.BOOTSTRAP_SEED
) -> dict[str, Any]:
    """The step's performance figures from each instance's raw timings."""
    perfs = _perfs(results)
    window_start_s, window_end_s = _common_window(perfs)
    window_s = window_end_s - window_start_s
    in_window = sum(
        sum(1 for end in p.batch_end_times_s if window_start_s < end <= window_end_s) for p in perfs
    )
    latencies = sorted(ms for p in perfs for ms in p.batch_latencies_ms)
    per_instance = [_instance_figures(r, batch_size) for r in results]
    _flag_stragglers(per_instance)
    instance_means = [i["latency_ms_mean"] for i in per_instance]
    figures = [stats.percentile_figure(latencies, pct) for pct in PERCENTILES]
    spread = stats.spread(latencies)
    replicates = throughput_replicates(results, batch_size, seed)
    median_ci = stats.median_interval([p.batch_latencies_ms for p in perfs], seed=seed)
    reasons = {p.stop_reason for p in perfs}
    return {
        "throughput_samples_per_s": round(in_window * batch_size / window_s, 4),
        "throughput_ci95": _rounded_pair(
            None if replicates is None else stats.interval(replicates)
        ),
        "latency_ms": round(fmean(instance_means), 4),
        "latency_ms_mean": round(spread.mean, 4),
        "latency_ms_std": _round(spread.std),
        "latency_ms_median": round(spread.median, 4),
        "latency_ms_median_ci95": _rounded_pair(median_ci),
        **{percentile_key(f.percentile): _round(f.value) for f in figures},
        "latency_percentiles": [
            {
                "percentile": f.percentile,
                "value_ms": _round(f.value),
                "status": f.status,
                "samples": f.samples,
                "min_samples": f.min_samples,
            }
            for f in figures
        ],
        "latency_cv": _round(spread.cv),
        "latency_iqr_over_median": _round(spread.iqr_over_median),
        "latency_samples": len(latencies),
        "percentile_method": PERCENTILE_METHOD,
        "bootstrap": {
            "method": stats.BOOTSTRAP_METHOD,
            "resamples": stats.BOOTSTRAP_RESAMPLES,
            "confidence": stats.BOOTSTRAP_CONFIDENCE,
            "seed": seed,
        },
        "latency_quantiles_ms": latency_quantiles(latencies),
        "throughput_timeline": throughput_timeline(perfs, window_start_s, window_end_s, batch_size),
        "window_s": round(window_s, 6),
        "samples_in_window": in_window * batch_size,
        "stop_reason": reasons.pop() if len(reasons) == 1 else "mixed",
        "per_instance": per_instance,
        "costs": _costs(results),
    }


QUANTILE_POINTS = 51  # 0%, 2%, ..., 100%: a CDF worth drawing, small in the event


def latency_quantiles(sorted_latencies_ms: Sequence[float]) -> list[float]:
    """The latency at 0%, 2%, ..., 100% of the calls (linear interpolation): the step's CDF."""
    if not sorted_latencies_ms:
        return []
    levels = np.linspace(0.0, 1.0, QUANTILE_POINTS)
    return [round(float(v), 4) for v in np.quantile(np.asarray(sorted_latencies_ms), levels)]


def timeline_bucket_s(window_s: float) -> float:
    """0.5 s buckets, or a tenth of a window shorter than 5 s."""
    return 0.5 if window_s >= 5 else max(round(window_s / 10, 3), 0.001)


def throughput_timeline(
    perfs: Sequence[PerformanceResult], start_s: float, end_s: float, batch_size: int
) -> dict[str, Any]:
    """Samples per second of all instances together in each full bucket of the common window:
    warm-up left-overs, throttling or a noisy neighbour show as a slope or a dip."""
    bucket_s = timeline_bucket_s(end_s - start_s)
    buckets = int((end_s - start_s) / bucket_s + 1e-9)
    counts = np.zeros(max(buckets, 0), dtype=np.int64)
    for perf in perfs:
        ends = np.asarray(perf.batch_end_times_s)
        index = np.floor((ends[(ends > start_s) & (ends <= end_s)] - start_s) / bucket_s)
        index = index[index < buckets].astype(np.int64)
        counts += np.bincount(index, minlength=buckets)[:buckets]
    rates = [round(int(c) * batch_size / bucket_s, 3) for c in counts]
    return {"bucket_s": bucket_s, "samples_per_s": rates}


def _rounded_pair(pair: tuple[float, float] | None, digits: int = 4) -> list[float] | None:
    return None if pair is None else [round(pair[0], digits), round(pair[1], digits)]


def _instance_figures(result: RunnerResult, batch_size: int) -> dict[str, Any]:
    perf = result.performance
    assert perf is not None
    own_window_s = perf.batch_end_times_s[-1] - perf.window_start_s
    window = perf.cpu_window
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
        "warmup_iterations": result.warmup_iterations,
        "warmup_s": _round(result.warmup_s),
        "load_time_s": result.load_time_s,
        "freeze_cache": result.freeze_cache,
        "first_inference_s": result.first_inference_s,
        "peak_rss_bytes": result.peak_rss_bytes,
        "cpu_window": None
        if window is None
        else window.model_dump(mode="json", exclude={"busy_ticks", "steal_ticks", "total_ticks"}),
        "straggler": False,
    }


def _costs(results: Sequence[RunnerResult]) -> dict[str, Any]:
    """What running the model cost besides time per call (the model's size is added later)."""

    def largest(values: list[float | int | None]) -> float | int | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    rss = [r.peak_rss_bytes for r in results]
    return {
        "load_time_s": _round(largest([r.load_time_s for r in results])),
        "first_inference_s": _round(largest([r.first_inference_s for r in results])),
        "peak_rss_bytes_per_instance": rss,
        "peak_rss_bytes_max": largest(rss),  # type: ignore[arg-type]
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
        "ties_counted_wrong": acc.tied_wrong,
        "outputs_constant": acc.outputs_constant,
        "predicted_classes": acc.predicted_classes,
        "load_time_s": result.load_time_s,
        "freeze_cache": result.freeze_cache,
        "peak_rss_bytes": result.peak_rss_bytes,
        "costs": _costs([result]),
    }


def speedup_interval(
    input_results: Sequence[RunnerResult],
    optimized_results: Sequence[RunnerResult],
    batch_size: int,
) -> list[float] | None:
    """95% interval of optimized/input throughput, from each step's bootstrap replicates."""
    base = throughput_replicates(input_results, batch_size, ROLE_SEEDS["input_model"])
    new = throughput_replicates(optimized_results, batch_size, ROLE_SEEDS["optimized_model"])
    if base is None or new is None:
        return None
    return _rounded_pair(stats.ratio_interval(new, base))


def pinning_mismatches(results: Sequence[RunnerResult]) -> list[str]:
    """Instances whose threads were allowed on CPUs other than the planned ones."""
    return [
        f"instance {r.instance} planned cpus {r.cpus_planned} but its threads were allowed "
        f"on {r.cpus_observed}"
        for r in results
        if sorted(r.cpus_observed) != sorted(r.cpus_planned)
    ]

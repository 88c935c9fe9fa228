"""The single_stream and server scenarios: MLPerf LoadGen drives the calls, LoadGen judges.

No TensorFlow here: :func:`run_scenario` gets ``call``, a zero-argument callable that runs one
inference of one batch (one LoadGen *sample* is one batch of ``batch_size``).

The system under test (:class:`_Sut`): LoadGen's issue thread calls ``issue_queries``, which
stamps each sample with ``time.monotonic_ns()`` and puts it on a queue; one worker thread takes
samples one at a time, runs ``call()``, stamps the end and completes the sample with
``QuerySamplesComplete`` (in single_stream, where nothing can queue, the call runs in the issue
thread itself, without the hand-off). Our per-query latency is end - receipt; LoadGen's is its own
completion stamp - the query's *scheduled* time, so it also holds the issue thread's wake-up
and the Python callback's entry (both a few tens of µs when ``call`` releases the GIL, as a
TensorFlow session call does).

* ``single_stream``: one LoadGen run; the next query is issued when the previous completes.
  Judged at LoadGen's single-stream percentile (90, ``mlperf.conf``).
* ``server``: Poisson arrivals. The single-call latency is measured first (median of a few
  calls); a target below it cannot be met at any rate and no search is run. Otherwise the
  rate is bisected between 0 and the capacity of one serial worker (1 / call time) with a
  handful of short LoadGen runs, each judged VALID/INVALID by LoadGen's own summary
  (latency at ``target_percentile`` within ``target_latency_ms``, min duration, min queries,
  early stopping). The highest VALID rate is reported, with that run's timings.

Run rules are shortened: LoadGen's ``mlperf.conf`` asks for 600 s per run; here a run's
``min_duration`` is the request's ``duration_s`` and its ``min_query_count`` the request's
``min_iterations`` (or ``iterations``), raised to the fewest queries with which LoadGen's early
stopping can call the run VALID. The ``loadgen`` dict says ``"full_length": false`` and lists
the rules used next to LoadGen's defaults. Seeds are ``mlperf.conf``'s (read from LoadGen).

Every run's logs (``mlperf_log_summary.txt``, ``mlperf_log_detail.txt``) stay in their own
folder under ``outdir``: ``single_stream/``, ``server_qps_<rate>/``.
"""

from __future__ import annotations

import json
import math
import queue
import re
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import mlperf_loadgen as lg  # type: ignore[import-not-found]

from service.runner import probes
from service.runner.protocol import CpuWindow, PerformanceResult, ScenarioConfig
from service.runner.runlength import (
    DURATION_AND_MIN_ITERATIONS,
    ITERATIONS,
    MAX_DURATION,
    RunLength,
)

SUMMARY_FILE = "mlperf_log_summary.txt"
DETAIL_FILE = "mlperf_log_detail.txt"
EARLY_STOPPING_CONFIDENCE = 0.99  # results.cc: fixed in LoadGen
PROBE_CALLS = 5  # the single-call latency: median of this many calls
SEARCH_RUNS = 6  # server: LoadGen runs at most
SEARCH_PRECISION = 0.02  # server: stop once the bracket is this fraction of the capacity
SERVER_RUN_CAP_S = 30.0  # server, no max_duration_s: a run's cap is max(4 x duration, this)
# LoadGen pre-generates every query of a run (about 300 bytes each, measured: 4 M queries took
# 1.2 GB): the expected latency (single_stream) and the rate (server) keep them to this many.
MAX_GENERATED_QUERIES = 1_000_000
# LoadGen's summary percentiles, as the doubles it indexes with (results.h).
SUMMARY_PERCENTILES = {"50": 0.5, "90": 0.9, "95": 0.95, "97": 0.97, "99": 0.99, "99.9": 0.999}
PERCENTILE_METHOD = "loadgen: sorted[int(n * p)] (nearest rank, as results.cc)"
_CONF_MODEL = "benchmark-worker"  # matches only mlperf.conf's '*' entries
_LG_SCENARIO = {"single_stream": "SingleStream", "server": "Server"}

Call = Callable[[], object]


def run_scenario(
    call: Call,
    scenario: ScenarioConfig,
    rule: RunLength,
    outdir: Path,
    batch_size: int,
    cpus: list[int] | None = None,
) -> PerformanceResult:
    """Run ``scenario`` (single_stream or server) under LoadGen; timings + ``loadgen`` dict.

    ``rule`` gives the shortened run length (``duration_s`` -> min_duration,
    ``iterations``/``min_iterations`` -> min_query_count, ``max_duration_s`` -> max_duration);
    ``cpus`` are watched for other processes during the reported run. An exception from
    ``call`` ends the scenario: the remaining queries complete without a call, then it is
    raised here.
    """
    if scenario.name not in _LG_SCENARIO:
        raise ValueError(f"run_scenario runs single_stream or server, not {scenario.name!r}")
    outdir.mkdir(parents=True, exist_ok=True)
    probe = _probe(call)
    if scenario.name == "single_stream":
        return _single_stream(call, rule, outdir, batch_size, cpus, probe)
    return _server(call, scenario, rule, outdir, batch_size, cpus, probe)


# --- the system under test ---------------------------------------------------------------


class _Sut:
    """One worker thread runs ``call()`` per sample, in arrival order.

    ``inline`` (single_stream, where LoadGen issues the next query only once the last one is
    complete, so nothing ever queues): the call runs in LoadGen's issue thread, as MLPerf's
    reference SUTs do, without a hand-off to a worker thread (measured: about a tenth of a
    0.3 ms call, ops/perf/loadgen_overhead.py)."""

    def __init__(self, call: Call, inline: bool = False) -> None:
        self._call = call
        self._inline = inline
        self._queue: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self.received_ns: list[int] = []
        self.done_ns: list[int] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="loadgen-sut", daemon=True)

    def issue_queries(self, samples: Sequence[Any]) -> None:
        """LoadGen's issue thread: stamp and queue; never blocks, never raises."""
        received = time.monotonic_ns()
        if self._inline:
            for sample in samples:
                self._answer(sample.id, received)
            return
        put = self._queue.put
        for sample in samples:
            put((sample.id, received))

    def flush_queries(self) -> None:
        """Nothing is held back: every sample is run as soon as the worker is free."""

    def _serve(self) -> None:
        get = self._queue.get
        while (item := get()) is not None:
            self._answer(*item)

    def _answer(self, sample_id: int, received_ns: int) -> None:
        """Run one sample and complete it (LoadGen waits for every sample: even after an
        error, which is kept and raised once LoadGen returns)."""
        if self.error is None:
            try:
                self._call()
            except BaseException as exc:
                self.error = exc
            else:
                self.done_ns.append(time.monotonic_ns())
                self.received_ns.append(received_ns)
        lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0)])

    def __enter__(self) -> _Sut:
        if not self._inline:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if not self._inline:
            self._queue.put(None)
            self._thread.join()


# --- one LoadGen run -----------------------------------------------------------------------


@dataclass
class Summary:
    """What LoadGen's ``mlperf_log_summary.txt`` (and its detail log) say about one run."""

    valid: bool | None = None
    checks: dict[str, str] = field(default_factory=dict)  # "Min duration": "Yes" | "NO" | ...
    recommendations: list[str] = field(default_factory=list)
    early_stopping: list[str] = field(default_factory=list)
    percentiles_ms: dict[str, float] = field(default_factory=dict)
    target_percentile_ms: float | None = None  # single_stream's headline line
    completed_qps: float | None = None  # server
    scheduled_qps: float | None = None  # server
    qps_with_overhead: float | None = None  # single_stream
    qps_without_overhead: float | None = None  # single_stream
    errors: list[str] = field(default_factory=list)  # detail log entries marked is_error
    warnings: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)  # selected detail-log keys

    def invalid_reasons(self) -> list[str]:
        """LoadGen's own words for an INVALID run: failed checks, recommendations, errors."""
        if self.valid is not False:
            return []
        reasons = [f"{name} satisfied : NO" for name, value in self.checks.items() if value == "NO"]
        reasons += [f"recommendation: {text}" for text in self.recommendations]
        if self.checks.get("Early stopping") == "NO" and self.early_stopping:
            reasons.append("early stopping: " + " ".join(self.early_stopping))
        reasons += [f"error: {text}" for text in self.errors]
        return reasons

    @property
    def achieved_qps(self) -> float | None:
        return self.completed_qps if self.completed_qps is not None else self.qps_with_overhead


@dataclass
class _Run:
    """One LoadGen run: its settings, our stamps, LoadGen's verdict."""

    name: str
    logdir: Path
    target_qps: float | None
    received_ns: list[int]
    done_ns: list[int]
    summary: Summary
    cpu_window: CpuWindow | None

    @property
    def latencies_ms(self) -> list[float]:
        return [(d - r) / 1e6 for r, d in zip(self.received_ns, self.done_ns, strict=True)]

    @property
    def ended_by_max_duration(self) -> bool:
        return any("Max test duration reached" in text for text in self.summary.errors)


@dataclass(frozen=True)
class _Rules:
    """The run rules as set, and LoadGen's defaults (``mlperf.conf``) they shorten."""

    min_duration_s: float
    min_query_count: int
    max_duration_s: float | None
    early_stopping_min_queries: int
    defaults: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_duration_s": self.min_duration_s,
            "min_query_count": self.min_query_count,
            "max_duration_s": self.max_duration_s,
            "early_stopping_min_queries": self.early_stopping_min_queries,
            "loadgen_defaults": self.defaults,
            "shortened": self.shortened,
            "seeds": "mlperf.conf",
        }

    @property
    def shortened(self) -> list[str]:
        """The rules below LoadGen's defaults (a max_duration, LoadGen's has none, is listed
        as it is: it only ends runs that already fell behind their rules)."""
        names = []
        if self.min_duration_s < self.defaults["min_duration_s"]:
            names.append("min_duration_s")
        if self.min_query_count < self.defaults["min_query_count"]:
            names.append("min_query_count")
        return names

    @property
    def full_length(self) -> bool:
        return not self.shortened


def _settings(name: str) -> Any:
    """LoadGen's TestSettings with ``mlperf.conf`` loaded (seeds, 600 s min duration, ...)."""
    settings = lg.TestSettings()
    lg_name = _LG_SCENARIO[name]
    settings.scenario = getattr(lg.TestScenario, lg_name)
    settings.FromConfig("", _CONF_MODEL, lg_name, 0)  # conf_type 0: the built-in mlperf.conf
    settings.mode = lg.TestMode.PerformanceOnly
    return settings


def _rules(name: str, rule: RunLength, percentile: float, max_duration_s: float | None) -> _Rules:
    """``rule`` as LoadGen's: duration_s -> min_duration (0 with iterations), iterations or
    min_iterations -> min_query_count, raised to the early-stopping minimum."""
    defaults = _settings(name)
    # single_stream's early stopping asks for h(t=1) + 1 queries, server's for h(t) + t.
    early_min = early_stopping_min_queries(percentile, overlatency=int(name == "single_stream"))
    wanted = rule.iterations if rule.iterations is not None else rule.min_iterations
    return _Rules(
        min_duration_s=0.0 if rule.iterations is not None else rule.duration_s,
        min_query_count=max(wanted, early_min),
        max_duration_s=rule.max_duration_s if max_duration_s is None else max_duration_s,
        early_stopping_min_queries=early_min,
        defaults={
            "min_duration_s": defaults.min_duration_ms / 1000.0,
            "min_query_count": int(defaults.min_query_count),
            "max_duration_s": defaults.max_duration_ms / 1000.0 or None,
        },
    )


def _run_once(
    call: Call,
    settings: Any,
    rules: _Rules,
    logdir: Path,
    name: str,
    target_qps: float | None,
    cpus: list[int] | None,
) -> _Run:
    settings.min_duration_ms = round(rules.min_duration_s * 1000)
    settings.min_query_count = rules.min_query_count
    settings.max_duration_ms = (
        0 if rules.max_duration_s is None else math.ceil(rules.max_duration_s * 1000)
    )
    logdir.mkdir(parents=True, exist_ok=True)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(logdir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False
    sut_impl = _Sut(call, inline=name == "single_stream")
    sut = lg.ConstructSUT(sut_impl.issue_queries, sut_impl.flush_queries)
    qsl = lg.ConstructQSL(1, 1, _no_op, _no_op)  # one sample: the same batch every time
    before = probes.snapshot(cpus) if cpus else None
    try:
        with sut_impl:
            lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    cpu_window = probes.window(cpus, before, probes.snapshot(cpus)) if cpus and before else None
    if sut_impl.error is not None:
        raise sut_impl.error
    return _Run(
        name=name,
        logdir=logdir,
        target_qps=target_qps,
        received_ns=sut_impl.received_ns,
        done_ns=sut_impl.done_ns,
        summary=read_summary(logdir),
        cpu_window=cpu_window,
    )


def _no_op(_: object) -> None:
    """The QSL's load/unload: the batch is already in memory."""


# --- the scenarios -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    """A few timed calls before LoadGen starts (the single-call latency)."""

    start_ns: int
    end_ns: list[int]
    latencies_ns: list[int]

    @property
    def call_s(self) -> float:
        return statistics.median(self.latencies_ns) / 1e9


def _probe(call: Call, calls: int = PROBE_CALLS) -> _Probe:
    start = time.monotonic_ns()
    ends, latencies = [], []
    for _ in range(calls):
        began = time.monotonic_ns()
        call()
        ended = time.monotonic_ns()
        ends.append(ended)
        latencies.append(ended - began)
    return _Probe(start, ends, latencies)


def _single_stream(
    call: Call,
    rule: RunLength,
    outdir: Path,
    batch_size: int,
    cpus: list[int] | None,
    probe: _Probe,
) -> PerformanceResult:
    settings = _settings("single_stream")
    percentile = settings.single_stream_target_latency_percentile * 100
    # LoadGen pre-generates 2 x duration / expected latency queries: half the measured call
    # leaves room for a faster steady state (too few queries: min duration not satisfied).
    rules = _rules("single_stream", rule, percentile, None)
    floor_ns = 2 * rules.min_duration_s * 1e9 / MAX_GENERATED_QUERIES
    settings.single_stream_expected_latency_ns = max(
        1000, round(probe.call_s * 1e9 / 2), round(floor_ns)
    )
    if rule.max_duration_s is None:  # bounded anyway: twice what the rules need, plus 30 s
        planned_s = max(rules.min_duration_s, rules.min_query_count * probe.call_s)
        rules = replace(rules, max_duration_s=2 * planned_s + 30.0)
    run = _run_once(call, settings, rules, outdir / "single_stream", "single_stream", None, cpus)
    status = "valid" if run.summary.valid else "invalid"
    loadgen = {
        "scenario": "single_stream",
        "status": status,
        "result_valid": run.summary.valid,
        "invalid_reasons": run.summary.invalid_reasons(),
        "target_latency_ms": None,
        "target_percentile": percentile,
        "latency_ms_at_percentile": run.summary.target_percentile_ms,
        "achieved_qps": run.summary.achieved_qps,
        "qps_without_loadgen_overhead": run.summary.qps_without_overhead,
        "found_qps": None,
        "search": [],
        **_run_figures(run, percentile),
        **_common(rules, batch_size, probe),
        "message": f"LoadGen single_stream: {status.upper()}",
    }
    return _result(run, rule, loadgen)


def _server(
    call: Call,
    scenario: ScenarioConfig,
    rule: RunLength,
    outdir: Path,
    batch_size: int,
    cpus: list[int] | None,
    probe: _Probe,
) -> PerformanceResult:
    if scenario.target_latency_ms is None:
        raise ValueError("scenario 'server' needs target_latency_ms")
    target_ms, percentile = scenario.target_latency_ms, scenario.target_percentile
    call_ms = probe.call_s * 1000
    cap_s = rule.max_duration_s
    if cap_s is None:
        cap_s = max(4 * rule.duration_s, SERVER_RUN_CAP_S)
    rules = _rules("server", rule, percentile, cap_s)
    common = {
        "scenario": "server",
        "target_latency_ms": target_ms,
        "target_percentile": percentile,
        "capacity_qps": 1 / probe.call_s,
        **_common(rules, batch_size, probe),
    }
    if target_ms < call_ms:
        return _unreachable(common, probe, target_ms, percentile, batch_size)
    search = _search(call, target_ms, percentile, rules, outdir, probe, cpus)
    best = search.best
    reported = best or min(search.runs, key=lambda r: r.target_qps or 0.0)
    runs = len(search.runs)
    if best is not None:
        message = (
            f"highest VALID Poisson rate {best.target_qps:.4g} queries/s (batch {batch_size}) "
            f"keeps p{percentile:g} latency within {target_ms:g} ms ({runs} LoadGen runs)"
        )
        if not search.target_binding:
            message += (
                "; no rate tried was INVALID: the bound is the search's top (one worker's "
                "capacity, 1 / single-call time), not the latency target"
            )
    else:
        message = (
            f"no rate tried met p{percentile:g} <= {target_ms:g} ms under LoadGen's rules "
            f"({runs} runs, lowest {reported.target_qps:.4g} queries/s, whose timings are "
            "reported)"
        )
    if search.stopped:
        message += f"; {search.stopped}"
    loadgen = {
        **common,
        "status": "valid" if best is not None else "invalid",
        "result_valid": reported.summary.valid,
        "invalid_reasons": reported.summary.invalid_reasons(),
        "found_qps": None if best is None else best.target_qps,
        "search_top_qps": search.top_qps,
        "target_binding": search.target_binding,
        "reported_run": reported.name,
        "achieved_qps": reported.summary.achieved_qps,
        "scheduled_qps": reported.summary.scheduled_qps,
        "search": [_search_entry(run, percentile) for run in search.runs],
        **_run_figures(reported, percentile),
        "message": message,
    }
    return _result(reported, rule, loadgen)


def _unreachable(
    common: dict[str, Any], probe: _Probe, target_ms: float, percentile: float, batch_size: int
) -> PerformanceResult:
    """No search: the figures are the single-call measurements."""
    message = (
        f"target {target_ms:g} ms is below the model's single-call latency "
        f"{probe.call_s * 1000:.3g} ms at batch {batch_size}: no arrival rate can meet it"
    )
    latencies_ms = [n / 1e6 for n in probe.latencies_ns]
    loadgen = {
        **common,
        "status": "target_unreachable",
        "result_valid": None,
        "invalid_reasons": [message],
        "found_qps": None,
        "search": [],
        "loadgen_percentiles_ms": {},
        "our_percentiles_ms": _percentiles_ms(
            latencies_ms, [*SUMMARY_PERCENTILES, _key(percentile)]
        ),
        "percentile_method": PERCENTILE_METHOD,
        "queries": len(latencies_ms),
        "summary_path": None,
        "detail_path": None,
        "log_dir": None,
        "message": message,
    }
    return PerformanceResult(
        window_start_s=probe.start_ns / 1e9,
        batch_end_times_s=[n / 1e9 for n in probe.end_ns],
        batch_latencies_ms=latencies_ms,
        stop_reason=ITERATIONS,
        loadgen=loadgen,
    )


@dataclass
class _Search:
    runs: list[_Run]
    best: _Run | None
    top_qps: float
    target_binding: bool  # a rate above the best was INVALID (else the search's top bound it)
    stopped: str


def _search(
    call: Call,
    target_ms: float,
    percentile: float,
    rules: _Rules,
    outdir: Path,
    probe: _Probe,
    cpus: list[int] | None,
) -> _Search:
    """Bisect the Poisson rate in (0, top], top = 1 / call time (one worker serves one query
    at a time: no higher rate is sustainable), capped so a run's queries stay within
    MAX_GENERATED_QUERIES. After the first run, a rate that could not gather
    ``min_query_count`` queries within the run's cap (LoadGen would end it early, INVALID) is
    not tried.
    """
    top = min(1 / probe.call_s, MAX_GENERATED_QUERIES / max(rules.min_duration_s, 1.0))
    cap_s = rules.max_duration_s or SERVER_RUN_CAP_S
    floor = rules.min_query_count / (0.8 * cap_s)
    low, high = 0.0, top
    rate = top / 2
    search = _Search([], None, top, False, "")
    while len(search.runs) < SEARCH_RUNS:
        settings = _settings("server")
        settings.server_target_qps = rate
        settings.server_target_latency_ns = round(target_ms * 1e6)
        settings.server_target_latency_percentile = percentile / 100
        name = f"server_qps_{rate:.5g}"
        run = _run_once(call, settings, rules, outdir / name, name, rate, cpus)
        search.runs.append(run)
        if run.summary.valid:
            low = rate
            if search.best is None or rate > (search.best.target_qps or 0.0):
                search.best = run
        else:
            high = rate
        if (high - low) / top < SEARCH_PRECISION:
            break
        rate = (low + high) / 2
        if rate < floor:
            search.stopped = (
                f"search stopped: a run at {rate:.4g} queries/s needs "
                f"{rules.min_query_count / rate:.0f} s for its {rules.min_query_count} queries, "
                f"beyond the {cap_s:g} s run cap"
            )
            break
    best_qps = -1.0 if search.best is None else search.best.target_qps or 0.0
    search.target_binding = any(
        not run.summary.valid and (run.target_qps or 0.0) > best_qps for run in search.runs
    )
    return search


def _search_entry(run: _Run, percentile: float) -> dict[str, Any]:
    key = _key(percentile)
    ours = _percentiles_ms(run.latencies_ms, [key]).get(key)
    loadgen = run.summary.percentiles_ms.get(key)
    return {
        "target_qps": run.target_qps,
        "achieved_qps": run.summary.achieved_qps,
        "latency_ms_at_percentile": loadgen if loadgen is not None else ours,
        "latency_source": "loadgen" if loadgen is not None else "ours",
        "our_latency_ms_at_percentile": ours,
        "valid": bool(run.summary.valid),
        "queries": len(run.done_ns),
        "invalid_reasons": run.summary.invalid_reasons(),
        "log_dir": run.name,
    }


def _run_figures(run: _Run, percentile: float) -> dict[str, Any]:
    keys = [*SUMMARY_PERCENTILES, _key(percentile)]
    return {
        "loadgen_percentiles_ms": run.summary.percentiles_ms,
        "our_percentiles_ms": _percentiles_ms(run.latencies_ms, keys),
        "percentile_method": PERCENTILE_METHOD,
        "queries": len(run.done_ns),
        "loadgen_queries": run.summary.detail.get("result_query_count"),
        "overlatency_queries": run.summary.detail.get("result_overlatency_query_count"),
        "early_stopping": run.summary.early_stopping,
        "loadgen_errors": run.summary.errors,
        "loadgen_warnings": run.summary.warnings,
        "summary_path": str(run.logdir / SUMMARY_FILE),
        "detail_path": str(run.logdir / DETAIL_FILE),
        "log_dir": str(run.logdir),
    }


def _common(rules: _Rules, batch_size: int, probe: _Probe) -> dict[str, Any]:
    return {
        "batch_size": batch_size,
        "samples_per_query": 1,
        "single_call_ms": probe.call_s * 1000,
        "full_length": rules.full_length,
        "rules": rules.to_dict(),
        "loadgen_version": loadgen_version(),
    }


def _result(run: _Run, rule: RunLength, loadgen: dict[str, Any]) -> PerformanceResult:
    if rule.iterations is not None:
        stop_reason = ITERATIONS
    elif run.ended_by_max_duration:
        stop_reason = MAX_DURATION
    else:
        stop_reason = DURATION_AND_MIN_ITERATIONS
    return PerformanceResult(
        window_start_s=run.received_ns[0] / 1e9 if run.received_ns else 0.0,
        batch_end_times_s=[n / 1e9 for n in run.done_ns],
        batch_latencies_ms=run.latencies_ms,
        stop_reason=stop_reason,
        cpu_window=run.cpu_window,
        loadgen=loadgen,
    )


# --- rules, percentiles, logs --------------------------------------------------------------


def early_stopping_min_queries(
    percentile: float, overlatency: int = 0, confidence: float = EARLY_STOPPING_CONFIDENCE
) -> int:
    """The fewest queries with which LoadGen's early stopping passes (early_stopping.cc).

    With ``overlatency`` (t) queries above the bound, it needs n = h + t queries such that
    P(at most t of n exceed | each exceeds with 1 - p) < 1 - confidence. Server judges its
    overlatency count (t = 0 at best: 459 at p99); single_stream asks for t = 1 (64 at p90).
    """
    p = percentile / 100
    n = overlatency + 1
    while sum(math.comb(n, k) * (1 - p) ** k * p ** (n - k) for k in range(overlatency + 1)) >= (
        1 - confidence
    ):
        n += 1
    return n


def loadgen_percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """LoadGen's percentile: ``sorted[int(n * fraction)]`` (results.cc, a nearest rank)."""
    n = len(sorted_values)
    return sorted_values[min(n - 1, int(n * fraction))]


def _percentiles_ms(latencies_ms: Sequence[float], keys: Sequence[str]) -> dict[str, float]:
    if not latencies_ms:
        return {}
    ordered = sorted(latencies_ms)
    return {
        key: round(loadgen_percentile(ordered, SUMMARY_PERCENTILES.get(key, float(key) / 100)), 6)
        for key in dict.fromkeys(keys)
    }


def _key(percentile: float) -> str:
    return f"{percentile:g}"


_PERCENTILE_LINE = re.compile(r"^(\d+(?:\.\d+)?) percentile latency \(ns\)\s*:\s*(\d+)")
_TARGET_LINE = re.compile(r"^(\d+(?:\.\d+)?)th percentile latency \(ns\)\s*:\s*(\d+)")
_CHECK_LINE = re.compile(r"^\s+(.+?) satisfied\s*:\s*(\S+)")
_VALUE_LINE = re.compile(r"^(.+?)\s*:\s*([-+0-9.eE]+)\s*$")
_VALUES = {
    "Completed samples per second": "completed_qps",
    "Scheduled samples per second": "scheduled_qps",
    "QPS w/ loadgen overhead": "qps_with_overhead",
    "QPS w/o loadgen overhead": "qps_without_overhead",
}
_DETAIL_KEYS = (
    "loadgen_version",
    "result_validity",
    "result_query_count",
    "result_overlatency_query_count",
    "result_invalid_reason",
    "early_stopping_result",
)


def read_summary(logdir: Path) -> Summary:
    """Parse one run's ``mlperf_log_summary.txt`` (verdict, reasons, figures) and the errors
    and warnings of its ``mlperf_log_detail.txt``."""
    summary = Summary()
    section = ""
    for line in (logdir / SUMMARY_FILE).read_text(errors="replace").splitlines():
        stripped = line.strip()
        if stripped.startswith("Result is :"):
            summary.valid = stripped.endswith(" VALID")
        elif stripped in ("Recommendations:", "Early Stopping Result:"):
            section = stripped
        elif stripped.startswith("====") or not stripped:
            section = ""
        elif section and stripped.startswith("* "):
            target = (
                summary.recommendations if section == "Recommendations:" else summary.early_stopping
            )
            target.append(stripped[2:])
        elif section == "Early Stopping Result:" and summary.early_stopping:
            summary.early_stopping[-1] += " " + stripped  # a bullet's continuation line
        elif section == "Recommendations:" and summary.recommendations:
            summary.recommendations[-1] += " " + stripped
        elif match := _CHECK_LINE.match(line):
            summary.checks[match[1].strip()] = match[2]
        elif match := _PERCENTILE_LINE.match(stripped):
            summary.percentiles_ms[f"{float(match[1]):g}"] = int(match[2]) / 1e6
        elif match := _TARGET_LINE.match(stripped):
            summary.target_percentile_ms = int(match[2]) / 1e6
        elif (match := _VALUE_LINE.match(stripped)) and match[1] in _VALUES:
            setattr(summary, _VALUES[match[1]], float(match[2]))
    _read_detail(logdir / DETAIL_FILE, summary)
    return summary


def _read_detail(path: Path, summary: Summary) -> None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        _, marker, payload = line.partition(":::MLLOG ")
        if not marker:
            continue
        try:
            entry = json.loads(payload)
        except json.JSONDecodeError:
            continue
        key, value = entry.get("key"), entry.get("value")
        flags = entry.get("metadata") or {}
        if flags.get("is_error"):
            summary.errors.append(f"{key}: {value}")
        elif flags.get("is_warning"):
            summary.warnings.append(f"{key}: {value}")
        if key in _DETAIL_KEYS:
            summary.detail[key] = value


def loadgen_version() -> str | None:
    """The installed mlcommons-loadgen's version (LoadGen's own is in each detail log)."""
    try:
        return metadata.version("mlcommons-loadgen")
    except metadata.PackageNotFoundError:
        return None

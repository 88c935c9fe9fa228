"""Overhead of the bookkeeping: throughput with and without it, side by side, in one process.

    .venv/bin/python ops/perf/overhead.py [--rounds 6] [--round-s 3] [--samples DIR] [--cpu N]

One process pinned to one CPU loads the sample fp32 model once (as the runner does) and
alternates, round after round, three timed loops over the same session and inputs:

* ``bare``: the calls and a deadline check (one clock read per call);
* ``seed``: the runner's loop before issue 4: per-call latency and end time, a fixed deadline;
* ``runner``: the runner's loop now, :func:`service.runner.performance.measure`: per-call
  latency and end time, the run-length rule after every call, /proc and sysfs snapshots at
  the window edges.

Throughput of a round = calls / (last completion - start). The figures printed are medians
over rounds, and the ratios are medians of the per-round ratios (rounds alternate, so drift on
a shared machine hits all three alike). Target: runner within 1% of seed. Each round's foreign
CPU load (other processes on the CPU, :mod:`service.runner.probes`) is printed too.

On a busy machine wall-clock throughput mostly measures the neighbours. So each round also
reports calls per second of this process's own CPU time (``time.process_time``), and the
script then times the three loops around a call that does nothing (``--noop-calls`` of them):
what is left is the bookkeeping's own cost per call, in ns, which it sets against the median
real call. That figure barely depends on the neighbours.

Then the worker-side cost, which adds to a request's wall time but not to its window: hashing
the models and reading the machine (:class:`service.engine.signoff.SignOff`), and the statistics of
one step (percentiles, bootstrap) on the runner rounds' timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.perf._common import pinned_sample_model, sample_models
from service.runner.protocol import PerformanceResult, RunnerConfig, RunnerModel, RunnerResult

TARGET_RATIO = 0.99


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--round-s", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--samples", type=Path, default=None)
    parser.add_argument("--cpu", type=int, default=sorted(os.sched_getaffinity(0))[-1])
    parser.add_argument("--noop-calls", type=int, default=2_000_000)
    args = parser.parse_args()
    samples = sample_models(args.samples)
    model, feeds = pinned_sample_model(samples, args.cpu, args.batch_size)
    from service.runner import performance, probes
    from service.runner.runlength import RunLength

    run = model.run

    def bare(duration_s: float, run: Callable[..., object] = run) -> tuple[int, float]:
        calls, start = 0, time.monotonic()
        deadline = start + duration_s
        while True:
            run(*feeds)
            calls += 1
            if (now := time.monotonic()) >= deadline:
                return calls, now - start

    def seed(duration_s: float, run: Callable[..., object] = run) -> tuple[int, float]:
        latencies_ms: list[float] = []
        end_times_s: list[float] = []
        start = time.monotonic()
        deadline = start + duration_s
        while True:
            started = time.perf_counter()
            run(*feeds)
            finished = time.perf_counter()
            end_s = time.monotonic()
            latencies_ms.append((finished - started) * 1000.0)
            end_times_s.append(end_s)
            if end_s >= deadline:
                return len(latencies_ms), end_times_s[-1] - start

    runner_results: list[PerformanceResult] = []

    def runner(duration_s: float) -> tuple[int, float]:
        rule = RunLength(iterations=None, duration_s=duration_s, min_iterations=1,
                         max_duration_s=duration_s * 2)  # fmt: skip
        perf = performance.measure(model, feeds, rule, cpus=[args.cpu])
        runner_results.append(perf)
        return len(perf.batch_latencies_ms), perf.batch_end_times_s[-1] - perf.window_start_s

    loops: dict[str, Callable[[float], tuple[int, float]]] = {
        "bare": bare, "seed": seed, "runner": runner,
    }  # fmt: skip
    rates: dict[str, list[float]] = {name: [] for name in loops}
    cpu_rates: dict[str, list[float]] = {name: [] for name in loops}
    print(f"cpu {args.cpu}, batch {args.batch_size}, {args.rounds} rounds x {args.round_s:g} s")
    print(f"{'round':>5} " + " ".join(
        f"{name + ' /s':>11} {'/cpu-s':>8} {'foreign':>7}" for name in loops))  # fmt: skip
    for number in range(1, args.rounds + 1):
        cells = []
        order = list(loops) if number % 2 else list(reversed(loops))
        measured = {}
        for name in order:
            before = probes.snapshot([args.cpu])
            cpu_before_s = time.process_time()
            calls, seconds = loops[name](args.round_s)
            cpu_s = time.process_time() - cpu_before_s
            window = probes.window([args.cpu], before, probes.snapshot([args.cpu]))
            samples_done = calls * args.batch_size
            measured[name] = (samples_done / seconds, samples_done / cpu_s,
                              window.foreign_busy_fraction)  # fmt: skip
        for name in loops:
            rate, cpu_rate, foreign = measured[name]
            rates[name].append(rate)
            cpu_rates[name].append(cpu_rate)
            cells.append(f"{rate:>11,.1f} {cpu_rate:>8,.1f} {foreign or 0.0:>7.1%}")
        print(f"{number:>5} " + " ".join(cells))
    for name in loops:
        print(
            f"{name:>7}: median {statistics.median(rates[name]):,.1f} samples/s wall, "
            f"{statistics.median(cpu_rates[name]):,.1f} per CPU-second"
        )
    for label, table in (("wall-clock", rates), ("per CPU-second", cpu_rates)):
        for new, old in (("runner", "seed"), ("runner", "bare"), ("seed", "bare")):
            ratios = [a / b for a, b in zip(table[new], table[old], strict=True)]
            ratio = statistics.median(ratios)
            mark = ""
            if (new, old) == ("runner", "seed"):
                mark = f" (target >= {TARGET_RATIO}) {'PASS' if ratio >= TARGET_RATIO else 'BELOW'}"
            print(
                f"{new}/{old} throughput, {label}: median ratio {ratio:.4f} "
                f"(rounds {min(ratios):.4f}..{max(ratios):.4f}){mark}"
            )
    noop_costs(model, feeds, runner_results, args.noop_calls, bare, seed)
    worker_side(samples, runner_results, args.batch_size)
    return 0


def noop_costs(
    model: object,
    feeds: list,
    perfs: list[PerformanceResult],
    calls: int,
    bare: Callable[..., tuple[int, float]],
    seed: Callable[..., tuple[int, float]],
) -> None:
    """Each loop around a call that returns at once: ns of bookkeeping per call."""
    from service.runner import performance
    from service.runner.runlength import RunLength

    def noop(*_: object) -> None:
        return None

    noop_model = type("Noop", (), {"run": staticmethod(noop), "timed_run": staticmethod(noop)})()
    costs_ns = {}
    for name in ("bare", "seed", "runner"):
        best = float("inf")
        for _ in range(3):  # the quickest of three: the least disturbed
            if name == "runner":
                rule = RunLength(iterations=calls, duration_s=1.0)
                perf = performance.measure(noop_model, feeds, rule, cpus=None)  # type: ignore[arg-type]
                done, seconds = (
                    len(perf.batch_latencies_ms),
                    perf.batch_end_times_s[-1] - perf.window_start_s,
                )
            else:
                started = time.perf_counter()
                done, seconds = (bare if name == "bare" else seed)(calls * 1e-7, noop)
                # time-bounded loops: count what they did in their own time
                seconds = time.perf_counter() - started
            best = min(best, seconds / done * 1e9)
        costs_ns[name] = best
    call_ms = statistics.median(statistics.median(p.batch_latencies_ms) for p in perfs)
    for name, cost in costs_ns.items():
        print(f"loop around a no-op call, {name:>6}: {cost:7.0f} ns per call")
    for new, old in (("runner", "seed"), ("runner", "bare")):
        extra_ns = costs_ns[new] - costs_ns[old]
        share = extra_ns / (call_ms * 1e6)
        print(
            f"{new} - {old}: {extra_ns:+.0f} ns per call = {share:+.3%} of a median call of "
            f"{call_ms * 1000:.0f} us"
            + (f" (target <= 1%) {'PASS' if share <= 0.01 else 'ABOVE'}" if old == "seed" else "")
        )


def worker_side(samples: Path, perfs: list[PerformanceResult], batch_size: int) -> None:
    """Wall time of the worker's own bookkeeping for one request / one step."""
    from service.engine.signoff import SignOff
    from service.figures import aggregate

    config = RunnerConfig(
        id="overhead",
        models={
            role: RunnerModel(path=str(samples / name), precision="fp32", format="frozen_pb")
            for role, name in (("input_model", "fp32.pb"), ("optimized_model", "optimized_fp32.pb"))
        },
        batch_size=batch_size,
        warmup=0,
        duration_s=1.0,
    )
    started = time.perf_counter()
    asyncio.run(SignOff.collect(config, sorted(os.sched_getaffinity(0))))
    collect_ms = (time.perf_counter() - started) * 1000
    result = RunnerResult(
        model="input_model", mode="performance", instance=0, pid=os.getpid(),
        cpus_planned=[0], performance=perfs[-1],
    )  # fmt: skip
    started = time.perf_counter()
    figures = aggregate.summarize_performance([result], batch_size)
    stats_ms = (time.perf_counter() - started) * 1000
    print(
        f"worker side: machine facts + model hashes {collect_ms:.1f} ms per request; "
        f"step statistics on {figures['latency_samples']:,} batches {stats_ms:.1f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())

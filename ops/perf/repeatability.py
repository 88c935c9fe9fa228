"""Repeatability: the same request N times; how much do throughput and p99 move between runs?

    .venv/bin/python ops/perf/repeatability.py [--runs 5] [--duration-s 5] [--samples DIR]

Each run is a fresh ``benchmark-worker bench`` of the sample fp32 model (performance only, the
default plan: as many instances as fit), so every run pays its own process start, model load
and warmup, as a user's repeated request would. Prints each run's figures, then the
coefficient of variation (sample std / mean) across runs of throughput (target <= 3%) and p99,
beside the mean within-run 95% interval half-width: between-run spread larger than the
within-run interval means run-to-run effects (placement, frequency, neighbours) dominate.
Runs the verdict flagged (e.g. other processes on our CPUs) are listed, and the CVs are also
given over the valid runs alone. On a shared machine, ``--quiet-wait-s S`` waits (up to S
seconds) before each run until the CPUs have been nearly idle for two seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.perf._common import sample_models, worker_bench

TARGET_THROUGHPUT_CV = 0.03


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else 0.0


def figures(data: dict[str, Any]) -> dict[str, Any]:
    step = data["execution_details"]["input_model_benchmark"]["performance"]
    low, high = step.get("throughput_ci95") or (float("nan"), float("nan"))
    throughput = step["throughput_samples_per_s"]
    foreign = [
        (i["cpu_window"] or {}).get("foreign_busy_fraction") or 0.0 for i in step["per_instance"]
    ]
    return {
        "throughput": throughput,
        "ci_half": (high - low) / 2 / throughput,
        "p99": step["latency_ms_p99"],
        "p50": step["latency_ms_p50"],
        "samples": step["latency_samples"],
        "stop": step["stop_reason"],
        "foreign_max": max(foreign),
        "verdict": data["verdict"]["status"],
        "reasons": sorted({r["code"] for r in data["verdict"]["reasons"]}),
        "fingerprint": data["fingerprint"]["id"],
        "instances": step["instances"],
    }


def summary(name: str, runs: list[dict[str, Any]]) -> None:
    if len(runs) < 2:
        print(f"{name}: fewer than 2 runs, no CV")
        return
    through_cv = cv([r["throughput"] for r in runs])
    p99 = [r["p99"] for r in runs if r["p99"] is not None]
    verdict = "PASS" if through_cv <= TARGET_THROUGHPUT_CV else "ABOVE TARGET"
    print(
        f"{name}: throughput CV {through_cv:.2%} (target <= {TARGET_THROUGHPUT_CV:.0%}, "
        f"{verdict}); p99 CV {cv(p99):.2%}; mean within-run throughput 95% CI "
        f"half-width {statistics.fmean(r['ci_half'] for r in runs):.2%}"
    )


def wait_until_quiet(limit_s: float, idle_below: float = 0.05, window_s: float = 2.0) -> float:
    """Wait until every CPU we may use was under ``idle_below`` busy over ``window_s``; the
    busiest CPU's share at the end (``limit_s`` bounds the wait)."""
    from service.runner import probes

    cpus = sorted(os.sched_getaffinity(0))
    deadline = time.monotonic() + limit_s
    while True:
        before = probes.snapshot(cpus)
        time.sleep(window_s)
        window = probes.window(cpus, before, probes.snapshot(cpus))
        busiest = max(window.cpu_busy_fraction.values(), default=0.0)
        if busiest < idle_below or time.monotonic() >= deadline:
            return busiest


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--samples", type=Path, default=None)
    parser.add_argument("--quiet-wait-s", type=float, default=0.0)
    parser.add_argument("--instances", type=int, default=None, help="default: as many as fit")
    args = parser.parse_args()
    samples = sample_models(args.samples)
    settings = {
        "batch_size": args.batch_size,
        "duration_s": args.duration_s,
        "max_duration_s": args.duration_s * 4,
        "warmup_s": 1.0,
    }
    if args.instances is not None:
        settings.update(instances=args.instances, cores_per_instance=1)
    runs = []
    print(f"{'run':>3} {'inst':>4} {'samples/s':>10} {'±CI95':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'n':>7} {'foreign':>7}  verdict")  # fmt: skip
    for number in range(1, args.runs + 1):
        if args.quiet_wait_s > 0:
            busiest = wait_until_quiet(args.quiet_wait_s)
            print(f"    (before run {number}: busiest CPU {busiest:.0%} over 2 s)")
        run = figures(worker_bench(samples, settings))
        runs.append(run)
        print(
            f"{number:>3} {run['instances']:>4} {run['throughput']:>10,.1f} "
            f"{run['ci_half']:>7.2%} {run['p50']:>7.4f} {run['p99'] or float('nan'):>7.4f} "
            f"{run['samples']:>7} {run['foreign_max']:>7.1%}  {run['verdict']} "
            f"{','.join(run['reasons'])}"
        )
    fingerprints = {r["fingerprint"] for r in runs}
    same = "same" if len(fingerprints) == 1 else "DIFFER"
    print(f"fingerprint ids: {sorted(fingerprints)} ({same})")
    summary(f"all {len(runs)} runs", runs)
    valid = [r for r in runs if r["verdict"] == "valid"]
    if len(valid) != len(runs):
        summary(f"{len(valid)} valid runs", valid)
    return 0


if __name__ == "__main__":
    sys.exit(main())

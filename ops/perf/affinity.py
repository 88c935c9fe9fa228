"""Affinity value: the same 2 x 1-core run pinned (one CPU each) and unpinned, side by side.

    .venv/bin/python ops/perf/affinity.py [--rounds 3] [--duration-s 5] [--samples DIR]

Both runs use the worker's own executor and aggregation; they differ only in the CPUs each
runner may use: pinned ``--cpus 0`` / ``--cpus 1``, unpinned ``--cpus 0-1`` for both (one
intra-op thread each in both cases). Prints the throughput ratio and the p99 latency ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.perf._common import sample_models
from service.executor.launch import InstanceLaunch, run_instances, runner_argv
from service.figures.aggregate import summarize_performance
from service.logs import configure_logging
from service.runner.protocol import RunnerConfig, RunnerModel


async def run_pair(samples: Path, cpus: list[list[int]], duration_s: float) -> dict[str, float]:
    """Two synchronised instances on the given CPU sets; aggregate throughput and p99."""
    directory = Path(tempfile.mkdtemp(prefix="perf-affinity-"))
    config = RunnerConfig(
        id="affinity",
        models={
            "input_model": RunnerModel(
                path=str(samples / "fp32.pb"), precision="fp32", format="frozen_pb"
            )
        },
        batch_size=1,
        warmup=200,
        duration_s=duration_s,
        max_duration_s=duration_s * 2,
    )
    config_path = directory / "config.yaml"
    config.write(config_path)
    sync_dir = directory / "sync"
    sync_dir.mkdir()
    launches = []
    for index, instance_cpus in enumerate(cpus):
        result_path = directory / f"result_{index}.json"
        argv = runner_argv(
            config_path, "input_model", "performance", index, instance_cpus, result_path, sync_dir
        )
        launches.append(
            InstanceLaunch(
                index=index,
                cpus=tuple(instance_cpus),
                argv=(*argv, "--threads", "1"),
                log_path=directory / f"log_{index}.txt",
                result_path=result_path,
            )
        )
    results = await run_instances(launches, sync_dir)
    figures = summarize_performance(results, batch_size=1)
    return {
        "throughput": figures["throughput_samples_per_s"],
        "p99_ms": figures["latency_ms_p99"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--samples", type=Path, default=None)
    args = parser.parse_args()
    configure_logging("warning")
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        print("needs two CPUs", file=sys.stderr)
        return 1
    samples = sample_models(args.samples)
    pinned_runs, unpinned_runs = [], []
    for round_number in range(1, args.rounds + 1):
        pinned = asyncio.run(run_pair(samples, [[cpus[0]], [cpus[1]]], args.duration_s))
        unpinned = asyncio.run(run_pair(samples, [cpus, cpus], args.duration_s))
        pinned_runs.append(pinned)
        unpinned_runs.append(unpinned)
        print(
            f"round {round_number}: pinned {pinned['throughput']:,.0f}/s p99 "
            f"{pinned['p99_ms']:.3f} ms; unpinned {unpinned['throughput']:,.0f}/s p99 "
            f"{unpinned['p99_ms']:.3f} ms"
        )
    throughput_ratio = statistics.median(
        p["throughput"] / u["throughput"] for p, u in zip(pinned_runs, unpinned_runs, strict=True)
    )
    p99_ratio = statistics.median(
        p["p99_ms"] / u["p99_ms"] for p, u in zip(pinned_runs, unpinned_runs, strict=True)
    )
    print(f"pinned/unpinned throughput ratio (median of {args.rounds}): {throughput_ratio:.3f}")
    print(f"pinned/unpinned p99 latency ratio (median of {args.rounds}): {p99_ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Do warm runners measure what fresh processes measure? Side by side, alternating rounds.

    .venv/bin/python ops/perf/warm_vs_fresh.py [--rounds 4] [--duration-s 3] [--samples DIR]

Each round measures the sample fp32 model (2 instances x 1 core, batch 32, the worker's own
executor and aggregation) in fresh processes and in warm runners that have just run the int8
model (so a warm measurement always follows another model in the same process), in
alternating order. A second comparison checks the order effect inside warm runners: fp32
measured after int8 versus int8 measured after fp32, against each model's fresh figure.
Prints the median throughput ratios warm/fresh and the p99 ratios, beside the fresh runs'
own round-to-round spread.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.perf._common import sample_models
from service.config import Settings
from service.executor.launch import (
    InstanceLaunch,
    make_pool,
    run_instances,
    run_warm_instances,
    runner_argv,
)
from service.executor.warm_pool import WarmPool
from service.figures.aggregate import summarize_performance
from service.logs import configure_logging
from service.runner.protocol import RunnerConfig, RunnerModel

BATCH = 32


def launches(samples: Path, role: str, name: str) -> tuple[list[InstanceLaunch], Path]:
    directory = Path(tempfile.mkdtemp(prefix=f"perf-warm-{name}-"))
    models = {
        "input_model": RunnerModel(path=str(samples / "fp32.pb"), precision="fp32",
                                   format="frozen_pb"),
        "optimized_model": RunnerModel(path=str(samples / "int8.pb"), precision="int8",
                                       format="frozen_pb"),
    }  # fmt: skip
    config = RunnerConfig(id="warm", models=models, batch_size=BATCH, warmup=50, warmup_s=0.5,
                          duration_s=DURATION_S, min_iterations=1, max_duration_s=DURATION_S * 2,
                          onednn=True)  # fmt: skip
    config.write(directory / "config.yaml")
    sync = directory / "sync"
    sync.mkdir()
    out = []
    for index in (0, 1):
        result = directory / f"result_{index}.json"
        argv = runner_argv(directory / "config.yaml", role, "performance", index, [index],
                           result, sync)  # fmt: skip
        out.append(InstanceLaunch(index, (index,), argv, directory / f"log_{index}.txt", result))
    return out, sync


async def measure(samples: Path, role: str, pool: WarmPool | None) -> tuple[float, float]:
    steps, sync = launches(samples, role, "warm" if pool else "fresh")
    if pool is None:
        results = await run_instances(steps, sync)
    else:
        results = await run_warm_instances(steps, sync, pool, True)
    figures = summarize_performance(results, BATCH)
    return figures["throughput_samples_per_s"], figures["latency_ms_p99"] or float("nan")


async def rounds(samples: Path, count: int) -> dict[str, list[tuple[float, float]]]:
    pool = make_pool(Settings(), 2)
    assert pool is not None
    seen: dict[str, list[tuple[float, float]]] = {}
    try:
        for number in range(count):
            await measure(samples, "optimized_model", pool)  # the warm runner ran int8 last
            order = ["fresh", "warm"] if number % 2 == 0 else ["warm", "fresh"]
            for kind in order:
                figure = await measure(samples, "input_model", pool if kind == "warm" else None)
                seen.setdefault(f"fp32 {kind}", []).append(figure)
            seen.setdefault("int8 fresh", []).append(
                await measure(samples, "optimized_model", None)
            )
            seen.setdefault("int8 warm after fp32", []).append(
                await measure(samples, "optimized_model", pool)
            )
            print(f"round {number + 1}: " + ", ".join(
                f"{k} {v[-1][0]:,.0f}/s p99 {v[-1][1]:.3f} ms" for k, v in seen.items()
            ), flush=True)  # fmt: skip
    finally:
        await pool.close()
    return seen


def ratio(seen: dict[str, list[tuple[float, float]]], a: str, b: str, index: int) -> float:
    return statistics.median(x[index] / y[index] for x, y in zip(seen[a], seen[b], strict=True))


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def main() -> int:
    global DURATION_S
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--samples", type=Path, default=None)
    args = parser.parse_args()
    DURATION_S = args.duration_s
    configure_logging("warning")
    seen = asyncio.run(rounds(sample_models(args.samples), args.rounds))
    fp32 = ratio(seen, "fp32 warm", "fp32 fresh", 0), ratio(seen, "fp32 warm", "fp32 fresh", 1)
    print(f"fp32 warm/fresh throughput (median of {args.rounds}): {fp32[0]:.3f}; p99 {fp32[1]:.3f}")
    print(f"int8 warm (after fp32)/fresh throughput: "
          f"{ratio(seen, 'int8 warm after fp32', 'int8 fresh', 0):.3f}; p99 "
          f"{ratio(seen, 'int8 warm after fp32', 'int8 fresh', 1):.3f}")  # fmt: skip
    for name in ("fp32 fresh", "int8 fresh"):
        print(f"{name} round-to-round spread: throughput {spread([t for t, _ in seen[name]]):.1%}, "
              f"p99 {spread([p for _, p in seen[name]]):.1%}")  # fmt: skip
    return 0


DURATION_S = 3.0

if __name__ == "__main__":
    sys.exit(main())

"""The cost of the sweep machinery, side by side in one run.

    .venv/bin/python ops/perf/sweep_overhead.py [--rounds 5] [--duration-s 1] [--samples DIR]

Round after round, alternating, through ``benchmark-worker bench`` on the sample pair
(fp32 and int8, performance only):

* ``plain``: the request as it is;
* ``sweep1``: the same request with a 1-point sweep (``batch_sizes: [its batch size]``): the
  sweep table is built, nothing more is measured. Target: wall time and the main point's
  throughput equal to ``plain`` within noise;
* ``sweep2``: a 2-point sweep (batch 1 and 8), against ``plain`` + the same request at batch
  8 run on its own: what one request of two points saves over two requests (start-up,
  pre-flight, machine facts and hashing are paid once).

Printed: medians over rounds of each variant's wall time and main throughput, and the
medians of the per-round ratios (rounds alternate, so drift hits every variant alike).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.perf._common import sample_models, worker_bench

PAIR = ("int8.pb", "int8")


def timed(samples: Path, benchmark: dict[str, Any]) -> tuple[float, float]:
    """(wall s, the input model's throughput) of one bench run."""
    started = time.monotonic()
    data = worker_bench(samples, benchmark, optimized=PAIR)
    return time.monotonic() - started, float(data["perf_throughput_input_model"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration-s", type=float, default=1.0)
    parser.add_argument("--samples", type=Path, default=None)
    args = parser.parse_args()
    samples = sample_models(args.samples)
    base = {"duration_s": args.duration_s, "min_iterations": 50, "warmup": 10,
            "instances": 1, "cores_per_instance": 2}  # fmt: skip
    variants = {
        "plain": base,
        "sweep1": {**base, "sweep": {"batch_sizes": [1]}},
        "sweep2": {**base, "sweep": {"batch_sizes": [1, 8]}},
        "batch8": {**base, "batch_size": 8},
    }
    walls: dict[str, list[float]] = {name: [] for name in variants}
    throughputs: dict[str, list[float]] = {name: [] for name in variants}
    for number in range(args.rounds):
        names = list(variants) if number % 2 == 0 else list(reversed(variants))
        for name in names:
            wall_s, throughput = timed(samples, variants[name])
            walls[name].append(wall_s)
            throughputs[name].append(throughput)
        print(f"round {number + 1}: " + ", ".join(
            f"{n} {walls[n][-1]:.2f} s {throughputs[n][-1]:,.0f}/s" for n in variants),
            flush=True)  # fmt: skip

    print("\nvariant   wall s (median)   input samples/s (median)")
    for name in variants:
        print(f"{name:8} {statistics.median(walls[name]):10.2f} "
              f"{statistics.median(throughputs[name]):18.1f}")  # fmt: skip
    rounds = range(args.rounds)
    one = statistics.median(walls["sweep1"][i] / walls["plain"][i] for i in rounds)
    one_tp = statistics.median(throughputs["sweep1"][i] / throughputs["plain"][i] for i in rounds)
    two = statistics.median(
        walls["sweep2"][i] / (walls["plain"][i] + walls["batch8"][i]) for i in rounds
    )
    print(f"\n1-point sweep / plain, wall time:        {one:.3f}  (target: 1 within noise)")
    print(f"1-point sweep / plain, main throughput:  {one_tp:.3f}  (target: 1 within noise)")
    print(f"2-point sweep / two separate requests:   {two:.3f}  (below 1: the sweep saves set-up)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

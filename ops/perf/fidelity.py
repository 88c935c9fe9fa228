"""Fidelity: the worker's throughput against bare pinned TensorFlow loops, side by side.

    .venv/bin/python ops/perf/fidelity.py [--rounds 3] [--duration-s 5] [--samples DIR]

Rounds alternate worker and bare runs (ABAB) so drift on a noisy machine hits both; the
ratios printed are medians over rounds. Targets (issue 3): 1x1 >= 0.97, 2x1 >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.perf._common import bare_loops, median_ratio, sample_models, worker_bench

TARGET_1X1 = 0.97
TARGET_2X1 = 0.95


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--samples", type=Path, default=None)
    args = parser.parse_args()
    samples = sample_models(args.samples)
    model = samples / "fp32.pb"
    two_cpus = sorted(os.sched_getaffinity(0))[:2]
    settings = {
        "batch_size": args.batch_size,
        "duration_s": args.duration_s,
        "max_duration_s": args.duration_s * 2,
    }
    one, two = [], []
    for round_number in range(1, args.rounds + 1):
        worker_1 = worker_bench(samples, {**settings, "instances": 1, "cores_per_instance": 1})
        bare_1 = bare_loops(model, two_cpus[:1], args.batch_size, args.duration_s)[0]
        one.append((worker_1["perf_throughput_input_model"], bare_1))
        if len(two_cpus) == 2:
            worker_2 = worker_bench(samples, {**settings, "instances": 2, "cores_per_instance": 1})
            bare_2 = sum(bare_loops(model, two_cpus, args.batch_size, args.duration_s))
            two.append((worker_2["perf_throughput_input_model"], bare_2))
        print(
            f"round {round_number}: 1x1 worker {one[-1][0]:,.0f} vs bare {one[-1][1]:,.0f}/s"
            + (f"; 2x1 worker {two[-1][0]:,.0f} vs bare {two[-1][1]:,.0f}/s" if two else "")
        )
    ratio_1 = median_ratio(one)
    print(
        f"1x1 worker/bare throughput ratio (median of {len(one)}): {ratio_1:.3f} "
        f"(target >= {TARGET_1X1}) {'PASS' if ratio_1 >= TARGET_1X1 else 'BELOW TARGET'}"
    )
    if two:
        ratio_2 = median_ratio(two)
        print(
            f"2x1 worker/bare throughput ratio (median of {len(two)}): {ratio_2:.3f} "
            f"(target >= {TARGET_2X1}) {'PASS' if ratio_2 >= TARGET_2X1 else 'BELOW TARGET'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

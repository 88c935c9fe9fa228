"""One real model in each format: load time, first call, peak memory and throughput, side by side.

    .venv/bin/python ops/perf/formats.py [--rounds 2] [--duration-s 3] [--batch-sizes 1,8]

keras.applications MobileNetV2 (random weights, 224x224x3) is written once as a SavedModel
(``model.export``), a ``.keras`` file and a frozen ``.pb``. Each round runs every (format,
batch size) through the worker's own runner (one instance on the first two CPUs) in a rotated
order; the SavedModel and Keras rows run twice: ``cold`` freezes in the runner (no freeze
cache), ``cached`` reads the frozen graph the cold run stored (what every runner after the
pre-flight check does). Prints one row per run, then medians per row and each format's
throughput relative to the frozen graph at the same batch size (1.00 = the same graph).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from service.cpulist import format_cpu_list
from service.executor.launch import InstanceLaunch, run_instances, runner_argv
from service.figures.aggregate import summarize_performance
from service.figures.fingerprint import hash_path
from service.logs import configure_logging
from service.runner.protocol import RunnerConfig, RunnerModel

_MAKE_MODELS = r"""
import sys
from pathlib import Path
import keras
from service.runner.loading import freeze_keras_model
out = Path(sys.argv[1])
model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
model.export(str(out / "saved_model"), verbose=False)
model.save(out / "model.keras")
frozen = freeze_keras_model(model, "MobileNetV2")
(out / "model.pb").write_bytes(frozen.graph_def.SerializeToString())
"""

FORMATS = {"frozen_pb": "model.pb", "saved_model": "saved_model", "keras": "model.keras"}


def make_models(directory: Path) -> None:
    subprocess.run([sys.executable, "-c", _MAKE_MODELS, str(directory)], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                   cwd=Path(__file__).resolve().parents[2])  # fmt: skip


async def run_one(
    models: Path, fmt: str, batch_size: int, duration_s: float, cache: Path | None, cpus: list[int]
) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="perf-formats-"))
    path = models / FORMATS[fmt]
    config = RunnerConfig(
        id="formats",
        models={"input_model": RunnerModel(
            path=str(path), precision="fp32", format=fmt,  # type: ignore[arg-type]
            sha256=None if fmt == "frozen_pb" else hash_path(path)["sha256"],
        )},
        batch_size=batch_size,
        warmup=5,
        warmup_s=0.5,
        duration_s=duration_s,
        min_iterations=1,
        max_duration_s=duration_s * 2,
        freeze_cache_dir=None if cache is None else str(cache),
    )  # fmt: skip
    config.write(directory / "config.yaml")
    result_path = directory / "result.json"
    argv = runner_argv(
        directory / "config.yaml", "input_model", "performance", 0, cpus, result_path, None
    )
    launch = InstanceLaunch(0, tuple(cpus), argv, directory / "log.txt", result_path)
    (result,) = await run_instances([launch], None)
    figures = summarize_performance([result], batch_size)
    shutil.rmtree(directory, ignore_errors=True)
    return {
        "load_s": result.load_time_s,
        "first_call_s": result.first_inference_s,
        "peak_rss_mb": (result.peak_rss_bytes or 0) / 2**20,
        "throughput": figures["throughput_samples_per_s"],
        "cache": result.freeze_cache or "-",
    }


def rows_of_round(batch_sizes: list[int], round_number: int) -> list[tuple[str, int, str]]:
    """(format, batch, cold|cached|-) in a rotated order: no format always goes first."""
    rows = []
    for fmt in FORMATS:
        kinds = ["-"] if fmt == "frozen_pb" else ["cold", "cached"]
        rows += [(fmt, batch, kind) for batch in batch_sizes for kind in kinds]
    shift = round_number % len(FORMATS)
    order = list(FORMATS)[shift:] + list(FORMATS)[:shift]
    return sorted(rows, key=lambda row: (row[1], order.index(row[0]), row[2] == "cached"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--batch-sizes", default="1,8")
    args = parser.parse_args()
    configure_logging("warning")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    cpus = sorted(os.sched_getaffinity(0))[:2]
    work = Path(tempfile.mkdtemp(prefix="perf-formats-models-"))
    make_models(work)
    print(f"MobileNetV2 (weights=None) on cpus {format_cpu_list(cpus)}; {args.rounds} rounds, "
          f"{args.duration_s:g} s windows")  # fmt: skip
    print(f"{'round':>5} {'format':<12} {'batch':>5} {'cache':<6} {'load s':>7} "
          f"{'1st call s':>10} {'peak MB':>8} {'samples/s':>10}")  # fmt: skip
    seen: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for round_number in range(1, args.rounds + 1):
        cache = work / f"cache{round_number}"  # cold in every round: a fresh directory
        for fmt, batch, kind in rows_of_round(batch_sizes, round_number):
            use = None if kind == "-" else cache
            if kind == "cold":
                shutil.rmtree(cache, ignore_errors=True)
            row = asyncio.run(run_one(work, fmt, batch, args.duration_s, use, cpus))
            seen.setdefault((fmt, batch, kind), []).append(row)
            print(f"{round_number:>5} {fmt:<12} {batch:>5} {row['cache']:<6} "
                  f"{row['load_s']:>7.2f} {row['first_call_s']:>10.3f} "
                  f"{row['peak_rss_mb']:>8.0f} {row['throughput']:>10.1f}", flush=True)  # fmt: skip
    print("\nmedians (throughput relative to the frozen graph at the same batch size)")
    for (fmt, batch, kind), rows in sorted(seen.items(), key=lambda item: (item[0][1], item[0])):
        median = {key: statistics.median(r[key] for r in rows) for key in
                  ("load_s", "first_call_s", "peak_rss_mb", "throughput")}  # fmt: skip
        base = statistics.median(r["throughput"] for r in seen[("frozen_pb", batch, "-")])
        ratio = median["throughput"] / base
        print(f"{fmt:<12} batch {batch:>2} {kind:<6} load {median['load_s']:6.2f} s, first call "
              f"{median['first_call_s']:.3f} s, peak {median['peak_rss_mb']:5.0f} MB, "
              f"{median['throughput']:8.1f} samples/s (x{ratio:.3f})")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

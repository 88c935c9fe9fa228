"""fp32 against INC int8, with oneDNN on and off, side by side in one run.

    .venv/bin/python ops/perf/onednn.py [--rounds 2] [--duration-s 3] [--samples DIR]

Every figure comes from the worker itself (``benchmark-worker bench``, default plan: one
instance per core). For each batch size (1 and 32) and round, in alternating order:

* ``onednn: on``: fp32.pb and int8.pb in one request (the worker's speedup and its 95%
  bootstrap interval compare them under one setting);
* ``onednn: off``: fp32.pb alone (int8 cannot run without oneDNN: the worker refuses it at
  ``prepare``, which this script checks too).

Printed: throughput with its 95% interval per (batch, setting, model); int8/fp32 under oneDNN
on (the worker's interval); fp32 on/off (interval from the two throughput intervals, their
extreme ratios: conservative). Medians over rounds where there are several.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.perf._common import sample_models, worker_bench

BATCH_SIZES = (1, 32)


def run_on(samples: Path, settings: dict[str, Any]) -> dict[str, Any]:
    data = worker_bench(samples, {**settings, "onednn": "on"}, optimized=("int8.pb", "int8"))
    details = data["execution_details"]
    return {
        "fp32": _figures(details["input_model_benchmark"]["performance"]),
        "int8": _figures(details["optimized_model_benchmark"]["performance"]),
        "speedup": data["speedup"],
        "speedup_ci95": data.get("speedup_ci95"),
        "fingerprint": data["fingerprint"]["id"],
        "verdict": data["verdict"]["status"],
    }


def run_off(samples: Path, settings: dict[str, Any]) -> dict[str, Any]:
    data = worker_bench(samples, {**settings, "onednn": "off"})
    step = data["execution_details"]["input_model_benchmark"]["performance"]
    assert step["onednn"]["tensorflow_reports"] == "off", step["onednn"]
    return {
        "fp32": _figures(step),
        "fingerprint": data["fingerprint"]["id"],
        "verdict": data["verdict"]["status"],
    }


def int8_refused_without_onednn(samples: Path, settings: dict[str, Any]) -> str:
    try:
        worker_bench(samples, {**settings, "onednn": "off"}, optimized=("int8.pb", "int8"))
    except RuntimeError as exc:
        return str(exc)
    raise AssertionError("the worker ran an int8 graph with oneDNN off")


def _figures(step: dict[str, Any]) -> dict[str, Any]:
    return {
        "throughput": step["throughput_samples_per_s"],
        "ci95": step.get("throughput_ci95"),
        "p50_ms": step.get("latency_ms_p50"),
        "onednn": step["onednn"]["tensorflow_reports"],
    }


def _ratio_bounds(top: list[float] | None, bottom: list[float] | None) -> list[float] | None:
    """The extreme ratios of two intervals: a conservative interval of top / bottom."""
    if not top or not bottom:
        return None
    return [top[0] / bottom[1], top[1] / bottom[0]]


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _interval(pairs: list[list[float] | None], spec: str = ",.2f") -> str:
    """Median lower .. median upper bound over rounds."""
    known = [pair for pair in pairs if pair]
    if not known:
        return "n/a"
    low, high = _median([p[0] for p in known]), _median([p[1] for p in known])
    return f"{low:{spec}} .. {high:{spec}}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--samples", type=Path, default=None)
    args = parser.parse_args()
    samples = sample_models(args.samples)
    if not (samples / "int8.pb").is_file():
        print(f"no int8.pb in {samples}: install INC (ops/setup.sh) and make the samples again")
        return 1
    results: dict[int, dict[str, list[dict[str, Any]]]] = {
        batch: {"on": [], "off": []} for batch in BATCH_SIZES
    }
    for round_number in range(args.rounds):
        for batch in BATCH_SIZES:
            settings = {
                "batch_size": batch,
                "duration_s": args.duration_s,
                "min_iterations": 200,
                "max_duration_s": args.duration_s * 4,
            }
            order = ("on", "off") if round_number % 2 == 0 else ("off", "on")
            for setting in order:
                run = run_on if setting == "on" else run_off
                results[batch][setting].append(run(samples, settings))
            print(f"round {round_number + 1}, batch {batch}: done ({' then '.join(order)})")
    refusal = int8_refused_without_onednn(samples, {"batch_size": 1, "iterations": 10})
    print()
    print("| batch | oneDNN | model | throughput (samples/s) | 95% interval | p50 (ms) |")
    print("|---:|---|---|---:|---|---:|")
    for batch in BATCH_SIZES:
        for setting, models in (("on", ("fp32", "int8")), ("off", ("fp32",))):
            runs = results[batch][setting]
            for model in models:
                figures = [run[model] for run in runs]
                print(
                    f"| {batch} | {setting} | {model} | "
                    f"{_median([f['throughput'] for f in figures]):,.0f} | "
                    f"{_interval([f['ci95'] for f in figures], ',.0f')} | "
                    f"{_median([f['p50_ms'] for f in figures]):.3f} |"
                )
    print()
    print("| batch | int8 / fp32 (oneDNN on) | 95% interval | fp32 on / off | interval |")
    print("|---:|---:|---|---:|---|")
    for batch in BATCH_SIZES:
        on, off = results[batch]["on"], results[batch]["off"]
        pairs = list(zip(on, off, strict=True))
        gains = [a["fp32"]["throughput"] / b["fp32"]["throughput"] for a, b in pairs]
        bounds = [_ratio_bounds(a["fp32"]["ci95"], b["fp32"]["ci95"]) for a, b in pairs]
        print(
            f"| {batch} | ×{_median([r['speedup'] for r in on]):.2f} | "
            f"{_interval([r['speedup_ci95'] for r in on])} | "
            f"×{_median(gains):.2f} | {_interval(bounds)} |"
        )
    fingerprints = {
        setting: sorted({r["fingerprint"] for b in BATCH_SIZES for r in results[b][setting]})
        for setting in ("on", "off")
    }
    verdicts = sorted({r["verdict"] for b in BATCH_SIZES for s in ("on", "off")
                       for r in results[b][s]})  # fmt: skip
    print()
    print(f"fingerprint ids: on {fingerprints['on']}, off {fingerprints['off']}")
    print(f"verdicts: {verdicts}")
    print(f"int8 with oneDNN off: refused ({refusal[:160]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whether a step's figures can be signed: ``valid`` or ``invalid``, with reasons.

Pure functions over the figures :mod:`service.figures.aggregate` produces (plain dicts, as
published).
A *reason* makes the result invalid: the figure is wrong or not comparable (too few samples,
foreign CPU load, steal, throttling, a pinning mismatch, steps run under different runtime
settings). A *warning* is worth knowing but does not: latency spread and wide intervals are
the natural spread of short calls, not wrong numbers. Each is
``{"code", "message"}`` (plus ``step`` in the overall verdict). Thresholds are module
constants, published with the verdict and documented in the README.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from service.cpulist import format_cpu_list
from service.engine import window_plan
from service.runner.runlength import RunLength

VALID, INVALID = "valid", "invalid"

# Percentiles a performance step must back with enough samples; p99.9 is reported when it can
# be and only warned about when it cannot.
REQUIRED_PERCENTILES = (50.0, 90.0, 99.0)
SPREAD_LARGE = 0.25  # latency IQR/median: PyTorch's "significant environmental influence"
SPREAD_WARNING = 0.10  # PyTorch's "system fluctuation"
FOREIGN_BUSY_INVALID = 0.10  # other processes' share of our CPUs, beyond the tick resolution
FOREIGN_BUSY_WARNING = 0.03
STEAL_INVALID = 0.10  # hypervisor steal on our CPUs, beyond the tick resolution
CI_WIDTH_WARNING = 0.05  # throughput 95% interval half-width relative to the estimate

THRESHOLDS = {
    "required_percentiles": list(REQUIRED_PERCENTILES),
    "latency_iqr_over_median_large_warning": SPREAD_LARGE,
    "latency_iqr_over_median_warning": SPREAD_WARNING,
    "foreign_busy_fraction_invalid": FOREIGN_BUSY_INVALID,
    "foreign_busy_fraction_warning": FOREIGN_BUSY_WARNING,
    "steal_fraction_invalid": STEAL_INVALID,
    "throughput_ci95_half_width_warning": CI_WIDTH_WARNING,
}

Item = dict[str, Any]


def _item(code: str, message: str, **facts: Any) -> Item:
    return {"code": code, "message": message, **facts}


def _verdict(reasons: list[Item], warnings: list[Item]) -> dict[str, Any]:
    return {"status": INVALID if reasons else VALID, "reasons": reasons, "warnings": warnings}


def _pct_name(pct: float) -> str:
    return f"p{pct:g}"


def performance_verdict(
    figures: Mapping[str, Any], pinning_mismatches: Sequence[str] = ()
) -> dict[str, Any]:
    """The verdict of one performance step."""
    reasons: list[Item] = []
    warnings: list[Item] = []
    _check_samples(figures, reasons, warnings)
    _check_stop(figures, reasons, warnings)
    _check_spread(figures, warnings)
    for instance in figures.get("per_instance", []):
        _check_cpu_window(instance, reasons, warnings)
        if instance.get("straggler"):
            warnings.append(
                _item(
                    "straggler",
                    f"instance {instance['instance']} ran below 80% of the median instance's "
                    "throughput",
                    instance=instance["instance"],
                )
            )
    reasons += [_item("pinning_mismatch", message) for message in pinning_mismatches]
    _check_scenario(figures.get("scenario"), reasons, warnings)
    return _verdict(reasons, warnings)


def _check_scenario(loadgen: Any, reasons: list[Item], warnings: list[Item]) -> None:
    """A LoadGen scenario's own judgement: an INVALID run is a reason; a run shorter than
    LoadGen's rules ask (600 s) is flagged as not full-length. (An unreachable target is no
    result at all: the step fails, :func:`service.engine.workload._run_step`.)"""
    if not isinstance(loadgen, dict):
        return
    if loadgen.get("status") == "invalid":
        said = "; ".join(str(r) for r in loadgen.get("invalid_reasons") or []) or "no reason given"
        reasons.append(_item("loadgen_invalid", f"MLPerf LoadGen says INVALID: {said}"))
    if loadgen.get("full_length") is False:
        shortened = ", ".join((loadgen.get("rules") or {}).get("shortened") or []) or "its rules"
        warnings.append(_item(
            "not_full_length",
            f"a shortened LoadGen run ({shortened} below LoadGen's defaults): fine to compare "
            "side by side, not a full-length MLPerf result",
        ))  # fmt: skip


def _rule(figures: Mapping[str, Any]) -> tuple[RunLength, set[str]]:
    """The run-length rule the step ran under and the settings the request chose itself.

    Figures without ``run_length`` (built by hand) count as a run whose settings were all
    chosen by the worker, with a capped window a reason (the strictest reading).
    """
    given = figures.get("run_length")
    if not given:
        return RunLength(iterations=None, duration_s=1.0), set()
    rule = RunLength(
        iterations=given.get("iterations"),
        duration_s=given["duration_s"],
        min_iterations=given.get("min_iterations") or 1,
        max_duration_s=given.get("max_duration_s"),
    )
    return rule, set(given.get("chosen") or ())


def _call_s(figures: Mapping[str, Any]) -> float:
    means = [i["latency_ms_mean"] for i in figures.get("per_instance", []) if i.get("iterations")]
    return (max(means) if means else figures.get("latency_ms_mean") or 0.0) / 1000


def _check_samples(figures: Mapping[str, Any], reasons: list[Item], warnings: list[Item]) -> None:
    """A percentile below its floor is not reported. For p50/p90/p99 that makes the step
    invalid, unless the request chose its own run length: then it got what it asked for and
    the percentile is only marked insufficient (a warning). The message names the settings
    that would reach the floor, from the step's own call time."""
    rule, chosen = _rule(figures)
    instances = max(len(figures.get("per_instance", [])), 1)
    call_s = _call_s(figures)
    for entry in figures.get("latency_percentiles", []):
        if entry["status"] != "insufficient":
            continue
        name = _pct_name(entry["percentile"])
        calls = window_plan.calls_needed(entry["min_samples"], instances)
        needed_s = calls * call_s
        message = (
            f"{name} needs at least {entry['min_samples']} batch latencies, the run has "
            f"{entry['samples']}; it is not reported. At {call_s * 1000:.3g} ms per call "
            f"and {instances} instance(s) it needs ~{needed_s:.3g} s of timed window: "
            f"{window_plan.settings_fix(rule, calls, needed_s)}"
        )
        required = entry["percentile"] in REQUIRED_PERCENTILES
        if required and chosen:
            message += f" (the request set {', '.join(sorted(chosen))}, so this is a warning)"
        target = reasons if required and not chosen else warnings
        target.append(
            _item(
                "insufficient_samples",
                message,
                percentile=entry["percentile"],
                samples=entry["samples"],
                min_samples=entry["min_samples"],
                window_needed_s=round(needed_s, 3),
            )
        )


def _check_stop(figures: Mapping[str, Any], reasons: list[Item], warnings: list[Item]) -> None:
    """The cap ended the window before ``min_iterations``. That is a reason only when the
    request asked for those calls (set min_iterations) and left the cap at its default; the
    percentiles' own floors are checked by :func:`_check_samples` either way."""
    rule, chosen = _rule(figures)
    capped = [i for i in figures.get("per_instance", []) if i.get("stop_reason") == "max_duration"]
    if not capped:
        return
    call_s = _call_s(figures)
    needed_s = rule.min_iterations * call_s
    cap = f" ({rule.max_duration_s:g} s)" if rule.max_duration_s is not None else ""
    asked = not figures.get("run_length") or (
        "min_iterations" in chosen and "max_duration_s" not in chosen
    )
    for instance in capped:
        (reasons if asked else warnings).append(
            _item(
                "min_iterations_not_met",
                f"instance {instance['instance']} reached max_duration_s{cap} after "
                f"{instance['iterations']} calls, before min_iterations ({rule.min_iterations}); "
                f"at {call_s * 1000:.3g} ms per call they need ~{needed_s:.3g} s: "
                f"{window_plan.settings_fix(rule, rule.min_iterations, needed_s)}",
                instance=instance["instance"],
                iterations=instance["iterations"],
            )
        )


def _check_spread(figures: Mapping[str, Any], warnings: list[Item]) -> None:
    """Spread and wide intervals are warnings: the natural spread of short calls is not a
    wrong number. The evidence (the ratio, the interval) stays in the item."""
    ratio = figures.get("latency_iqr_over_median")
    if ratio is not None and ratio > SPREAD_WARNING:
        limit = SPREAD_LARGE if ratio > SPREAD_LARGE else SPREAD_WARNING
        note = ": latencies vary a lot from call to call" if limit == SPREAD_LARGE else ""
        warnings.append(
            _item(
                "latency_spread",
                f"latency IQR/median is {ratio:.1%}, above {limit:.0%}{note}",
                value=ratio,
                threshold=limit,
            )
        )
    throughput, ci = figures.get("throughput_samples_per_s"), figures.get("throughput_ci95")
    if throughput and ci:
        half_width = (ci[1] - ci[0]) / 2 / throughput
        if half_width > CI_WIDTH_WARNING:
            warnings.append(
                _item(
                    "wide_interval",
                    f"throughput 95% interval is ±{half_width:.1%} of the estimate",
                    value=round(half_width, 4),
                    threshold=CI_WIDTH_WARNING,
                )
            )


def _check_cpu_window(
    instance: Mapping[str, Any], reasons: list[Item], warnings: list[Item]
) -> None:
    window = instance.get("cpu_window")
    if not window:
        return
    number = instance["instance"]
    cpus = format_cpu_list(window["cpus"])
    what = f"cpu {cpus}" if len(window["cpus"]) == 1 else f"cpus {cpus}"
    resolution = window.get("resolution_fraction") or 0.0
    foreign = window.get("foreign_busy_fraction")
    if foreign is not None and foreign - resolution > FOREIGN_BUSY_WARNING:
        invalid = foreign - resolution > FOREIGN_BUSY_INVALID
        limit = FOREIGN_BUSY_INVALID if invalid else FOREIGN_BUSY_WARNING
        (reasons if invalid else warnings).append(
            _item(
                "foreign_cpu_load",
                f"other processes used {foreign:.0%} of {what} (instance {number}) during the "
                f"timed window (limit {limit:.0%}, measured to ±{resolution:.0%})",
                instance=number,
                cpus=window["cpus"],
                value=round(foreign, 4),
                threshold=limit,
            )
        )
    steal = window.get("steal_fraction")
    if steal is not None and steal - resolution > STEAL_INVALID:
        reasons.append(
            _item(
                "cpu_steal",
                f"the hypervisor took {steal:.0%} of {what} (instance {number}) during the "
                f"timed window (limit {STEAL_INVALID:.0%})",
                instance=number,
                cpus=window["cpus"],
                value=round(steal, 4),
                threshold=STEAL_INVALID,
            )
        )
    throttled = {cpu: n for cpu, n in (window.get("throttle_events") or {}).items() if n > 0}
    if throttled:
        reasons.append(
            _item(
                "throttling",
                f"thermal throttling on cpu {', '.join(map(str, throttled))} (instance "
                f"{number}) during the timed window: {sum(throttled.values())} events",
                instance=number,
                events=throttled,
            )
        )


def accuracy_verdict(
    pinning_mismatches: Sequence[str] = (), figures: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Accuracy does not depend on timing; a pinning mismatch is only worth a warning. Outputs
    that never change, or ties that decided samples, are warnings that name them."""
    warnings = [_item("pinning_mismatch", message) for message in pinning_mismatches]
    figures = figures or {}
    if figures.get("outputs_constant"):
        warnings.append(
            _item(
                "constant_output",
                f"the model gave the same scores to all {figures.get('samples')} samples: it "
                "ignores its input (zero or collapsed weights, a broken quantization); its "
                "accuracy is that of one fixed guess",
            )
        )
    elif figures.get("predicted_classes") == 1 and (figures.get("samples") or 0) > 1:
        warnings.append(
            _item(
                "single_class",
                "the model predicted the same class for every sample of the dataset",
            )
        )
    ties = figures.get("ties_counted_wrong") or 0
    if ties:
        warnings.append(
            _item(
                "tied_scores",
                f"{ties} of {figures.get('samples')} samples had their label's score tied "
                "with another class at the top-k boundary; a tie counts as wrong",
                samples=ties,
            )
        )
    return _verdict([], warnings)


def machine_warnings(fingerprint: Mapping[str, Any]) -> list[Item]:
    """What the machine's fingerprint says about frequency control."""
    frequency = fingerprint.get("frequency", {})
    governors = frequency.get("governors") or []
    out: list[Item] = []
    if not governors:
        out.append(
            _item(
                "frequency_not_visible",
                "the CPU frequency and governor are not visible here (no cpufreq in sysfs); "
                "throttling cannot be checked",
            )
        )
    elif any(governor != "performance" for governor in governors):
        out.append(
            _item(
                "governor",
                f"CPU frequency governor is {', '.join(governors)}, not performance: the "
                "clock may change during a run",
                governors=governors,
            )
        )
    return out


def overall(
    execution_details: Mapping[str, Mapping[str, Mapping[str, Any]]],
    extra_warnings: Iterable[Item] = (),
) -> dict[str, Any]:
    """Every step's verdict in one: invalid if any step is invalid."""
    reasons: list[Item] = runtime_mismatches(execution_details)
    warnings: list[Item] = []
    for model_key, modes in execution_details.items():
        for mode, details in modes.items():
            step = f"{model_key.removesuffix('_benchmark')}/{mode}"
            step_verdict = details.get("verdict") or {}
            reasons += [{**r, "step": step} for r in step_verdict.get("reasons", [])]
            warnings += [{**w, "step": step} for w in step_verdict.get("warnings", [])]
    return {**_verdict(reasons, [*warnings, *extra_warnings]), "thresholds": THRESHOLDS}


RUNTIME_KEYS = {
    "tensorflow_version": "TensorFlow version",
    "onednn_enabled": "oneDNN as TensorFlow reports it",
}


def runtime_mismatches(
    execution_details: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> list[Item]:
    """Steps that ran under different runtime settings cannot be compared: one reason each."""
    seen: dict[str, dict[str, list[str]]] = {key: {} for key in RUNTIME_KEYS}
    for model_key, modes in execution_details.items():
        for mode, details in modes.items():
            step = f"{model_key.removesuffix('_benchmark')}/{mode}"
            for key in RUNTIME_KEYS:
                seen[key].setdefault(str(details.get(key)), []).append(step)
    out: list[Item] = []
    for key, by_value in seen.items():
        if len(by_value) > 1:
            shown = "; ".join(f"{value} in {', '.join(steps)}" for value, steps in by_value.items())
            out.append(
                _item(
                    "runtime_mismatch",
                    f"the steps ran under different {RUNTIME_KEYS[key]}: {shown}",
                    setting=key,
                    values=by_value,
                )
            )
    return out

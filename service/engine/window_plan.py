"""How long a performance step's timed window will take, said before it starts. Pure logic.

Every instance warms up, then waits at the barrier. Its warmup's mean call time predicts the
window under the run-length rule (:mod:`service.runner.runlength`): ``iterations`` calls, or
``duration_s`` and ``min_iterations`` both met, or ``max_duration_s`` first. The plan says
how long the window will be, which setting ends it, and which latency percentiles it will not
back with enough samples (their floors, :func:`service.figures.stats.percentile_floor`, count the
batch latencies of all instances together), with the setting that would reach them. The same
arithmetic gives the verdict's hints after the run (:func:`calls_needed`, :func:`cap_hint`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from service.figures.stats import percentile_floor
from service.runner.runlength import RunLength

ENDS_BY = ("iterations", "duration_s", "min_iterations", "max_duration_s")
_CAP_MARGIN = 1.1  # a suggested cap leaves room for calls slower than the warmup's


@dataclass(frozen=True)
class FloorPlan:
    """One percentile: the latencies it needs, those the window will give, the time it needs."""

    percentile: float
    min_samples: int
    expected_samples: int
    reached: bool
    window_needed_s: float


@dataclass(frozen=True)
class WindowPlan:
    call_ms: float
    instances: int
    calls_per_instance: int
    window_s: float
    ends_by: str
    floors: tuple[FloorPlan, ...]
    message: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["floors"] = [asdict(floor) for floor in self.floors]
        return out


def calls_needed(samples: int, instances: int) -> int:
    """Calls per instance for ``samples`` latencies over all instances."""
    return math.ceil(samples / max(instances, 1))


def cap_hint(window_s: float) -> str:
    """A ``max_duration_s`` that leaves room for slower calls, as a request would set it."""
    return f"{math.ceil(window_s * _CAP_MARGIN):d}"


def settings_fix(rule: RunLength, calls: int, window_s: float) -> str:
    """The request settings that give ``calls`` per instance, taking ``window_s``."""
    if rule.iterations is not None:
        return f"set benchmark.iterations to {calls}"
    changes = []
    if rule.min_iterations < calls:
        changes.append(f"benchmark.min_iterations to {calls}")
    if rule.max_duration_s is not None and window_s > rule.max_duration_s:
        changes.append(f"benchmark.max_duration_s to {cap_hint(window_s)}")
    return "set " + " and ".join(changes) if changes else "no change needed"


def _window(rule: RunLength, call_s: float) -> tuple[int, float, str]:
    """(calls per instance, window seconds, the setting that ends it)."""
    if rule.iterations is not None:
        return rule.iterations, rule.iterations * call_s, "iterations"
    by_duration = math.ceil(rule.duration_s / call_s)
    calls = max(rule.min_iterations, by_duration)
    ends_by = "duration_s" if by_duration >= rule.min_iterations else "min_iterations"
    if rule.max_duration_s is not None and calls * call_s > rule.max_duration_s:
        capped_calls = max(1, math.ceil(rule.max_duration_s / call_s))
        return capped_calls, rule.max_duration_s, "max_duration_s"
    return calls, max(rule.duration_s, calls * call_s), ends_by


def plan_window(
    rule: RunLength,
    call_s: float,
    instances: int,
    percentiles: Sequence[float],
    required: Sequence[float] = (),
) -> WindowPlan:
    """The window ``rule`` gives at ``call_s`` per call with ``instances`` side by side."""
    call_s = max(call_s, 1e-9)
    calls, window_s, ends_by = _window(rule, call_s)
    floors = tuple(
        FloorPlan(
            percentile=pct,
            min_samples=(floor := percentile_floor(pct)),
            expected_samples=calls * instances,
            reached=calls * instances >= floor,
            window_needed_s=round(calls_needed(floor, instances) * call_s, 3),
        )
        for pct in percentiles
    )
    plan = WindowPlan(
        call_ms=round(call_s * 1000, 4),
        instances=instances,
        calls_per_instance=calls,
        window_s=round(window_s, 3),
        ends_by=ends_by,
        floors=floors,
        message="",
    )
    message = _message(plan, rule, required)
    return WindowPlan(**{**asdict(plan), "floors": floors, "message": message})


def _message(plan: WindowPlan, rule: RunLength, required: Sequence[float]) -> str:
    text = (
        f"timed window ~{plan.window_s:.3g} s: ~{plan.calls_per_instance} calls per instance x "
        f"{plan.instances} at {plan.call_ms:.3g} ms per call (warmup's mean), ended by "
        f"{plan.ends_by}"
    )
    if plan.ends_by == "max_duration_s" and rule.iterations is None:
        needed_s = rule.min_iterations * plan.call_ms / 1000
        text += f" before min_iterations {rule.min_iterations} (~{needed_s:.3g} s)"
    short = [floor for floor in plan.floors if not floor.reached]
    if not short:
        return text
    names = ", ".join(f"p{floor.percentile:g}" for floor in short)
    counts = "/".join(str(floor.min_samples) for floor in short)
    text += (
        f"; {names} will not be reported: ~{plan.calls_per_instance * plan.instances} "
        f"latencies of {counts} needed"
    )
    required_short = [floor for floor in short if floor.percentile in required]
    target = required_short[-1] if required_short else short[-1]
    fix = settings_fix(
        rule, calls_needed(target.min_samples, plan.instances), target.window_needed_s
    )
    text += f"; p{target.percentile:g} needs ~{target.window_needed_s:.3g} s ({fix})"
    return text

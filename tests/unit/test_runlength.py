"""The run-length rule, without TensorFlow: when warmup ends, when the window stops and why."""

from __future__ import annotations

import pytest

from service.runner.runlength import (
    DURATION_AND_MIN_ITERATIONS,
    ITERATIONS,
    MAX_DURATION,
    RunLength,
    warmup_done,
)


def simulate(rule: RunLength, call_s: float) -> tuple[int, float, str]:
    """Calls of ``call_s`` each until the rule stops: (calls, elapsed at the stop, reason)."""
    done, elapsed_s = 0, 0.0
    while True:
        done += 1
        elapsed_s = done * call_s
        reason = rule.stop_reason(done, elapsed_s)
        if reason is not None:
            return done, elapsed_s, reason


def test_explicit_iterations_are_honoured_whatever_the_durations() -> None:
    rule = RunLength(iterations=20, duration_s=5.0, min_iterations=1000, max_duration_s=6.0)

    assert simulate(rule, call_s=1.0) == (20, 20.0, ITERATIONS)  # past max_duration_s: still 20
    assert simulate(rule, call_s=0.001)[0] == 20  # well before duration_s: still 20


def test_fast_model_stops_when_the_duration_has_passed() -> None:
    """min_iterations is met early; the window still lasts duration_s."""
    rule = RunLength(iterations=None, duration_s=2.0, min_iterations=100, max_duration_s=10.0)

    done, elapsed_s, reason = simulate(rule, call_s=0.01)

    assert reason == DURATION_AND_MIN_ITERATIONS
    assert done == 200 and elapsed_s == pytest.approx(2.0)


def test_slow_model_keeps_going_past_the_duration_until_min_iterations() -> None:
    rule = RunLength(iterations=None, duration_s=1.0, min_iterations=50, max_duration_s=10.0)

    done, elapsed_s, reason = simulate(rule, call_s=0.1)

    assert reason == DURATION_AND_MIN_ITERATIONS
    assert done == 50 and elapsed_s == pytest.approx(5.0)


def test_very_slow_model_is_capped_by_max_duration() -> None:
    rule = RunLength(iterations=None, duration_s=1.0, min_iterations=1000, max_duration_s=3.0)

    done, elapsed_s, reason = simulate(rule, call_s=0.25)

    assert reason == MAX_DURATION
    assert done == 12 and elapsed_s == pytest.approx(3.0)


def test_both_floors_met_at_the_cap_is_not_reported_as_capped() -> None:
    rule = RunLength(iterations=None, duration_s=2.0, min_iterations=4, max_duration_s=2.0)
    assert rule.stop_reason(4, 2.0) == DURATION_AND_MIN_ITERATIONS
    assert rule.stop_reason(3, 2.0) == MAX_DURATION


def test_without_a_cap_only_both_floors_stop_the_window() -> None:
    rule = RunLength(iterations=None, duration_s=1.0, min_iterations=10)
    assert rule.stop_reason(9, 1000.0) is None
    assert rule.stop_reason(10, 0.999) is None
    assert rule.stop_reason(10, 1.0) == DURATION_AND_MIN_ITERATIONS


@pytest.mark.parametrize(
    "settings",
    [
        {"iterations": 0, "duration_s": 1.0},
        {"iterations": None, "duration_s": 0.0},
        {"iterations": None, "duration_s": 1.0, "min_iterations": 0},
        {"iterations": None, "duration_s": 5.0, "max_duration_s": 4.0},
    ],
)
def test_bad_settings_are_refused(settings: dict) -> None:
    with pytest.raises(ValueError):
        RunLength(**settings)


@pytest.mark.parametrize(
    ("done", "elapsed_s", "expected"),
    [(9, 1.0, False), (10, 0.49, False), (10, 0.5, True), (500, 0.1, False), (0, 9.0, False)],
)
def test_warmup_needs_both_its_count_and_its_time(
    done: int, elapsed_s: float, expected: bool
) -> None:
    assert warmup_done(done, elapsed_s, warmup=10, warmup_s=0.5) is expected


def test_no_warmup_asked_means_none() -> None:
    assert warmup_done(0, 0.0, warmup=0, warmup_s=0.0)

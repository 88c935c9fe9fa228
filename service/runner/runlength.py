"""When warmup ends and when the timed window stops. Pure logic: no TensorFlow, no clock.

Timed window (LoadGen's rule, TF Lite's cap):

* ``iterations`` set: exactly that many timed calls per instance (``stop_reason "iterations"``);
  the duration settings are not used.
* otherwise: run until ``duration_s`` has passed AND ``min_iterations`` calls are done
  (``"duration_and_min_iterations"``), or until ``max_duration_s`` has passed
  (``"max_duration"``), whichever comes first. Elapsed time is taken at the completion of the
  last call, so a call in flight when the cap passes still finishes and is counted.

Warmup: untimed calls until both ``warmup`` calls are done and ``warmup_s`` has passed.
"""

from __future__ import annotations

from dataclasses import dataclass

ITERATIONS = "iterations"
DURATION_AND_MIN_ITERATIONS = "duration_and_min_iterations"
MAX_DURATION = "max_duration"
STOP_REASONS = (ITERATIONS, DURATION_AND_MIN_ITERATIONS, MAX_DURATION)


@dataclass(frozen=True)
class RunLength:
    """The settings of the timed window; :meth:`stop_reason` says when it ends."""

    iterations: int | None
    duration_s: float
    min_iterations: int = 1
    max_duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.iterations is not None and self.iterations < 1:
            raise ValueError("iterations must be >= 1")
        if self.duration_s <= 0 or self.min_iterations < 1:
            raise ValueError("duration_s must be > 0 and min_iterations >= 1")
        if self.max_duration_s is not None and self.max_duration_s < self.duration_s:
            raise ValueError("max_duration_s must not be below duration_s")

    def stop_reason(self, done: int, elapsed_s: float) -> str | None:
        """Why to stop after ``done`` timed calls that took ``elapsed_s``; None: keep going."""
        if self.iterations is not None:
            return ITERATIONS if done >= self.iterations else None
        if done >= self.min_iterations and elapsed_s >= self.duration_s:
            return DURATION_AND_MIN_ITERATIONS
        if self.max_duration_s is not None and elapsed_s >= self.max_duration_s:
            return MAX_DURATION
        return None


def warmup_done(done: int, elapsed_s: float, warmup: int, warmup_s: float) -> bool:
    """True once ``warmup`` calls are done and ``warmup_s`` has passed."""
    return done >= warmup and elapsed_s >= warmup_s

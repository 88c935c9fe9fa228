"""Default broker names and the routing-key helpers (see the spec's topology table)."""

from __future__ import annotations

import re
from typing import Literal

REQUESTS_QUEUE = "benchmark.requests"
DEAD_LETTER_EXCHANGE = "benchmark.dead"
DEAD_LETTER_QUEUE = "benchmark.requests.dead"
EVENTS_EXCHANGE = "benchmark.events"

WORKLOAD_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
_WORKLOAD_ID = re.compile(WORKLOAD_ID_PATTERN)

Phase = Literal["start", "progress", "finish"]
PHASES: tuple[Phase, ...] = ("start", "progress", "finish")


def is_routable_id(workload_id: object) -> bool:
    """True when ``workload_id`` can go into a routing key and a file name."""
    return isinstance(workload_id, str) and _WORKLOAD_ID.fullmatch(workload_id) is not None


def routing_key(workload_id: str, phase: Phase) -> str:
    """``benchmark.<id>.<phase>``.

    >>> routing_key("job-1", "finish")
    'benchmark.job-1.finish'
    """
    if not is_routable_id(workload_id):
        raise ValueError(f"workload id {workload_id!r} does not match {WORKLOAD_ID_PATTERN}")
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r} is not one of {', '.join(PHASES)}")
    return f"benchmark.{workload_id}.{phase}"


def workload_binding(workload_id: str) -> str:
    """The binding key that follows every event of one workload: ``benchmark.<id>.#``."""
    if not is_routable_id(workload_id):
        raise ValueError(f"workload id {workload_id!r} does not match {WORKLOAD_ID_PATTERN}")
    return f"benchmark.{workload_id}.#"


ALL_FINISHES_BINDING = "benchmark.*.finish"

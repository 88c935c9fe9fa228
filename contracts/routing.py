"""Broker names, queue arguments and routing keys: the topology both sides agree on.

Every name here is a default; operators may rename them (the worker's ``broker`` config
section), so publishers and subscribers take them as parameters too.

>>> routing_key("job-1", "finish")
'benchmark.job-1.finish'
>>> workload_binding("job-1")
'benchmark.job-1.#'
>>> cancel_routing_key("job-1")
'benchmark.job-1.cancel'
>>> node_status_routing_key(make_node_id("bench-01.lab.example", "3fa2c1d0"))
'node.bench-01-lab-example-3fa2c1d0.status'
>>> request_queue_arguments("benchmark.dead", delivery_limit=3)
{'x-queue-type': 'quorum', 'x-dead-letter-exchange': 'benchmark.dead', 'x-delivery-limit': 3}
"""

from __future__ import annotations

import re
from typing import Any, Literal

REQUESTS_QUEUE = "benchmark.requests"
"""Durable quorum queue the worker consumes requests from."""
DEAD_LETTER_EXCHANGE = "benchmark.dead"
"""Durable fanout exchange the requests queue dead-letters to."""
DEAD_LETTER_QUEUE = "benchmark.requests.dead"
"""Durable quorum queue bound to the dead-letter exchange: rejected bodies, unchanged."""
EVENTS_EXCHANGE = "benchmark.events"
"""Durable topic exchange of every event: workload events and node status."""
CONTROL_EXCHANGE = "benchmark.control"
"""Durable topic exchange of control messages (cancel); every worker binds its own queue."""
DEFAULT_DELIVERY_LIMIT = 3
"""Default ``x-delivery-limit`` of the requests queue (the worker's ``broker.delivery_limit``)."""

WORKLOAD_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
"""Workload ids go into routing keys and file names: no dots, no wildcards, no slashes."""
NODE_ID_PATTERN = WORKLOAD_ID_PATTERN
"""Node ids go into routing keys too (``node.<node_id>.status``)."""
_ROUTABLE_ID = re.compile(WORKLOAD_ID_PATTERN)

Phase = Literal["start", "progress", "finish"]
PHASES: tuple[Phase, ...] = ("start", "progress", "finish")

ALL_FINISHES_BINDING = "benchmark.*.finish"
"""Binding key on the events exchange for the finish of every workload."""
ALL_WORKLOADS_BINDING = "benchmark.#"
"""Binding key on the events exchange for every workload event (not node status)."""
CANCEL_BINDING = "benchmark.*.cancel"
"""Binding key on the control exchange for every cancel (what each worker binds)."""
NODE_STATUS_BINDING = "node.*.status"
"""Binding key on the events exchange for the status of every node (a fleet dashboard)."""


def is_routable_id(workload_id: object) -> bool:
    """True when ``workload_id`` can go into a routing key and a file name.

    >>> is_routable_id("job-1"), is_routable_id("a.b"), is_routable_id("*")
    (True, False, False)
    """
    return isinstance(workload_id, str) and _ROUTABLE_ID.fullmatch(workload_id) is not None


def _require_routable(value: str, what: str) -> None:
    if not is_routable_id(value):
        raise ValueError(f"{what} {value!r} does not match {WORKLOAD_ID_PATTERN}")


def routing_key(workload_id: str, phase: Phase) -> str:
    """Routing key of a workload event on the events exchange: ``benchmark.<id>.<phase>``.

    >>> routing_key("job-1", "progress")
    'benchmark.job-1.progress'
    """
    _require_routable(workload_id, "workload id")
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r} is not one of {', '.join(PHASES)}")
    return f"benchmark.{workload_id}.{phase}"


def workload_binding(workload_id: str) -> str:
    """The binding key that follows every event of one workload: ``benchmark.<id>.#``."""
    _require_routable(workload_id, "workload id")
    return f"benchmark.{workload_id}.#"


def cancel_routing_key(workload_id: str) -> str:
    """Routing key of a cancel on the control exchange: ``benchmark.<id>.cancel``.

    >>> cancel_routing_key("a.b")
    Traceback (most recent call last):
    ...
    ValueError: workload id 'a.b' does not match ^[A-Za-z0-9_-]{1,128}$
    """
    _require_routable(workload_id, "workload id")
    return f"benchmark.{workload_id}.cancel"


def make_node_id(hostname: str, worker_id: str) -> str:
    """A routable node id from a hostname and a worker id: ``<hostname>-<worker_id>``.

    Characters a routing key cannot carry (dots of a domain name, say) become ``-``, and the
    hostname part is cut so the id stays within 128 characters. Several workers on one host
    differ by their worker id.

    >>> make_node_id("gpu7.example.org", "a1b2c3d4")
    'gpu7-example-org-a1b2c3d4'
    """
    _require_routable(worker_id, "worker id")
    host = re.sub(r"[^A-Za-z0-9_-]", "-", hostname).strip("-") or "host"
    return f"{host[: 127 - len(worker_id)]}-{worker_id}"


def node_status_routing_key(node_id: str) -> str:
    """Routing key of a node status on the events exchange: ``node.<node_id>.status``."""
    _require_routable(node_id, "node id")
    return f"node.{node_id}.status"


def request_queue_arguments(
    dead_letter_exchange: str = DEAD_LETTER_EXCHANGE,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> dict[str, Any]:
    """The arguments the requests queue is declared with; the worker and clients both use them.

    RabbitMQ refuses to redeclare a queue with different arguments, so there is one builder.
    """
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": dead_letter_exchange,
        "x-delivery-limit": delivery_limit,
    }


def dead_letter_queue_arguments() -> dict[str, object]:
    """The arguments the dead-letter queue is declared with."""
    return {"x-queue-type": "quorum"}

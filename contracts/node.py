"""Node status: what each worker publishes about itself, so a dashboard can list the fleet.

Published on the events exchange with routing key ``node.<node_id>.status`` (bind
``node.*.status`` for the whole fleet): when the worker starts, periodically while it runs
(idle or busy), and when it stops. The body uses the events' envelope with subject
``node_status``.

>>> status = NodeStatus(data=NodeStatusData(
...     node_id="bench-01-3fa2c1d0",
...     node=NodeIdentity(hostname="bench-01", worker_id="3fa2c1d0", cpu_model="Xeon",
...                       cpus="0-3", version="0.1.0"),
...     state="busy", workload_id="job-1", uptime_s=12.5,
...     counts=OutcomeCounts(success=2, error=1),
...     timestamp="2025-01-01T12:00:00Z"))
>>> status.routing_key
'node.bench-01-3fa2c1d0.status'
>>> parsed = parse_node_status(status.to_body())
>>> parsed.data.state, parsed.data.counts.success, parsed.data.timestamp.year
('busy', 2, 2025)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field

from ._base import OpenContract
from .routing import NODE_ID_PATTERN, WORKLOAD_ID_PATTERN, node_status_routing_key

NodeState = Literal["idle", "busy", "stopping", "stopped"]
"""``idle``: consuming, nothing running; ``busy``: running ``workload_id``; ``stopping``: no
longer consuming, finishing or handing back its workload; ``stopped``: the last status."""
NODE_STATUS_SUBJECT: Literal["node_status"] = "node_status"
"""The ``subject`` of the envelope and the AMQP ``type`` property of a node status."""


class NodeIdentity(OpenContract):
    """Which worker on which machine: in node status and in ``benchmark_start``/``_finish``."""

    hostname: str = Field(description="The machine's host name.")
    worker_id: str = Field(
        pattern=WORKLOAD_ID_PATTERN,
        description="Unique per worker process; several workers may share a host.",
    )
    node_id: str | None = Field(
        default=None,
        pattern=NODE_ID_PATTERN,
        description="Routable id of this worker, as in node.<node_id>.status "
        "(contracts.routing.make_node_id(hostname, worker_id)).",
    )
    cpu_model: str | None = Field(default=None, description="CPU model name, e.g. from lscpu.")
    cpus: str = Field(description="The CPUs this worker owns, as a CPU list, e.g. '0-3,8'.")
    version: str = Field(description="Version of the benchmark worker.")
    pid: int | None = Field(default=None, description="Process id of the worker.")


class OutcomeCounts(OpenContract):
    """Requests this worker has ended since it started, by outcome."""

    success: int = Field(default=0, ge=0, description="benchmark_finish with status success.")
    error: int = Field(
        default=0, ge=0, description="benchmark_finish with status error, except cancels."
    )
    cancelled: int = Field(default=0, ge=0, description="Ended by a cancel message.")
    rejected: int = Field(
        default=0, ge=0, description="Undecodable or invalid bodies sent to dead letters."
    )
    requeued: int = Field(
        default=0, ge=0, description="Handed back to the queue (shutdown, unconfirmed finish)."
    )


class WarmRunnerStatus(OpenContract):
    """One warm runner process: TensorFlow imported once, reused for the next steps."""

    pid: int
    cpus: str = Field(description="The CPUs it is pinned to, e.g. '0-1'.")
    threads: int
    steps: int = Field(ge=0, description="Steps it has run.")
    rss_bytes: int = Field(ge=0, description="Resident memory after its last step.")
    age_s: float = Field(ge=0)
    busy: bool


class NodeStatusData(OpenContract):
    """The payload of a node status."""

    node_id: str = Field(pattern=NODE_ID_PATTERN, description="As in the routing key.")
    node: NodeIdentity
    state: NodeState
    workload_id: str | None = Field(
        default=None, description="The workload running now (state busy or stopping)."
    )
    uptime_s: float = Field(ge=0, description="Seconds since the worker started.")
    counts: OutcomeCounts = Field(default_factory=OutcomeCounts)
    timestamp: AwareDatetime = Field(description="When this status was taken (ISO 8601).")
    warm_runners: list[WarmRunnerStatus] | None = Field(
        default=None,
        description="The worker's warm runner processes (None: runners.warm is false).",
    )


def _envelope_is_required(schema: dict[str, Any]) -> None:
    """JSON Schema of the envelope: the worker always sends subject, status and data."""
    schema["required"] = ["subject", "status", "data"]


class NodeStatus(OpenContract):
    """A node status message: ``{"subject": "node_status", "status": "success", "data"}``."""

    model_config = ConfigDict(json_schema_extra=_envelope_is_required)

    subject: Literal["node_status"] = NODE_STATUS_SUBJECT
    status: Literal["success"] = "success"
    data: NodeStatusData

    @property
    def routing_key(self) -> str:
        """``node.<node_id>.status``, on the events exchange."""
        return node_status_routing_key(self.data.node_id)

    def to_body(self) -> bytes:
        """The UTF-8 JSON body, without null fields."""
        return self.model_dump_json(exclude_none=True).encode()


def parse_node_status(body: bytes | str) -> NodeStatus:
    """Parse and validate a node status body (raises ``pydantic.ValidationError``)."""
    return NodeStatus.model_validate_json(body)

"""Node status: this worker's state, current workload and counts, on ``node.<node_id>.status``.

Published when the worker starts, every ``node.status_interval_s``, whenever it turns busy or
idle, and when it stops. Status is best effort: a status that cannot be published is logged
and never stops a benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange

from contracts import NodeIdentity as IdentityContract
from contracts import NodeState, NodeStatus, NodeStatusData, OutcomeCounts
from service.fleet.node import NodeIdentity

log = structlog.get_logger()

OUTCOMES = ("success", "error", "cancelled", "rejected", "requeued")


class NodeActivity:
    """What this worker is doing now, and what it has done since it started."""

    def __init__(self, identity: NodeIdentity) -> None:
        self.identity = identity
        self.state: NodeState = "idle"
        self.workload_id: str | None = None
        self.counts: Counter[str] = Counter()
        self.started_monotonic_s = time.monotonic()
        self.runners: Callable[[], dict[str, Any]] | None = None  # the warm pool's snapshot

    def snapshot(self) -> NodeStatus:
        return NodeStatus(
            data=NodeStatusData(
                node_id=self.identity.node_id,
                node=IdentityContract.model_validate(self.identity.to_dict()),
                state=self.state,
                workload_id=self.workload_id,
                uptime_s=round(time.monotonic() - self.started_monotonic_s, 3),
                counts=OutcomeCounts(**{name: self.counts[name] for name in OUTCOMES}),
                timestamp=datetime.now(UTC),
                warm_runners=None if self.runners is None else self.runners()["runners"],
            )
        )


class NodeStatusPublisher:
    """Publishes snapshots of a :class:`NodeActivity` to the events exchange."""

    def __init__(
        self, state: NodeActivity, exchange: AbstractExchange, interval_s: float, timeout_s: float
    ) -> None:
        self._state = state
        self._exchange = exchange
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._periodic: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def publish_now(self) -> None:
        status = self._state.snapshot()
        try:
            await self._exchange.publish(
                aio_pika.Message(
                    body=status.to_body(),
                    content_type="application/json",
                    type=status.subject,
                    message_id=uuid.uuid4().hex,
                    timestamp=time.time(),
                    expiration=max(1, int(3 * self._interval_s)),  # stale status is useless
                ),
                routing_key=status.routing_key,
                mandatory=False,
                timeout=self._timeout_s,
            )
        except Exception as exc:  # best effort: a lost status must never stop the loop
            log.warning("node_status_not_published", error=repr(exc))
            return
        log.debug("node_status_published", state=status.data.state)

    def publish_soon(self) -> None:
        """Publish in the background (on a state change); never blocks the caller."""
        task = asyncio.create_task(self.publish_now())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def start(self) -> None:
        self._periodic = asyncio.create_task(self._every_interval())

    async def stop(self) -> None:
        """Stop the periodic status; publish the last one (state ``stopped``)."""
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self.publish_now()

    async def _every_interval(self) -> None:
        while True:
            await self.publish_now()
            await asyncio.sleep(self._interval_s)

"""What a worker does as one node of a fleet: identity, node status, cancel, health, metrics.

The worker owns one :class:`Fleet`. It calls :meth:`Fleet.start` once its connections are up,
:meth:`Fleet.watch_consumer` once it consumes, runs each benchmark as a task inside
:meth:`Fleet.busy_with` (the fleet observes it: busy, its step, a cancel, its outcome; it runs
nothing itself), and calls :meth:`Fleet.stop` at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from contracts import (
    CANCELLED_MESSAGE,
    CancelRequest,
    FinishEvent,
    error_finish,
)
from service.config import Settings
from service.engine.workload import StepTracker
from service.executor.warm_pool import WarmPool
from service.fleet.control import CancelledIds, ControlListener
from service.fleet.health import Heartbeat, default_heartbeat_file
from service.fleet.metrics import Metrics
from service.fleet.node import NodeIdentity
from service.fleet.node_status import NodeActivity, NodeStatusPublisher

log = structlog.get_logger()

QUEUED_STEP = "queued"
_CONTROL_PREFETCH = 100
INTAKE_MARGIN_S = 30.0


@dataclass
class Running:
    """The request a node is busy with, as the fleet sees it."""

    workload_id: str
    task: asyncio.Task[FinishEvent]
    steps: StepTracker
    cancel: CancelRequest | None = None  # the cancel that ended it, if one did
    finish: FinishEvent | None = None


class Fleet:
    """The fleet side of one worker process."""

    def __init__(self, settings: Settings, cpus: tuple[int, ...]) -> None:
        self._settings = settings
        self.identity = NodeIdentity.of_this_process(cpus, settings.node.worker_id)
        self.node: dict[str, Any] = self.identity.to_dict()
        self.activity = NodeActivity(self.identity)
        self.cancelled = CancelledIds(settings.node.cancelled_ttl_s, settings.node.cancelled_max)
        self.metrics = Metrics(self.node)
        self.metrics_port: int | None = None
        self.heartbeat = Heartbeat(
            heartbeat_path(settings, cpus, self.identity),
            settings.health.heartbeat_interval_s,
            self._heartbeat_fields,
        )
        self._status: NodeStatusPublisher | None = None
        self._listener: ControlListener | None = None
        self._running: Running | None = None
        self.runners: WarmPool | None = None  # the worker's warm runners, for status
        self._intake_pending: dict[object, float] = {}  # delivery tag -> monotonic start
        # deciding takes milliseconds; rejecting may wait for two confirms (finish, copy)
        self._intake_bound_s = 2 * settings.broker.publish_timeout_s + INTAKE_MARGIN_S

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(
        self,
        consume_connection: AbstractRobustConnection,
        publish_connection: AbstractRobustConnection,
        events: AbstractExchange,
    ) -> None:
        """Metrics endpoint, control queue, first node status; the heartbeat says 'starting'."""
        self.heartbeat.write("starting")
        if self._settings.metrics.port is not None:
            self.metrics_port = self.metrics.serve(
                self._settings.metrics.host, self._settings.metrics.port
            )
        for name, connection in (("consume", consume_connection), ("publish", publish_connection)):
            connection.reconnect_callbacks.add(self._reconnected_callback(name))
        control_channel = await consume_connection.channel()
        await control_channel.set_qos(prefetch_count=_CONTROL_PREFETCH)
        queue_name = (
            f"{self._settings.broker.control_exchange}.{self.identity.node_id}"
            f".{uuid.uuid4().hex[:8]}"
        )
        self._listener = ControlListener(self._settings.broker, queue_name, self._on_cancel)
        await self._listener.start(control_channel)
        self._status = NodeStatusPublisher(
            self.activity,
            events,
            self._settings.node.status_interval_s,
            self._settings.broker.publish_timeout_s,
        )
        self._status.start()  # publishes the first status at once

    def watch_consumer(self, consuming: Callable[[], bool]) -> None:
        """The worker consumes now: the heartbeat reports ``consuming()``, the answer of the
        worker's one consumer watch (:class:`service.consumer.consumer_watch.ConsumerWatch`)."""
        self.heartbeat.watch(consuming)

    def stopping(self) -> None:
        """The worker no longer consumes (shutdown): check fails from now on."""
        self.activity.state = "stopping"
        self.heartbeat.write("stopping")
        if self._status is not None:
            self._status.publish_soon()

    async def stop(self) -> None:
        """The last node status (``stopped``) and heartbeat; close the metrics endpoint."""
        self.activity.state = "stopped"
        self.activity.workload_id = None
        if self._status is not None:
            await self._status.stop()
        if self._listener is not None:
            await self._listener.stop()
        await self.heartbeat.stop("stopped")
        self.metrics.close()

    # -- one request -------------------------------------------------------------------------

    def cancelled_before(self, workload_id: str, run_id: str) -> FinishEvent | None:
        """The 'cancelled' finish of a request whose id was cancelled before it arrived (it is
        not run at all), else None."""
        if workload_id not in self.cancelled:
            return None
        log.info("cancelled_request_dropped", workload_id=workload_id)
        self._count("cancelled")
        return self.cancelled_finish(workload_id, run_id, QUEUED_STEP, None)

    @contextlib.contextmanager
    def busy_with(
        self, workload_id: str, task: asyncio.Task[FinishEvent], steps: StepTracker
    ) -> Iterator[Running]:
        """While the block runs, the node is busy with ``task`` (the one owner of "busy"): a
        cancel for ``workload_id`` cancels the task and is noted on the :class:`Running` the
        block gets. Set its ``finish`` before the block ends and the outcome is counted; a
        block left cancelled (shutdown, a lost delivery) counts as a requeue. Any other
        exception is the handler's to count (it retries or gives up)."""
        running = self._running = Running(workload_id, task, steps)
        started = time.monotonic()
        self._set_busy(workload_id)
        try:
            yield running
        except asyncio.CancelledError:
            self._count("requeued")
            raise
        finally:
            self._running = None
            self._set_idle()
        if running.finish is not None:
            outcome = self._outcome(running.finish)
            self._count(outcome)
            self.metrics.duration.labels(outcome=outcome).observe(time.monotonic() - started)
            if outcome == "success":
                self.metrics.last_success.set_to_current_time()

    def request_rejected(self) -> None:
        self._count("rejected")

    # -- internals ---------------------------------------------------------------------------

    def _on_cancel(self, cancel: CancelRequest) -> None:
        self.cancelled.add(cancel.id, cancel.reason)
        running = self._running
        if running is None or running.workload_id != cancel.id or running.cancel is not None:
            return
        log.info("workload_cancelling", workload_id=cancel.id, step=running.steps.current)
        running.cancel = cancel
        running.task.cancel()  # launch.run_instances kills the runners' process group

    def cancelled_finish(
        self, workload_id: str, run_id: str, step: str, cancel: CancelRequest | None
    ) -> FinishEvent:
        """The error finish of a cancelled request, naming the step it was in."""
        reason = cancel.reason if cancel is not None else self.cancelled.reason(workload_id)
        extra: dict[str, Any] = {"run_id": run_id, "node": self.node, "reason": "cancelled"}
        if reason:
            extra["cancel_reason"] = reason
        return error_finish(workload_id, CANCELLED_MESSAGE, step, **extra)

    @staticmethod
    def _outcome(finish: FinishEvent) -> str:
        if finish.ok:
            return "success"
        message = getattr(finish.data, "message", None)
        return "cancelled" if message == CANCELLED_MESSAGE else "error"

    def _count(self, outcome: str) -> None:
        self.activity.counts[outcome] += 1
        self.metrics.requests.labels(outcome=outcome).inc()

    def _set_busy(self, workload_id: str) -> None:
        self.activity.state, self.activity.workload_id = "busy", workload_id
        self.metrics.busy.set(1)
        self._status_changed()

    def _set_idle(self) -> None:
        if self.activity.state == "busy":
            self.activity.state = "idle"
        self.activity.workload_id = None
        self.metrics.busy.set(0)
        self._status_changed()

    def _status_changed(self) -> None:
        self.heartbeat.write(self.heartbeat.state)
        if self._status is not None:
            self._status.publish_soon()

    @contextlib.contextmanager
    def intake(self, delivery_tag: int | None) -> Iterator[Callable[[], None]]:
        """A delivery in intake, until the block ends or it calls what it is given (a valid
        request, decided: its run is not intake): decoded, checked and, if rejected,
        dead-lettered and settled.

        The heartbeat carries the oldest one's age, and ``check`` fails past the bound: a
        delivery nobody decides on (a stuck consumer callback) shows, instead of a worker that
        looks consuming while the requests behind it wait."""
        key = object() if delivery_tag is None else delivery_tag
        self._intake_pending[key] = time.monotonic()

        def decided() -> None:
            self._intake_pending.pop(key, None)

        try:
            yield decided
        finally:
            self._intake_pending.pop(key, None)

    def _heartbeat_fields(self) -> dict[str, Any]:
        oldest = min(self._intake_pending.values(), default=None)
        return {
            "node_id": self.identity.node_id,
            "busy": self.activity.state == "busy",
            "workload_id": self.activity.workload_id,
            "metrics_port": self.metrics_port,
            "intake_pending_s": None if oldest is None else round(time.monotonic() - oldest, 3),
            "intake_bound_s": self._intake_bound_s,
            "warm_runners": self._warm_runners(),
        }

    def _warm_runners(self) -> dict[str, Any] | None:
        """The warm pool's snapshot, also kept in the metrics (read with every heartbeat)."""
        snapshot = None if self.runners is None else self.runners.snapshot()
        self.metrics.set_warm_runners(snapshot)
        return snapshot

    def attach_runners(self, pool: WarmPool | None) -> None:
        """The worker's warm runners: in the heartbeat, node status and metrics."""
        self.runners = pool
        self.activity.runners = None if pool is None else pool.snapshot

    def _reconnected_callback(self, name: str) -> Callable[..., None]:
        def reconnected(*_: object) -> None:
            log.warning("broker_reconnected", connection=name)
            self.metrics.reconnects.labels(connection=name).inc()

        return reconnected


def heartbeat_path(
    settings: Settings, cpus: tuple[int, ...], identity: NodeIdentity | None = None
) -> Path:
    """The heartbeat file of the worker these settings describe (``run`` and ``check``)."""
    if settings.health.heartbeat_file is not None:
        return settings.health.heartbeat_file
    identity = identity or NodeIdentity.of_this_process(cpus, settings.node.worker_id)
    return default_heartbeat_file(settings.worker.workspace, identity.node_id)

"""The worker: its connections, its consumers, one request at a time, a clean shutdown.

It consumes ``benchmark.requests`` with prefetch 1 and hands each delivery to the
:class:`~service.consumer.handling.RequestHandler`, which returns what becomes of it (an
:class:`~service.consumer.outcomes.Outcome`, the table in :mod:`service.consumer.outcomes`);
the worker applies that outcome, the only place where a delivery is settled. A second consumer,
the reject lane (:mod:`service.consumer.reject_lane`), opens during floods of bad bodies.

One request at a time, and no request held that is not running: the prefetch-1 consumer is the
only one that runs requests; a valid request that reaches the reject lane is handed back at
once. Every event carries ``run_id``, ``attempt`` (1 on the first delivery) and the request's
``request_message_id``, so subscribers can tell a re-run from the first run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage

from contracts import BenchmarkRequest, FinishEvent
from service.config import Settings
from service.consumer import consumer_timeout, outcomes
from service.consumer.broker import Topology, connect, declare_topology, request_queue_arguments
from service.consumer.consumer_watch import ConsumerWatch
from service.consumer.dead_letters import DeadLetters
from service.consumer.delivery import channel_closed
from service.consumer.handling import RequestHandler
from service.consumer.outcomes import Outcome
from service.consumer.publisher import EventPublisher
from service.consumer.reject_lane import RejectLane
from service.engine.workload import Emit, StepTracker, run_workload
from service.executor.launch import make_pool
from service.executor.topology import CpuTopology
from service.fleet.member import Fleet

log = structlog.get_logger()

EXIT_CONSUMER_LOST = 3
_CANCEL_TIMEOUT_S = 10
_REJECT_LANE_QUIET_S = 1.0
_CLOSE_TIMEOUT_S = 5.0


class Worker:
    """Consumes ``benchmark.requests`` with prefetch 1 until :meth:`stop` is called."""

    def __init__(self, settings: Settings, topology: CpuTopology) -> None:
        self._settings = settings
        self._topology = topology
        self._fleet = Fleet(settings, topology.cpu_ids)  # node status, cancel, health, metrics
        self._worker_id = self._fleet.identity.worker_id
        self._node = self._fleet.node
        self._stop = asyncio.Event()
        self._current: asyncio.Task[Any] | None = None
        self._current_message: AbstractIncomingMessage | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._one_at_a_time = asyncio.Lock()
        self._publisher: EventPublisher | None = None
        self._dead_letters: DeadLetters | None = None
        self.pool = make_pool(settings, len(topology.cpu_ids))
        self._fleet.attach_runners(self.pool)
        self._lane: RejectLane | None = None
        self._requests: RequestHandler | None = None  # once the connections are up
        self.ready = asyncio.Event()
        self.exit_code = 0

    def stop(self) -> None:
        self._stop.set()

    def _consumer_lost(self) -> None:
        self.exit_code = EXIT_CONSUMER_LOST
        self.stop()

    async def run(self) -> None:
        broker = self._settings.broker
        consume_connection = await connect(broker, "consume")
        publish_connection = await connect(broker, "publish")
        try:
            consume_channel = await consume_connection.channel()
            consume_channel.close_callbacks.add(self._consume_channel_closed)
            await consume_channel.set_qos(prefetch_count=1)
            topology: Topology = await declare_topology(consume_channel, broker)
            publish_channel = await publish_connection.channel(publisher_confirms=True)
            events = await publish_channel.declare_exchange(
                broker.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            self._publisher = EventPublisher(events, broker.publish_timeout_s)
            dead_exchange = await publish_channel.declare_exchange(
                broker.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
            )
            self._dead_letters = DeadLetters(
                dead_exchange,
                self._fleet.identity.node_id,
                broker.requests_queue,
                broker.publish_timeout_s,
            )
            self._requests = RequestHandler(
                self._settings, self._fleet, self._publisher, self._benchmark,
                on_rejected=self._count_rejection, on_accepted=self._close_lane,
            )  # fmt: skip
            await self._fleet.start(consume_connection, publish_connection, events)
            self._lane = await self._reject_lane(consume_connection)
            tag = await topology.requests.consume(self._on_message)
            consumer = ConsumerWatch(
                consume_channel,
                tag,
                self._settings.worker.consumer_check_s,
                2 * broker.reconnect_interval_s + self._settings.worker.consumer_check_s,
                self._consumer_lost,
            )
            self._fleet.watch_consumer(lambda: consumer.consuming)
            watch = asyncio.create_task(consumer.run())
            log.info("worker_started", queue=broker.requests_queue, **self._node)
            self.ready.set()
            await self._stop.wait()
            log.info("worker_stopping", busy=self._current is not None)
            self._fleet.stopping()
            watch.cancel()
            await _cancel_consumer(topology, tag)
            if self._lane is not None:
                await self._lane.close("shutdown", for_good=True)
            await self._drain()
        finally:
            if self.pool is not None:
                await self.pool.close()
            await self._stop_fleet()
            await _close(consume_connection, "consume")
            await _close(publish_connection, "publish")
            log.info("worker_stopped")

    async def _stop_fleet(self) -> None:
        """The fleet's last status and heartbeat, bounded: a blocked broker must not keep the
        worker from exiting."""
        bound_s = self._settings.broker.publish_timeout_s + _CLOSE_TIMEOUT_S
        try:
            await asyncio.wait_for(self._fleet.stop(), bound_s)
        except TimeoutError:
            log.warning("fleet_stop_timed_out", timeout_s=bound_s)

    async def _reject_lane(self, connection: aio_pika.abc.AbstractConnection) -> RejectLane | None:
        """A second consumer for floods of bad bodies, on its own channel (see reject_lane)."""
        prefetch = self._settings.worker.reject_lane_prefetch
        if prefetch <= 1:
            return None
        broker = self._settings.broker
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(
            broker.requests_queue, durable=True, arguments=request_queue_arguments(broker)
        )
        return RejectLane(
            queue,
            self._on_lane_message,
            self._settings.worker.reject_lane_after,
            _REJECT_LANE_QUIET_S,
        )

    async def _on_lane_message(self, message: AbstractIncomingMessage) -> None:
        """Reject lane: bad bodies are dead-lettered; a valid request closes the lane and goes
        back to the queue at once (the lane never runs one)."""
        with (
            structlog.contextvars.bound_contextvars(
                delivery_tag=message.delivery_tag, body_bytes=len(message.body), lane="reject"
            ),
            self._fleet.intake(message.delivery_tag),
        ):  # all of it: the lane runs nothing
            outcome = await self._handler().handle_on_lane(message)
            if outcome is outcomes.HANDED_BACK and self._lane is not None:
                await self._lane.hand_back(message.body)  # shut until the main consumer has it
            await outcomes.apply(message, outcome, self._dead_letters)

    def _count_rejection(self, from_lane: bool) -> None:
        """Only the main consumer's rejections open the lane, and only while no request runs:
        the lane's own leftovers after a close never reopen it."""
        idle = self._handler().running == 0 and not self._stop.is_set()
        if self._lane is not None and not from_lane and idle:
            self._lane.rejected()

    def _close_lane(self, body: bytes) -> None:
        if self._lane is not None:
            self._lane.accepted(body)

    async def _drain(self) -> None:
        """Let the current request finish within the grace period, else hand it back."""
        tasks = set(self._handlers)
        if not tasks:
            return
        grace_s = self._settings.worker.shutdown_grace_s
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        if pending:
            log.warning("shutdown_grace_expired", grace_s=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        """A delivery of the prefetch-1 consumer: decided, run and answered by the handler,
        then settled here as its outcome says."""
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        started = time.monotonic()
        try:
            async with self._one_at_a_time:
                self._current, self._current_message = task, message
                with (
                    structlog.contextvars.bound_contextvars(
                        delivery_tag=message.delivery_tag,
                        redelivered=message.redelivered,
                        body_bytes=len(message.body),
                    ),
                    self._fleet.intake(message.delivery_tag) as decided,
                ):
                    outcome = await self._outcome_of(message, started, decided)
                    await outcomes.apply(message, outcome, self._dead_letters)
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(message))
            raise
        finally:
            if self._current is task:
                self._current, self._current_message = None, None
            self._handlers.discard(task)

    async def _outcome_of(
        self, message: AbstractIncomingMessage, started: float, decided: Callable[[], None]
    ) -> Outcome:
        """The handler's outcome; intake (the bound ``check`` watches) lasts until a valid
        request is decided or, for a rejection, until it is dead-lettered and settled."""
        if self._stop.is_set():  # waited behind a request while shutting down
            log.info("request_returned_to_queue", reason="shutdown")
            return outcomes.SHUTDOWN
        return await self._handler().handle(message, started, decided)

    async def _abandon(self, message: AbstractIncomingMessage) -> None:
        """Cancelled (shutdown past grace, or the channel of the delivery closed): runners are
        killed by now; hand the request back unless the broker already took it back."""
        if channel_closed(message):
            log.warning("request_abandoned", reason="channel_closed", requeued_by="broker")
            outcome = outcomes.CHANNEL_LOST
        else:
            log.info("request_returned_to_queue", reason="shutdown")
            outcome = outcomes.SHUTDOWN
        await outcomes.apply(message, outcome, self._dead_letters)

    def _consume_channel_closed(self, _: object, exc: BaseException | None = None) -> None:
        """The broker closed the consuming channel: say so when its consumer timeout did it,
        and remember the delivery it ended (:mod:`service.consumer.consumer_timeout`)."""
        if not consumer_timeout.is_consumer_timeout(exc) or self._requests is None:
            return
        assert exc is not None
        reason = consumer_timeout.broker_reason(exc)
        message = self._current_message
        self._requests.timed_out.add(None if message is None else message.message_id, reason)
        log.error(
            "consumer_timeout_fired",
            broker_says=reason,
            hint="the broker's consumer_timeout is below this request's run time: raise it "
            "(ops/rabbitmq/README.md) and set broker.consumer_timeout_s to match",
        )

    async def _benchmark(
        self, request: BenchmarkRequest, run_id: str, labels: dict[str, Any], emit: Emit
    ) -> FinishEvent:
        """The workload engine on this worker's CPUs and runners, as a task the fleet observes:
        a cancel ends it with the 'cancelled' finish; a cancel of this worker (shutdown, lost
        delivery) propagates, and the request goes back to the queue."""
        dropped = self._fleet.cancelled_before(request.id, run_id)
        if dropped is not None:
            return dropped
        steps = StepTracker()
        task = asyncio.create_task(
            run_workload(request, self._settings, self._topology, emit, run_id, self._node,
                         labels, self.pool, steps)
        )  # fmt: skip
        with self._fleet.busy_with(request.id, task, steps) as running:
            try:
                running.finish = await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if running.cancel is None or (current is not None and current.cancelling()):
                    raise
                running.finish = self._fleet.cancelled_finish(
                    request.id, run_id, steps.current, running.cancel
                )
        return running.finish

    def _handler(self) -> RequestHandler:
        assert self._requests is not None, "deliveries arrive only once the worker consumes"
        return self._requests


async def _close(connection: aio_pika.abc.AbstractConnection, name: str) -> None:
    """Close within a bound: a connection the broker blocked (memory or disk alarm) never gets
    its close frame out, and the worker must still exit."""
    try:
        await asyncio.wait_for(connection.close(), _CLOSE_TIMEOUT_S)
    except Exception as exc:
        log.warning("connection_close_failed", connection=name, error=repr(exc))


async def _cancel_consumer(topology: Topology, tag: str) -> None:
    """Stop deliveries; a consumer the broker already dropped needs no cancel."""
    try:
        await topology.requests.cancel(tag, timeout=_CANCEL_TIMEOUT_S)
    except Exception as exc:
        log.warning("consumer_cancel_failed", error=repr(exc))

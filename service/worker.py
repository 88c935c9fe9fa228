"""The worker: consume requests one at a time, benchmark them, publish events, then ack.

Outcomes (one place for the whole table):

==========================  ===========================  ==================================
outcome                     broker action                event
==========================  ===========================  ==================================
success                     ack after finish confirm     benchmark_finish success
benchmark failed            ack after finish confirm     benchmark_finish error (names step)
undecodable / invalid body  dead-letter with reason [1]  benchmark_finish error if id readable
event not confirmed [2]     nack, requeue                (answered from the store later)
same message answered [3]   ack after finish confirm     the stored finish, not run again
delivery no longer held [4] none (broker requeued)       none: the result is kept, not sent
consume channel lost        none (broker requeued)       none (runners killed; rerun follows)
valid request on the lane   nack, requeue at once        none (the main consumer runs it)
shutdown past grace period  nack, requeue                none (runners killed)
unexpected error            requeue while attempts       error finish on the last attempt
                            remain, then [1]
==========================  ===========================  ==================================

[1] a confirmed copy to the dead-letter exchange with ``x-reject-reason`` and
``x-rejected-by`` (:mod:`service.dead_letters`), then ack; reject if the copy is not confirmed.
[2] a start or finish is waited for while the broker blocks publishing (memory or disk alarm)
for up to ``broker.event_hold_s`` (and never past the broker's consumer timeout), so a short
outage does not use up the delivery limit; only then is the request requeued.
[3] the store (:mod:`service.results`) is keyed by the delivery's ``message_id``, the request's
hash and the models' content hashes.
[4] before a finish is published the worker checks with a round trip that the broker still
holds the delivery (:func:`service.delivery.still_held`): after a partition the broker may
have handed it to another worker, and only that one answers. At most one success finish per
delivery; see the README for what subscribers keep.

One request at a time, and no request held that is not running: the prefetch-1 consumer is the
only one that runs requests; a valid request that reaches the reject lane is handed back at
once. Every event carries ``run_id``, ``attempt`` (1 on the first delivery) and the request's
``request_message_id``, so subscribers can tell a re-run from the first run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage

from contracts import BenchmarkRequest, FinishEvent, ProgressEvent, StartEvent, error_finish
from service import consumer_timeout, results
from service.broker import Topology, connect, declare_topology, request_queue_arguments
from service.config import CONSUMER_TIMEOUT_MARGIN_S, Settings
from service.consumer_timeout import TimedOutDeliveries
from service.consumer_watch import watch_consumer
from service.dead_letters import DeadLetters
from service.delivery import channel_closed, delivery_attempt, settle, still_held
from service.errors import DeliveryLost, PublishFailed, RejectRequest, StepFailed
from service.executor.launch import make_pool
from service.executor.topology import CpuTopology
from service.fleet import Fleet
from service.intake import decide
from service.publisher import EventPublisher
from service.reject_lane import RejectLane
from service.workload import model_hashes, run_workload, workload_directory

log = structlog.get_logger()

EXIT_CONSUMER_LOST = 3
_CANCEL_TIMEOUT_S = 10
_REJECT_LANE_QUIET_S = 1.0
_CLOSE_TIMEOUT_S = 5.0
_HELD_CHECK_MARGIN_S = 5.0


def finish_log_fields(finish: FinishEvent) -> dict[str, Any]:
    """The figures of a finish event worth one canonical log line."""
    data = finish.data.model_dump(exclude={"execution_details", "node"}, exclude_none=True)
    return {"status": finish.status, **data}


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
        self._timed_out = TimedOutDeliveries()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._one_at_a_time = asyncio.Lock()
        self._publisher: EventPublisher | None = None
        self._dead_letters: DeadLetters | None = None
        self.pool = make_pool(settings, len(topology.cpu_ids))
        self._fleet.attach_runners(self.pool)
        self._lane: RejectLane | None = None
        self._claims = 0  # valid requests running or about to (not bad bodies)
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
            await self._fleet.start(consume_connection, publish_connection, events)
            self._lane = await self._reject_lane(consume_connection)
            tag = await topology.requests.consume(self._on_message)
            self._fleet.watch_consumer(consume_channel, tag)
            watch = asyncio.create_task(
                watch_consumer(
                    consume_channel,
                    tag,
                    self._settings.worker.consumer_check_s,
                    2 * broker.reconnect_interval_s + self._settings.worker.consumer_check_s,
                    self._consumer_lost,
                )
            )
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
        """Reject lane: dead-letter a bad body. A valid request closes the lane and goes back
        to the queue at once, for the prefetch-1 consumer of this or another worker: the lane
        never runs a request, so while one runs no second one is held here."""
        with structlog.contextvars.bound_contextvars(
            delivery_tag=message.delivery_tag, body_bytes=len(message.body), lane="reject"
        ):
            request = await self._decide(message, from_lane=True)
            if request is None:
                return
            if self._lane is not None:
                await self._lane.close("valid request")
            await settle(message, "nack", requeue=True)
            log.info("request_returned_to_queue", reason="reject_lane", workload_id=request.id)

    def _decode(self, message: AbstractIncomingMessage) -> BenchmarkRequest:
        """The valid request, or :class:`RejectRequest` (whatever went wrong in checking)."""
        decision = decide(
            message.body,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            max_body_bytes=self._settings.worker.max_body_bytes,
        )
        if isinstance(decision, RejectRequest):
            raise decision
        return decision

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
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        started = time.monotonic()
        try:
            async with self._one_at_a_time:
                self._current, self._current_message = task, message
                with structlog.contextvars.bound_contextvars(
                    delivery_tag=message.delivery_tag,
                    redelivered=message.redelivered,
                    body_bytes=len(message.body),
                ):
                    if self._stop.is_set():  # waited behind a request while shutting down
                        await settle(message, "nack", requeue=True)
                        log.info("request_returned_to_queue", reason="shutdown")
                        return
                    await self._handle(message, started)
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(message))
            raise
        finally:
            if self._current is task:
                self._current, self._current_message = None, None
            self._handlers.discard(task)

    async def _abandon(self, message: AbstractIncomingMessage) -> None:
        """Cancelled (shutdown past grace, or the channel of the delivery closed): runners are
        killed by now; hand the request back unless the broker already took it back."""
        if channel_closed(message):
            log.warning("request_abandoned", reason="channel_closed", requeued_by="broker")
            return
        await settle(message, "nack", requeue=True)
        log.info("request_returned_to_queue", reason="shutdown")

    async def _decide(
        self, message: AbstractIncomingMessage, *, from_lane: bool = False
    ) -> BenchmarkRequest | None:
        """The valid request; or None once the delivery was rejected (dead-lettered, settled),
        all of it inside the intake bound the heartbeat watches."""
        with self._fleet.intake(message.delivery_tag):
            try:
                return self._decode(message)
            except RejectRequest as exc:
                await self._reject(message, exc, from_lane=from_lane)
                return None

    def _consume_channel_closed(self, _: object, exc: BaseException | None = None) -> None:
        """The broker closed the consuming channel: say so when its consumer timeout did it,
        and remember the delivery it ended (:mod:`service.consumer_timeout`)."""
        if not consumer_timeout.is_consumer_timeout(exc):
            return
        assert exc is not None
        reason = consumer_timeout.broker_reason(exc)
        message = self._current_message
        self._timed_out.add(None if message is None else message.message_id, reason)
        log.error(
            "consumer_timeout_fired",
            broker_says=reason,
            hint="the broker's consumer_timeout is below this request's run time: raise it "
            "(ops/rabbitmq/README.md) and set broker.consumer_timeout_s to match",
        )

    async def _handle(self, message: AbstractIncomingMessage, started: float) -> None:
        request = await self._decide(message)
        if request is None:
            return
        timed_out = self._timed_out.reason(message.message_id)
        if timed_out is not None:  # ran before and the broker's timeout killed it
            await self._reject(message, _consumer_timeout_rejection(request.id, timed_out))
            return
        if self._lane is not None:
            self._lane.accepted()
        self._claims += 1
        try:
            await self._run_request(message, request, started)
        finally:
            self._claims -= 1

    async def _run_request(
        self, message: AbstractIncomingMessage, request: BenchmarkRequest, started: float
    ) -> None:
        run_id = uuid.uuid4().hex[:12]
        attempt = delivery_attempt(message)
        with structlog.contextvars.bound_contextvars(
            workload_id=request.id, run_id=run_id, attempt=attempt
        ):
            try:
                key = await self._result_key(message, request)
                stored = await asyncio.to_thread(self._stored_finish, request, key)
                if stored is not None:
                    await self._answer(message, stored, started)
                    await settle(message, "ack")
                    log.info(
                        "request_completed",
                        duplicate_delivery=True,
                        stored_run_id=getattr(stored.data, "run_id", None),
                        status=stored.status,
                    )
                    return
                labels = {"attempt": attempt, **key.labels()}
                finish = await self._benchmark(request, run_id, labels, started, message)
                await self._answer(message, finish, started)
            except DeliveryLost as exc:
                log.warning("finish_withheld", reason="delivery_lost", detail=str(exc))
                await settle(message, "nack", requeue=True)  # a no-op on a closed channel
                return
            except PublishFailed as exc:
                log.error("request_requeued", reason="publish_failed", error=str(exc))
                await settle(message, "nack", requeue=True)
                return
            except Exception:
                log.exception("request_crashed")
                await self._give_up_or_retry(message, request.id, run_id)
                return
            await settle(message, "ack")
            log.info(
                "request_completed",
                duration_s=round(time.monotonic() - started, 3),
                **finish_log_fields(finish),
            )

    async def _benchmark(
        self,
        request: BenchmarkRequest,
        run_id: str,
        labels: dict[str, Any],
        started: float,
        message: AbstractIncomingMessage,
    ) -> FinishEvent:
        async def emit(event: StartEvent | ProgressEvent) -> None:
            publisher = self._publisher_or_fail()
            if isinstance(event, ProgressEvent):
                await publisher.publish_best_effort(event)
            else:
                await publisher.publish_held(event, self._hold_s(started))

        return await self._fleet.run(
            request,
            run_id,
            lambda emit: run_workload(
                request,
                self._settings,
                self._topology,
                emit,
                run_id,
                self._node,
                labels,
                self.pool,
            ),
            emit,
        )

    async def _result_key(
        self, message: AbstractIncomingMessage, request: BenchmarkRequest
    ) -> results.ResultKey:
        """The store key of this delivery (models hashed in a thread; unreadable ones are
        left out, the run then says what is wrong with them)."""
        hashes = await asyncio.to_thread(
            model_hashes, request, self._settings.worker.effective_roots()
        )
        return results.ResultKey(message.message_id, results.request_digest(request), hashes)

    def _stored_finish(
        self, request: BenchmarkRequest, key: results.ResultKey
    ) -> FinishEvent | None:
        try:
            stable = workload_directory(request, self._settings)
        except StepFailed:
            return None
        return results.stored_finish(stable, key)

    async def _answer(
        self, message: AbstractIncomingMessage, finish: FinishEvent, started: float
    ) -> None:
        """Publish the finish, if and only if the broker still holds the delivery it answers.

        Raises :class:`DeliveryLost` (publish nothing) or :class:`PublishFailed`."""
        broker = self._settings.broker
        check_s = 3 * (broker.heartbeat_s + 1) + _HELD_CHECK_MARGIN_S  # past aiormq's grace
        if not await still_held(message, check_s):
            raise DeliveryLost("the broker took the request back before its finish was sent")
        await self._publisher_or_fail().publish_held(finish, self._hold_s(started))

    def _hold_s(self, started: float) -> float:
        """How long a start or finish may wait for the broker's confirm: ``event_hold_s``,
        but the delivery must stay clear of the broker's consumer timeout."""
        broker = self._settings.broker
        hold_s = broker.event_hold_s
        if broker.consumer_timeout_s is not None:
            held_s = time.monotonic() - started
            room_s = broker.consumer_timeout_s - held_s - CONSUMER_TIMEOUT_MARGIN_S
            hold_s = min(hold_s, room_s)
        return max(hold_s, broker.publish_timeout_s)

    async def _reject(
        self, message: AbstractIncomingMessage, exc: RejectRequest, *, from_lane: bool = False
    ) -> None:
        log.warning(
            "request_rejected", reason=exc.reason, error=str(exc), workload_id=exc.workload_id
        )
        self._fleet.request_rejected()
        if exc.workload_id is not None:
            finish = error_finish(
                exc.workload_id, str(exc), exc.step, reason=exc.reason, node=self._node
            )
            try:
                await self._publisher_or_fail().publish(finish)
            except PublishFailed as publish_error:
                log.warning("rejection_not_published", error=str(publish_error))
        await self._dead_letter(message, exc)
        # only the main consumer's rejections open the lane, and only while none runs: the
        # lane's own leftovers after a close never reopen it
        idle = self._claims == 0 and not self._stop.is_set()
        if self._lane is not None and not from_lane and idle:
            self._lane.rejected()

    async def _give_up_or_retry(
        self, message: AbstractIncomingMessage, workload_id: str, run_id: str
    ) -> None:
        """An unexpected error: requeue while the broker would deliver the request again
        (``x-delivery-limit`` returns; a hand-back by the reject lane counts as one), and on the
        last attempt dead-letter it with the reason and an error finish."""
        attempt = delivery_attempt(message)
        if attempt <= self._settings.broker.delivery_limit:
            log.warning("request_retried", reason="internal_error", attempt=attempt)
            await settle(message, "nack", requeue=True)
            return
        finish = error_finish(
            workload_id,
            "internal error in the worker; see its log",
            "worker",
            run_id=run_id,
            node=self._node,
        )
        with contextlib.suppress(PublishFailed):
            await self._publisher_or_fail().publish(finish)
        reason = RejectRequest(
            f"internal error in the worker on attempt {attempt}, the last; see its log",
            reason="internal_error",
            workload_id=workload_id,
        )
        await self._dead_letter(message, reason)

    async def _dead_letter(self, message: AbstractIncomingMessage, exc: RejectRequest) -> None:
        """A confirmed copy with the reason in the dead-letter queue, then ack; if the copy is
        not confirmed, the broker's own dead-lettering (reject), so nothing is lost."""
        if self._dead_letters is not None and await self._dead_letters.send(message, exc):
            await settle(message, "ack")
        else:
            await settle(message, "reject", requeue=False)

    def _publisher_or_fail(self) -> EventPublisher:
        if self._publisher is None:
            raise PublishFailed("the worker has no publishing channel yet")
        return self._publisher


def _consumer_timeout_rejection(workload_id: str, reason: str) -> RejectRequest:
    return RejectRequest(
        f"the broker's consumer timeout ended an earlier attempt of this request ({reason}); "
        "it would end every attempt the same way, so it is not run again: raise "
        "consumer_timeout on the broker, or make the request shorter",
        reason="consumer_timeout",
        workload_id=workload_id,
        step="worker",
    )


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

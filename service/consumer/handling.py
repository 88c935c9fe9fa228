"""One delivery, from its body to its :class:`~service.consumer.outcomes.Outcome`.

Read top to bottom, :meth:`RequestHandler.handle` is the whole path of a request: decide on the
body, drop one the broker's consumer timeout already doomed, answer a message already answered
from the store, else benchmark it (the workload engine publishes start and progress through the
publisher it is given) and publish its finish while the delivery is still held. It returns
the outcome; the worker applies it (:func:`service.consumer.outcomes.apply`). Nothing here acks
or talks to the consumer: with a fake delivery and a fake publisher every row of the table can
be tested in milliseconds (tests/unit/test_outcomes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from aio_pika.abc import AbstractIncomingMessage

from contracts import BenchmarkRequest, FinishEvent, ProgressEvent, StartEvent, error_finish
from service.config import CONSUMER_TIMEOUT_MARGIN_S, Settings
from service.consumer import outcomes
from service.consumer.consumer_timeout import TimedOutDeliveries
from service.consumer.delivery import delivery_attempt, still_held
from service.consumer.intake import decide
from service.consumer.outcomes import Outcome
from service.engine import results
from service.engine.workload import Emit, model_hashes, workload_directory
from service.errors import DeliveryLost, PublishFailed, RejectRequest, StepFailed
from service.fleet.member import Fleet

log = structlog.get_logger()

_HELD_CHECK_MARGIN_S = 5.0

Benchmark = Callable[[BenchmarkRequest, str, dict[str, Any], Emit], Awaitable[FinishEvent]]


class Publisher(Protocol):
    async def publish(self, event: Any, timeout_s: float | None = None) -> None: ...

    async def publish_held(self, event: Any, hold_s: float) -> None: ...

    async def publish_best_effort(self, event: Any) -> None: ...


def finish_log_fields(finish: FinishEvent) -> dict[str, Any]:
    """The figures of a finish event worth one canonical log line (a sweep's table is in the
    event and the result file, not the log: the line gives its size)."""
    data = finish.data.model_dump(exclude={"execution_details", "node"}, exclude_none=True)
    sweep = data.pop("sweep", None)
    if isinstance(sweep, dict):
        data["sweep_points"] = len(sweep.get("points") or [])
    return {"status": finish.status, **data}


class RequestHandler:
    """Decides and answers deliveries for one worker; owns no connection."""

    def __init__(
        self,
        settings: Settings,
        fleet: Fleet,
        publisher: Publisher,
        benchmark: Benchmark,
        on_rejected: Callable[[bool], None] = lambda from_lane: None,
        on_accepted: Callable[[bytes], None] = lambda body: None,
    ) -> None:
        self._settings = settings
        self._fleet = fleet
        self._publisher = publisher
        self._benchmark = benchmark  # the workload engine, bound to this worker's CPUs
        self._on_rejected = on_rejected  # the reject lane counts rejections...
        self._on_accepted = on_accepted  # ...and closes on a valid request
        self.timed_out = TimedOutDeliveries()
        self.running = 0  # requests being run (0 or 1: the worker holds one at a time)

    # -- the two entry points ------------------------------------------------------------------

    async def handle(
        self,
        message: AbstractIncomingMessage,
        started: float,
        decided: Callable[[], None] = lambda: None,
    ) -> Outcome:
        """A delivery of the prefetch-1 consumer, the only one that runs requests.

        ``decided`` is called once the body is a valid request (intake ends there; a
        rejection's intake ends when the worker has applied it)."""
        request = await self.decide(message)
        if isinstance(request, Outcome):
            return request
        decided()
        doomed = self.timed_out.reason(message.message_id)
        if doomed is not None:  # ran before, and the broker's consumer timeout killed it
            reason = _consumer_timeout_rejection(request.id, doomed)
            await self._reject(message, reason)  # the error finish, counted as rejected
            return outcomes.given_up(reason)
        self._on_accepted(message.body)
        self.running += 1
        try:
            return await self._run(message, request, started)
        finally:
            self.running -= 1

    async def handle_on_lane(self, message: AbstractIncomingMessage) -> Outcome:
        """A delivery of the reject lane: a bad body is rejected, a valid request handed back
        at once (the lane never runs one, so a busy worker never holds a second request)."""
        request = await self.decide(message, from_lane=True)
        if isinstance(request, Outcome):
            return request
        log.info("request_returned_to_queue", reason="reject_lane", workload_id=request.id)
        return outcomes.HANDED_BACK

    # -- deciding ------------------------------------------------------------------------------

    async def decide(
        self, message: AbstractIncomingMessage, *, from_lane: bool = False
    ) -> BenchmarkRequest | Outcome:
        """The valid request, or the rejection (its error finish already published)."""
        decision = decide(
            message.body,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            max_body_bytes=self._settings.worker.max_body_bytes,
        )
        if isinstance(decision, RejectRequest):
            outcome = await self._reject(message, decision)
            self._on_rejected(from_lane)
            return outcome
        return decision

    async def _reject(self, message: AbstractIncomingMessage, exc: RejectRequest) -> Outcome:
        log.warning(
            "request_rejected", reason=exc.reason, error=str(exc), workload_id=exc.workload_id
        )
        self._fleet.request_rejected()
        if exc.workload_id is not None:
            finish = error_finish(
                exc.workload_id, str(exc), exc.step, reason=exc.reason, node=self._fleet.node
            )
            try:
                await self._publisher.publish(finish)
            except PublishFailed as publish_error:
                log.warning("rejection_not_published", error=str(publish_error))
        return outcomes.rejected(exc)

    # -- running and answering -----------------------------------------------------------------

    async def _run(
        self, message: AbstractIncomingMessage, request: BenchmarkRequest, started: float
    ) -> Outcome:
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
                    log.info("request_completed", duplicate_delivery=True,
                             stored_run_id=getattr(stored.data, "run_id", None),
                             status=stored.status)  # fmt: skip
                    return outcomes.ANSWERED
                labels = {"attempt": attempt, **key.labels()}
                finish = await self._benchmark(request, run_id, labels, self._emitter(started))
                await self._answer(message, finish, started)
            except DeliveryLost as exc:
                log.warning("finish_withheld", reason="delivery_lost", detail=str(exc))
                return outcomes.DELIVERY_LOST
            except PublishFailed as exc:
                log.error("request_requeued", reason="publish_failed", error=str(exc))
                return outcomes.PUBLISH_FAILED
            except Exception:
                log.exception("request_crashed")
                return await self._give_up_or_retry(message, request.id, run_id)
            log.info("request_completed", duration_s=round(time.monotonic() - started, 3),
                     **finish_log_fields(finish))  # fmt: skip
            return outcomes.ANSWERED

    def _emitter(self, started: float) -> Emit:
        async def emit(event: StartEvent | ProgressEvent) -> None:
            if isinstance(event, ProgressEvent):
                await self._publisher.publish_best_effort(event)
            else:
                await self._publisher.publish_held(event, self.hold_s(started))

        return emit

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
        await self._publisher.publish_held(finish, self.hold_s(started))

    def hold_s(self, started: float) -> float:
        """How long a start or finish may wait for the broker's confirm: ``event_hold_s``,
        but the delivery must stay clear of the broker's consumer timeout."""
        broker = self._settings.broker
        hold_s = broker.event_hold_s
        if broker.consumer_timeout_s is not None:
            held_s = time.monotonic() - started
            room_s = broker.consumer_timeout_s - held_s - CONSUMER_TIMEOUT_MARGIN_S
            hold_s = min(hold_s, room_s)
        return max(hold_s, broker.publish_timeout_s)

    async def _give_up_or_retry(
        self, message: AbstractIncomingMessage, workload_id: str, run_id: str
    ) -> Outcome:
        """An unexpected error: requeue while the broker would deliver the request again
        (``x-delivery-limit`` returns; a hand-back by the reject lane counts as one), and on the
        last delivery dead-letter it with the reason and an error finish."""
        attempt = delivery_attempt(message)
        if attempt <= self._settings.broker.delivery_limit:
            log.warning("request_retried", reason="internal_error", attempt=attempt)
            return outcomes.RETRY
        finish = error_finish(workload_id, "internal error in the worker; see its log",
                              "worker", run_id=run_id, node=self._fleet.node)  # fmt: skip
        with contextlib.suppress(PublishFailed):
            await self._publisher.publish(finish)
        return outcomes.given_up(RejectRequest(
            f"internal error in the worker on attempt {attempt}, the last; see its log",
            reason="internal_error", workload_id=workload_id,
        ))  # fmt: skip


def _consumer_timeout_rejection(workload_id: str, reason: str) -> RejectRequest:
    return RejectRequest(
        f"the broker's consumer timeout ended an earlier attempt of this request ({reason}); "
        "it would end every attempt the same way, so it is not run again: raise "
        "consumer_timeout on the broker, or make the request shorter",
        reason="consumer_timeout",
        workload_id=workload_id,
        step="worker",
    )

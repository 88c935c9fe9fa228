"""Publishing events with publisher confirms and a timeout on every publish."""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractExchange

from contracts import FinishEvent, ProgressEvent, StartEvent
from service.errors import PublishFailed

log = structlog.get_logger()

AnyEvent = StartEvent | ProgressEvent | FinishEvent


def event_message_id(event: AnyEvent) -> str:
    """Unique per message, and the same when a stored finish is published again.

    ``<run_id>.start``, ``<run_id>.progress.<k>``, ``<run_id>.finish``: a subscriber that
    drops a ``message_id`` it has seen never counts a republished finish twice. Events
    without a run (a rejected body) get a random id.
    """
    run_id = getattr(event.data, "run_id", None)
    if not isinstance(run_id, str) or not run_id:
        return uuid.uuid4().hex
    if isinstance(event, ProgressEvent):
        return f"{run_id}.progress.{event.data.current_step}"
    return f"{run_id}.{event.phase}"


def event_message(event: AnyEvent) -> aio_pika.Message:
    """The AMQP message of an event, with the spec's properties."""
    return aio_pika.Message(
        body=event.to_body(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        type=event.subject,
        correlation_id=event.workload_id,
        message_id=event_message_id(event),
        timestamp=time.time(),
    )


class EventPublisher:
    """Publishes to the events exchange; each publish is confirmed by the broker or fails."""

    def __init__(self, exchange: AbstractExchange, timeout_s: float) -> None:
        self._exchange = exchange
        self._timeout_s = timeout_s

    async def publish(self, event: AnyEvent, timeout_s: float | None = None) -> None:
        """Publish and wait for the broker's confirm; raise :class:`PublishFailed` otherwise.

        Events are published without ``mandatory``: an event nobody subscribes to is normal.
        The timeout (``publish_timeout_s`` unless given) covers everything, including waiting
        for a robust channel to reconnect and a connection the broker blocked (memory or disk
        alarm).
        """
        timeout_s = timeout_s or self._timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._exchange.publish(
                    event_message(event),
                    routing_key=event.routing_key,
                    mandatory=False,
                    timeout=timeout_s,
                )
        except TimeoutError as exc:
            raise PublishFailed(f"{event.subject} not confirmed within {timeout_s:g} s") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise PublishFailed(f"{event.subject} could not be published: {exc!r}") from exc

    async def publish_held(self, event: AnyEvent, hold_s: float) -> None:
        """Publish, waiting up to ``hold_s`` for the confirm: for a start or finish whose
        request stays unacked meanwhile, so a broker that blocks publishing for a while (memory
        or disk alarm) delays the answer instead of costing a delivery attempt.

        The message is sent once and its confirm awaited (a blocked connection sends it when
        unblocked). Only when the channel itself fails is it sent again, after
        ``publish_timeout_s``, with the same ``message_id``.
        """
        deadline = time.monotonic() + hold_s
        while True:
            left_s = deadline - time.monotonic()
            publish = asyncio.ensure_future(self.publish(event, max(left_s, 0.1)))
            try:
                done, _ = await asyncio.wait({publish}, timeout=min(self._timeout_s, left_s))
                if not done:
                    log.warning("event_waiting_for_broker", subject=event.subject,
                                waited_s=self._timeout_s, hold_s=round(hold_s, 1))  # fmt: skip
                await publish
                return
            except PublishFailed as exc:
                if time.monotonic() + self._timeout_s >= deadline:
                    raise
                log.warning("event_publish_retry", subject=event.subject, error=str(exc))
                await asyncio.sleep(self._timeout_s)
            finally:
                publish.cancel()

    async def publish_best_effort(self, event: AnyEvent) -> None:
        """For progress: a lost progress event must never stop the benchmark."""
        try:
            await self.publish(event)
        except PublishFailed as exc:
            log.warning("progress_not_published", error=str(exc))

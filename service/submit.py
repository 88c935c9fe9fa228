"""Publishing a request, and following its events to the finish."""

from __future__ import annotations

import asyncio
import sys

import aio_pika
import structlog

from contracts import BenchmarkRequest, FinishEvent, parse_event, workload_binding
from service.broker import connect, declare_topology
from service.config import Settings

log = structlog.get_logger()


async def submit(
    request: BenchmarkRequest, settings: Settings, wait: bool, timeout_s: float
) -> int:
    """Publish ``request`` (confirmed, persistent); with ``wait``, print events to the finish.

    The event queue is bound before the request is published, so no event can be missed.
    Exit code: 0 when published (or finished with success), 1 on an error finish or time-out.
    """
    broker = settings.broker
    connection = await connect(broker, "submit")
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, broker)
        events_queue = None
        if wait:
            events = await channel.get_exchange(broker.events_exchange)
            events_queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await events_queue.bind(events, routing_key=workload_binding(request.id))
        await channel.default_exchange.publish(
            aio_pika.Message(
                body=request.to_body(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=request.id,
            ),
            routing_key=broker.requests_queue,
            mandatory=True,
            timeout=broker.publish_timeout_s,
        )
        log.info("request_submitted", workload_id=request.id, queue=broker.requests_queue)
        if events_queue is None:
            return 0
        try:
            finish = await asyncio.wait_for(_print_until_finish(events_queue), timeout_s)
        except TimeoutError:
            print(f"no finish for {request.id} within {timeout_s:g} s", file=sys.stderr)
            return 1
        return 0 if finish.ok else 1


async def _print_until_finish(queue: aio_pika.abc.AbstractQueue) -> FinishEvent:
    async with queue.iterator() as messages:
        async for message in messages:
            async with message.process():
                event = parse_event(message.body)
                sys.stdout.write(message.body.decode() + "\n")
                sys.stdout.flush()
                if isinstance(event, FinishEvent):
                    return event
    raise ConnectionError("the event stream ended before the finish event")

"""A Python client for publishers: submit requests, follow their events, cancel workloads.

Needs ``aio-pika`` besides the contracts (``pip install 'benchmark-worker[client]'``, or
``pip install pydantic aio-pika`` next to a copy of ``contracts/``); ``import contracts`` alone
never imports it.

Submit and wait for the result::

    import asyncio
    from contracts import BenchmarkRequest, ModelSpec
    from contracts.client import BenchmarkClient

    async def main() -> None:
        request = BenchmarkRequest(
            id="resnet-int8-1",
            input_model=ModelSpec(precision="fp32", path="/models/fp32.pb"),
            optimized_model=ModelSpec(precision="int8", path="/models/int8.pb"),
        )
        async with BenchmarkClient.connect("amqp://guest:guest@localhost:5672/") as client:
            finish = await client.run(request, timeout_s=900)
        print(finish.status, finish.data.model_dump().get("speedup"))

    asyncio.run(main())

Or follow every event as it comes::

    async with BenchmarkClient.connect(url) as client:
        async with await client.submit(request) as stream:
            async for event in stream.events(timeout_s=900):
                print(event.subject, event.data.model_dump().get("progress"))

The event queue is bound before the request is published, so no event is missed. The client
declares nothing differently from the worker: it checks that the requests queue exists (and,
with ``create_missing_queue=True``, declares a missing one with the worker's exact arguments
from :func:`contracts.routing.request_queue_arguments`), and declares the events and control
exchanges as the durable topic exchanges they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from pydantic import ValidationError

from .control import CANCEL_MESSAGE_TYPE, CancelRequest
from .errors import PublishFailed, QueueMissing
from .events import PHASE_OF_SUBJECT, AnyEvent, FinishEvent, parse_event
from .requests import REQUEST_MESSAGE_TYPE, BenchmarkRequest
from .routing import (
    CONTROL_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    DEFAULT_DELIVERY_LIMIT,
    EVENTS_EXCHANGE,
    REQUESTS_QUEUE,
    request_queue_arguments,
    workload_binding,
)

log = logging.getLogger(__name__)

__all__ = ["BenchmarkClient", "EventStream", "PublishFailed", "QueueMissing"]


def _json_message(body: bytes, message_type: str, correlation_id: str) -> aio_pika.Message:
    return aio_pika.Message(
        body=body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        type=message_type,
        correlation_id=correlation_id,
        message_id=uuid.uuid4().hex,
        timestamp=datetime.now(UTC),
    )


class EventStream:
    """The events of one workload, from an exclusive queue bound before anything was sent.

    Iterate :meth:`events` or await :meth:`wait`; both end with the ``benchmark_finish``.
    Use it as an async context manager (or call :meth:`close`) to delete the queue.
    """

    def __init__(self, workload_id: str, queue: AbstractQueue) -> None:
        self.workload_id = workload_id
        self.finish: FinishEvent | None = None
        """The finish, once it has arrived."""
        self._queue = queue
        self._inbox: asyncio.Queue[AnyEvent | BaseException] = asyncio.Queue()
        self._consumer_tag: str | None = None

    @classmethod
    async def bind(
        cls, channel: AbstractChannel, events: AbstractExchange, workload_id: str
    ) -> EventStream:
        """Declare a server-named exclusive queue, bind it to ``benchmark.<id>.#``, consume."""
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(events, routing_key=workload_binding(workload_id))
        stream = cls(workload_id, queue)
        channel.close_callbacks.add(stream._on_channel_closed)
        stream._consumer_tag = await queue.consume(stream._on_message, no_ack=True)
        return stream

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            self._inbox.put_nowait(parse_event(message.body))
        except ValidationError as exc:
            subject = _subject_of(message.body)
            if subject in PHASE_OF_SUBJECT:
                self._inbox.put_nowait(exc)  # one of ours, malformed: tell the reader
            else:
                log.warning("skipping a message with unknown subject %r", subject)

    def _on_channel_closed(self, _channel: object, exc: BaseException | None = None) -> None:
        if self.finish is None:
            reason = f": {exc!r}" if exc else ""
            self._inbox.put_nowait(
                ConnectionError(f"the channel closed before {self.workload_id} finished{reason}")
            )

    async def events(self, timeout_s: float | None = None) -> AsyncIterator[AnyEvent]:
        """Every event of the workload up to and including its finish.

        ``timeout_s`` bounds the whole stream: :class:`TimeoutError` when no finish has come
        by then. A broken connection raises :class:`ConnectionError`.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while self.finish is None:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                item = await asyncio.wait_for(self._inbox.get(), remaining)
            except TimeoutError:
                raise TimeoutError(
                    f"no benchmark_finish for {self.workload_id} within {timeout_s:g} s"
                ) from None
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, FinishEvent):
                self.finish = item
            yield item

    async def wait(
        self,
        timeout_s: float | None = None,
        on_event: Callable[[AnyEvent], Any] | None = None,
    ) -> FinishEvent:
        """The finish event; ``on_event`` sees every event on the way (the finish included)."""
        async for event in self.events(timeout_s):
            if on_event is not None:
                on_event(event)
        assert self.finish is not None
        return self.finish

    async def close(self) -> None:
        """Stop consuming; the exclusive auto-delete queue goes away with it."""
        channel = self._queue.channel
        with contextlib.suppress(Exception):
            channel.close_callbacks.discard(self._on_channel_closed)
        if self._consumer_tag is not None and not channel.is_closed:
            with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                await self._queue.cancel(self._consumer_tag)
        self._consumer_tag = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _subject_of(body: bytes) -> object:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("subject") if isinstance(data, dict) else None


class BenchmarkClient:
    """Publishes requests to the requests queue and follows their events.

    Give it an open aio-pika connection (or use :meth:`connect`); it opens its own channel with
    publisher confirms, in ``async with`` or :meth:`open`. Names default to the spec's; pass
    the worker's if its config renames them.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        *,
        requests_queue: str = REQUESTS_QUEUE,
        events_exchange: str = EVENTS_EXCHANGE,
        control_exchange: str = CONTROL_EXCHANGE,
        publish_timeout_s: float = 30.0,
        create_missing_queue: bool = False,
        dead_letter_exchange: str = DEAD_LETTER_EXCHANGE,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    ) -> None:
        """``create_missing_queue``: when the requests queue does not exist yet, declare it with
        ``dead_letter_exchange`` and ``delivery_limit`` (give the worker's: it declares the queue
        with its own, and RabbitMQ refuses different ones); an existing queue is left as it is."""
        self._connection = connection
        self.requests_queue = requests_queue
        self.events_exchange = events_exchange
        self.control_exchange = control_exchange
        self.publish_timeout_s = publish_timeout_s
        self._create_missing = create_missing_queue
        self._queue_arguments = request_queue_arguments(dead_letter_exchange, delivery_limit)
        self._channel: AbstractChannel | None = None
        self._events: AbstractExchange | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, **options: Any) -> AsyncIterator[BenchmarkClient]:
        """Connect to ``url``, open a client (``options`` as for the constructor), close both.

        The connection is not robust on purpose: a follower's exclusive queue dies with its
        connection, so a lost connection is reported (``ConnectionError``) and not hidden.
        """
        connection = await aio_pika.connect(
            url, client_properties={"connection_name": "benchmark-worker client"}
        )
        async with connection, cls(connection, **options) as client:
            yield client

    async def open(self) -> None:
        """Open the channel; check the requests queue (or create it); declare the events exchange.

        Raises :class:`QueueMissing` when the queue does not exist and may not be created.
        """
        exists = await self._requests_queue_exists()
        if not exists and not self._create_missing:
            raise QueueMissing(
                f"queue {self.requests_queue!r} does not exist: start a worker first (it "
                "declares the queue), or pass create_missing_queue=True with the worker's "
                "delivery_limit and dead_letter_exchange"
            )
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._events = await self._channel.declare_exchange(
            self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        if not exists:
            await self._channel.declare_queue(
                self.requests_queue, durable=True, arguments=self._queue_arguments
            )

    async def _requests_queue_exists(self) -> bool:
        probe = await self._connection.channel()  # a failed passive declare closes it
        try:
            await probe.declare_queue(self.requests_queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            if not probe.is_closed:
                await probe.close()
        return True

    async def close(self) -> None:
        """Close the channel (the connection is the caller's)."""
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _require_open(self) -> tuple[AbstractChannel, AbstractExchange]:
        if self._channel is None or self._events is None:
            raise RuntimeError("the client is not open: use 'async with' or await open()")
        return self._channel, self._events

    async def follow(self, workload_id: str) -> EventStream:
        """Follow the events of a workload from now on (one submitted elsewhere, say)."""
        channel, events = self._require_open()
        return await EventStream.bind(channel, events, workload_id)

    async def submit(self, request: BenchmarkRequest) -> EventStream:
        """Bind a queue to the request's events, then publish it; return the stream.

        Iterate or await the stream; close it (``async with``) when done. Raises
        :class:`PublishFailed` when the broker did not take the request.
        """
        channel, events = self._require_open()
        stream = await EventStream.bind(channel, events, request.id)
        try:
            await self.publish(request)
        except BaseException:
            await stream.close()
            raise
        return stream

    async def publish(self, request: BenchmarkRequest) -> None:
        """Publish ``request`` without following it: persistent, mandatory, confirmed.

        Raises :class:`PublishFailed` when the broker did not take it.
        """
        channel, _ = self._require_open()
        message = _json_message(request.to_body(), REQUEST_MESSAGE_TYPE, request.id)
        await self._publish(channel.default_exchange, message, self.requests_queue)

    async def run(self, request: BenchmarkRequest, timeout_s: float | None = None) -> FinishEvent:
        """Submit ``request`` and return its ``benchmark_finish`` (``TimeoutError`` if none)."""
        async with await self.submit(request) as stream:
            return await stream.wait(timeout_s)

    async def cancel(self, workload_id: str, reason: str | None = None) -> None:
        """Send a cancel for ``workload_id`` on the control exchange.

        Raises :class:`PublishFailed` when no worker listens (the cancel could reach nobody).
        """
        channel, _ = self._require_open()
        cancel = CancelRequest(id=workload_id, reason=reason)
        control = await channel.declare_exchange(
            self.control_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        message = _json_message(cancel.to_body(), CANCEL_MESSAGE_TYPE, workload_id)
        await self._publish(control, message, cancel.routing_key)

    async def _publish(
        self, exchange: AbstractExchange, message: aio_pika.Message, routing_key: str
    ) -> None:
        where = f"{exchange.name or 'the default exchange'} with routing key {routing_key!r}"
        try:
            await exchange.publish(
                message, routing_key=routing_key, mandatory=True, timeout=self.publish_timeout_s
            )
        except aiormq.exceptions.PublishError:
            raise PublishFailed(f"the broker could not route the message to {where}") from None
        except aiormq.exceptions.DeliveryError as exc:
            raise PublishFailed(f"the broker refused the message to {where}: {exc!r}") from None
        except TimeoutError:
            raise PublishFailed(
                f"the broker did not confirm the message to {where} within "
                f"{self.publish_timeout_s:g} s"
            ) from None

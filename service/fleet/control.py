"""Cancel: the control exchange, each worker's own queue on it, and the memory of cancelled ids.

Every worker binds a queue of its own to ``benchmark.*.cancel`` on the control exchange, so a
cancel reaches all of them: the one running the workload kills its runners, and every worker
remembers the id (bounded: ``node.cancelled_max`` ids for ``node.cancelled_ttl_s``) so that a
request still in the queue is dropped with the same error finish when it arrives.
A worker started after the cancel was sent does not know about it.

The queue is not exclusive: it outlives the worker's connection by ``x-expires``
(:data:`CONTROL_QUEUE_EXPIRES_S`), so a cancel sent while the worker reconnects waits in it
instead of being lost with an exclusive queue; a clean shutdown deletes it. A worker that died
leaves it behind until it expires, so within that time ``cancel`` may count it as a listener.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from pydantic import ValidationError

from contracts import routing
from contracts.control import CancelRequest, parse_cancel
from service.config import BrokerSettings

log = structlog.get_logger()

Clock = Callable[[], float]
OnCancel = Callable[[CancelRequest], None]
CONTROL_QUEUE_EXPIRES_S = 300
_DELETE_TIMEOUT_S = 5


class CancelledIds:
    """Workload ids cancelled in the last ``ttl_s`` seconds, at most ``max_ids`` of them."""

    def __init__(self, ttl_s: float, max_ids: int, clock: Clock = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_ids = max_ids
        self._clock = clock
        self._expiry_by_id: OrderedDict[str, float] = OrderedDict()
        self._reason_by_id: dict[str, str | None] = {}

    def add(self, workload_id: str, reason: str | None = None) -> None:
        self._expire()
        self._expiry_by_id.pop(workload_id, None)
        self._expiry_by_id[workload_id] = self._clock() + self._ttl_s
        self._reason_by_id[workload_id] = reason
        while len(self._expiry_by_id) > self._max_ids:
            oldest, _ = self._expiry_by_id.popitem(last=False)
            self._reason_by_id.pop(oldest, None)

    def __contains__(self, workload_id: object) -> bool:
        self._expire()
        return workload_id in self._expiry_by_id

    def __len__(self) -> int:
        self._expire()
        return len(self._expiry_by_id)

    def reason(self, workload_id: str) -> str | None:
        return self._reason_by_id.get(workload_id)

    def _expire(self) -> None:
        now = self._clock()
        while self._expiry_by_id:
            oldest, expiry = next(iter(self._expiry_by_id.items()))
            if expiry > now:
                return
            del self._expiry_by_id[oldest]
            self._reason_by_id.pop(oldest, None)


async def declare_control_exchange(
    channel: AbstractChannel, settings: BrokerSettings
) -> AbstractExchange:
    """The durable topic exchange cancels are published to (idempotent)."""
    return await channel.declare_exchange(
        settings.control_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )


def cancel_from_message(routing_key: str, body: bytes) -> CancelRequest | None:
    """The cancel a control message carries: its body, else the id in its routing key."""
    try:
        cancel = parse_cancel(body)
    except ValidationError:
        cancel = None
    parts = routing_key.split(".")
    key_id = parts[1] if len(parts) == 3 and parts[2] == "cancel" else None
    if cancel is not None:
        if key_id is not None and key_id != cancel.id:
            log.warning("cancel_key_mismatch", routing_key=routing_key, body_id=cancel.id)
        return cancel
    if key_id is not None and routing.is_routable_id(key_id):
        log.warning("cancel_body_invalid", routing_key=routing_key, body_bytes=len(body))
        return CancelRequest(id=key_id)
    log.warning("control_message_ignored", routing_key=routing_key, body_bytes=len(body))
    return None


class ControlListener:
    """This worker's own queue on the control exchange, bound to every cancel."""

    def __init__(self, settings: BrokerSettings, queue_name: str, on_cancel: OnCancel) -> None:
        self._settings = settings
        self._queue_name = queue_name
        self._on_cancel = on_cancel
        self._queue: AbstractQueue | None = None  # strong reference: restored on reconnect

    async def start(self, channel: AbstractChannel) -> None:
        exchange = await declare_control_exchange(channel, self._settings)
        # A name of our own: a robust channel redeclares it after a reconnect, which it
        # could not do with a server-named (amq.gen-*) queue. Not exclusive: it keeps the
        # cancels sent while the connection is down.
        queue = await channel.declare_queue(
            self._queue_name,
            arguments={"x-expires": CONTROL_QUEUE_EXPIRES_S * 1000},
        )
        await queue.bind(exchange, routing_key=routing.CANCEL_BINDING)
        await queue.consume(self._on_message, no_ack=True)
        self._queue = queue
        log.info("control_listening", exchange=self._settings.control_exchange, queue=queue.name)

    async def stop(self) -> None:
        """Delete the queue (a clean shutdown; otherwise it expires on its own)."""
        if self._queue is None:
            return
        try:
            await self._queue.delete(if_unused=False, if_empty=False, timeout=_DELETE_TIMEOUT_S)
        except Exception as exc:
            log.warning("control_queue_not_deleted", queue=self._queue_name, error=repr(exc))
        self._queue = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        cancel = cancel_from_message(message.routing_key or "", message.body)
        if cancel is not None:
            log.info("cancel_received", workload_id=cancel.id, reason=cancel.reason)
            self._on_cancel(cancel)

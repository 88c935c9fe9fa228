"""Dead-lettering a rejected body with its reason, where whoever reads the queue can see it.

The broker's own dead-lettering (``reject``, no requeue) only says ``x-first-death-reason:
rejected``. Instead the worker republishes the delivery, body and properties unchanged, to the
dead-letter exchange with headers that say why and who, waits for the broker's confirm, and
only then acks the original. If the copy is not confirmed, the worker falls back to the
broker's dead-lettering: the body is never lost, it only lacks the reason.

Headers added (values are bounded; the reason never quotes the body):

* ``x-reject-reason``: a code (``schema_invalid``, ``malformed_json``, ``too_large``, ...)
* ``x-reject-message``: what was wrong, in words (field names, never values)
* ``x-rejected-by``: the node id of the worker that rejected it
* ``x-original-queue``, ``x-original-routing-key``, ``x-rejected-at`` (Unix seconds)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from service.errors import RejectRequest

log = structlog.get_logger()

MESSAGE_HEADER_CHARS = 1000


def reason_headers(exc: RejectRequest, node_id: str, queue: str) -> dict[str, Any]:
    return {
        "x-reject-reason": exc.reason,
        "x-reject-message": str(exc)[:MESSAGE_HEADER_CHARS],
        "x-rejected-by": node_id,
        "x-original-queue": queue,
        "x-rejected-at": int(time.time()),
    }


class DeadLetters:
    """Publishes rejected deliveries to the dead-letter exchange, confirmed, with a reason."""

    def __init__(
        self, exchange: AbstractExchange, node_id: str, queue: str, timeout_s: float
    ) -> None:
        self._exchange = exchange
        self._node_id = node_id
        self._queue = queue
        self._timeout_s = timeout_s

    async def send(self, message: AbstractIncomingMessage, exc: RejectRequest) -> bool:
        """True once the broker confirmed the copy; False: reject it the broker's way."""
        headers = {
            **(message.headers or {}),
            **reason_headers(exc, self._node_id, self._queue),
            "x-original-routing-key": message.routing_key or "",
        }
        copy = aio_pika.Message(
            body=message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            app_id=message.app_id,
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._exchange.publish(copy, routing_key="", timeout=self._timeout_s)
        except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as err:
            log.warning("dead_letter_copy_failed", error=repr(err), fallback="reject")
            return False
        return True

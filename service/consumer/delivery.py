"""One delivery from the broker: its attempt number, whether it is still held, settling it.

A delivery is *held* while the channel it came on is open on both ends: only then can the worker
ack it, and only then does the broker not hand it to another worker. A channel can look open
here while the broker has already dropped the connection (a partition: the broker notices
missed heartbeats after about two intervals, aiormq only after three intervals plus grace), so
:func:`still_held` asks the broker with a round trip on that channel before a result is
published: the answer comes back only over a connection the broker still holds.
"""

from __future__ import annotations

import aiormq
import structlog
from aio_pika.abc import AbstractIncomingMessage

log = structlog.get_logger()


def delivery_attempt(message: AbstractIncomingMessage) -> int:
    """1 for a first delivery; quorum queues count earlier deliveries in ``x-delivery-count``."""
    count = (message.headers or {}).get("x-delivery-count")
    if isinstance(count, int) and count > 0:
        return count + 1
    return 2 if message.redelivered else 1


def channel_closed(message: AbstractIncomingMessage) -> bool:
    """The channel a message came on is gone: its delivery tag is void, the broker requeued it."""
    try:
        return message.channel.is_closed
    except aiormq.exceptions.ChannelInvalidStateError:
        return True


async def still_held(message: AbstractIncomingMessage, timeout_s: float) -> bool:
    """Whether the broker still holds this delivery for us: a ``basic.qos`` round trip on its
    channel (harmless: it sets what the channel already has). No answer within ``timeout_s``
    (choose more than the client's heartbeat grace, so a stalled connection is declared dead
    or comes back first) counts as lost."""
    if channel_closed(message):
        return False
    try:
        await message.channel.basic_qos(prefetch_count=1, timeout=timeout_s)
    except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
        return False  # RuntimeError: aiormq's writer is closed
    return not channel_closed(message)


async def settle(message: AbstractIncomingMessage, verb: str, *, requeue: bool = False) -> bool:
    """Ack, nack or reject; False when the channel is gone (the broker requeued the delivery)."""
    try:
        if verb == "ack":
            await message.ack()
        elif verb == "nack":
            await message.nack(requeue=requeue)
        else:
            await message.reject(requeue=requeue)
    except Exception as exc:  # channel gone: the broker requeues unacked deliveries itself
        log.warning("settle_failed", verb=verb, error=repr(exc))
        return False
    return True

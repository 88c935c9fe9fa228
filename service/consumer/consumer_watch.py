"""Noticing a consumer the broker cancelled, so a worker is never silently idle.

RabbitMQ cancels a consumer on its own when its queue is deleted, when a quorum queue's leader
moves, or (4.3+) when the consumer timeout fires. aiormq only drops the consumer tag; whether
the robust connection consumes again depends on the aio-pika version (aio-pika #334). The
watch checks, every ``interval_s``, that the channel still holds the worker's consumer tag.
While the connection is down it waits (the robust connection restores consumers after a
reconnect). Missing on two checks in a row and for longer than ``grace_s`` (time for aio-pika's
own recovery, which runs between reconnect intervals), the consumer is lost: ``on_lost`` is
called, and the worker stops with a non-zero exit so its supervisor starts a fresh one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from enum import Enum

import structlog
from aio_pika.abc import AbstractChannel

log = structlog.get_logger()

MISSES_BEFORE_LOST = 2


class ConsumerState(Enum):
    ALIVE = "alive"
    MISSING = "missing"
    RECONNECTING = "reconnecting"


async def consumer_state(
    channel: AbstractChannel, consumer_tag: str, timeout_s: float
) -> ConsumerState:
    """Whether the broker still delivers to ``consumer_tag`` on ``channel``."""
    try:
        underlay = await asyncio.wait_for(channel.get_underlay_channel(), timeout_s)
    except (TimeoutError, RuntimeError, ConnectionError):
        return ConsumerState.RECONNECTING
    if underlay.is_closed:
        return ConsumerState.RECONNECTING
    consumers = getattr(underlay, "consumers", {})  # aiormq's Channel; not in its abstract type
    return ConsumerState.ALIVE if consumer_tag in consumers else ConsumerState.MISSING


async def watch_consumer(
    channel: AbstractChannel,
    consumer_tag: str,
    interval_s: float,
    grace_s: float,
    on_lost: Callable[[], None],
) -> None:
    """Check the consumer every ``interval_s``; call ``on_lost`` once it is gone for good."""
    misses = 0
    missing_since = 0.0
    while True:
        await asyncio.sleep(interval_s)
        state = await consumer_state(channel, consumer_tag, interval_s)
        if state is not ConsumerState.MISSING:
            if misses:
                log.info("consumer_restored", consumer_tag=consumer_tag)
            misses = 0
            continue
        misses += 1
        if misses == 1:
            missing_since = time.monotonic()
        missing_s = time.monotonic() - missing_since
        if misses < MISSES_BEFORE_LOST or missing_s < grace_s:
            log.warning("consumer_missing", consumer_tag=consumer_tag, checks=misses)
            continue
        log.error(
            "consumer_lost",
            consumer_tag=consumer_tag,
            checks=misses,
            action="stopping; a supervisor should start the worker again",
        )
        on_lost()
        return

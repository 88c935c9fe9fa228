"""Noticing a consumer the broker cancelled, so a worker is never silently idle.

RabbitMQ cancels a consumer on its own when its queue is deleted, when a quorum queue's leader
moves, or (4.3+) when the consumer timeout fires. aiormq only drops the consumer tag; whether
the robust connection consumes again depends on the aio-pika version (aio-pika #334). The
watch checks, every ``interval_s``, that the channel still holds the worker's consumer tag.
While the connection is down it waits (the robust connection restores consumers after a
reconnect). Missing on two checks in a row and for longer than ``grace_s`` (time for aio-pika's
own recovery, which runs between reconnect intervals), the consumer is lost: ``on_lost`` is
called, and the worker stops with a non-zero exit so its supervisor starts a fresh one. The
heartbeat reads the same watcher, so ``check`` and the watchdog never disagree.
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


class ConsumerWatch:
    """The one liveness watcher of a worker's consumer: what the heartbeat (and so ``check``)
    reports and what the watchdog acts on come from the same checks.

    ``state`` is the last check's answer: the heartbeat writes ``consuming`` only while it is
    ``ALIVE``. ``on_lost`` is called once, when the consumer has been ``MISSING`` on
    :data:`MISSES_BEFORE_LOST` checks in a row and for longer than ``grace_s``.
    """

    def __init__(
        self,
        channel: AbstractChannel,
        consumer_tag: str,
        interval_s: float,
        grace_s: float,
        on_lost: Callable[[], None],
    ) -> None:
        self.consumer_tag = consumer_tag
        self.state = ConsumerState.ALIVE  # it was consuming when the watch began
        self._channel = channel
        self._interval_s = interval_s
        self._grace_s = grace_s
        self._on_lost = on_lost
        self._misses = 0
        self._missing_since_s = 0.0

    @property
    def consuming(self) -> bool:
        return self.state is ConsumerState.ALIVE

    async def run(self) -> None:
        """Check every ``interval_s`` until the consumer is lost (or the task is cancelled)."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                self.state = await consumer_state(
                    self._channel, self.consumer_tag, self._interval_s
                )
            except Exception as exc:  # a check that fails says "not consuming", not "alive"
                log.warning("consumer_check_failed", error=repr(exc))
                self.state = ConsumerState.RECONNECTING
            if self.observe(self.state, time.monotonic()):
                self._on_lost()
                return

    def observe(self, state: ConsumerState, now_s: float) -> bool:
        """Count one check; True once the consumer is lost for good."""
        if state is not ConsumerState.MISSING:
            if self._misses:
                log.info("consumer_restored", consumer_tag=self.consumer_tag)
            self._misses = 0
            return False
        self._misses += 1
        if self._misses == 1:
            self._missing_since_s = now_s
        missing_s = now_s - self._missing_since_s
        if self._misses < MISSES_BEFORE_LOST or missing_s < self._grace_s:
            log.warning("consumer_missing", consumer_tag=self.consumer_tag, checks=self._misses)
            return False
        log.error(
            "consumer_lost",
            consumer_tag=self.consumer_tag,
            checks=self._misses,
            action="stopping; a supervisor should start the worker again",
        )
        return True

"""Dead-lettering a flood of undecodable requests fast, without giving up prefetch 1.

With prefetch 1 on a quorum queue, each delivery waits until the previous one's settlement is
committed to the queue's Raft log: a few hundred to about a thousand rejections per second,
whatever the worker does. A larger prefetch would let one busy worker hold requests that idle
workers could run. So the worker keeps its prefetch-1 consumer, and after ``open_after``
bodies in a row were rejected it opens a second consumer, the *reject lane*, with a larger
prefetch on a channel of its own. A valid request that reaches the lane closes it (as does
``quiet_s`` without a delivery) and goes back to the queue at once (nack with requeue; before
RabbitMQ 4.3 that nack counts as a delivery attempt): the lane never runs a request.

A quorum queue redelivers what was returned before anything else, so the handed-back request
is next in line for a prefetch-1 consumer. Until the main consumer has taken every request the
lane handed back (each known by its body's digest), the lane stays shut, at most
``hand_back_shut_s`` for each (another worker may take it): otherwise the main consumer's next
rejections could reopen it first, and the lane would hand the same request back again. A
different valid request the main consumer takes in between (a quick one that fails at once)
does not reopen it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

log = structlog.get_logger()

OnMessage = Callable[[AbstractIncomingMessage], Awaitable[None]]
_CANCEL_TIMEOUT_S = 10


class RejectLane:
    """Opens after a run of rejections, closes on the first valid request or when quiet."""

    def __init__(
        self,
        queue: AbstractQueue,
        on_message: OnMessage,
        open_after: int,
        quiet_s: float,
        hand_back_shut_s: float = 30.0,
    ) -> None:
        self._queue = queue
        self._on_message = on_message
        self._open_after = open_after
        self._quiet_s = quiet_s
        self._hand_back_shut_s = hand_back_shut_s
        self._handed_back: dict[str, float] = {}  # body digest -> shut until (monotonic s)
        self._rejects_in_a_row = 0
        self._tag: str | None = None
        self._last_delivery_s = 0.0
        self._switching = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed_for_good = False

    @property
    def is_open(self) -> bool:
        return self._tag is not None

    def rejected(self) -> None:
        """One more body rejected; open the lane after ``open_after`` in a row."""
        self._rejects_in_a_row += 1
        if self._may_open():
            self._spawn(self._open())

    def accepted(self, body: bytes) -> None:
        """The main consumer took the valid request ``body``: the flood is over, close the
        lane; if the lane handed this request back, it no longer keeps the lane shut."""
        self._rejects_in_a_row = 0
        self._handed_back.pop(body_digest(body), None)
        if self.is_open:
            self._spawn(self.close("valid request"))

    async def hand_back(self, body: bytes) -> None:
        """The valid request ``body`` reached the lane: close it, and keep it shut until the
        main consumer takes that request (or ``hand_back_shut_s`` passed: another worker took
        it). Call before the request is nacked, so it cannot come back to this lane."""
        self._handed_back[body_digest(body)] = time.monotonic() + self._hand_back_shut_s
        await self.close("valid request")

    async def close(self, reason: str, *, for_good: bool = False) -> None:
        """Cancel the lane's consumer; with ``for_good`` (shutdown) it never opens again."""
        self._rejects_in_a_row = 0
        async with self._switching:
            self._closed_for_good = self._closed_for_good or for_good
            tag, self._tag = self._tag, None
            if tag is None:
                return
            try:
                await self._queue.cancel(tag, timeout=_CANCEL_TIMEOUT_S)
            except Exception as exc:  # the channel is gone: nothing is consumed on it anyway
                log.warning("reject_lane_cancel_failed", error=repr(exc))
            log.info("reject_lane_closed", reason=reason)

    async def _open(self) -> None:
        async with self._switching:
            if not self._may_open():
                return
            self._last_delivery_s = time.monotonic()
            try:
                self._tag = await self._queue.consume(self._deliver)
            except Exception as exc:  # reconnecting: the prefetch-1 consumer carries on alone
                log.warning("reject_lane_not_opened", error=repr(exc))
                return
            log.info("reject_lane_opened", after_rejections=self._rejects_in_a_row)
        self._spawn(self._close_when_quiet())

    def _may_open(self) -> bool:
        now = time.monotonic()
        for digest, shut_until_s in list(self._handed_back.items()):
            if now >= shut_until_s:  # taken elsewhere
                del self._handed_back[digest]
        return (
            not self.is_open
            and not self._closed_for_good
            and self._rejects_in_a_row >= self._open_after
            and not self._handed_back
        )

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self._last_delivery_s = time.monotonic()
        await self._on_message(message)

    async def _close_when_quiet(self) -> None:
        while self.is_open:
            await asyncio.sleep(self._quiet_s)
            if time.monotonic() - self._last_delivery_s >= self._quiet_s:
                await self.close("quiet")
                return

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def body_digest(body: bytes) -> str:
    """What the lane knows a handed-back request by: its body, unchanged by a requeue."""
    return hashlib.sha256(body).hexdigest()

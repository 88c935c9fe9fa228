"""The broker's consumer timeout, when it fires anyway.

RabbitMQ closes a channel whose delivery stays unacked past ``consumer_timeout`` (30 min by
default; checked every ``channel_tick_interval``) with ``PRECONDITION_FAILED - delivery
acknowledgement on channel N timed out``. The worker keeps its own time limit below it
(``broker.consumer_timeout_s``), but a broker configured lower than the worker was told, or a
per-queue override, still lets it fire: the runners are killed and the broker requeues the
request, which would only time out again on every attempt and end in the dead letters with
no answer. So the worker remembers which deliveries the timeout killed (by ``message_id``),
and when one comes back it answers with an error finish that names the cause and dead-letters
it with ``x-reject-reason: consumer_timeout``, instead of running it again.
"""

from __future__ import annotations

from collections import OrderedDict

import aiormq

MARKER = "delivery acknowledgement"
_REMEMBERED = 1000


def is_consumer_timeout(exc: BaseException | None) -> bool:
    """Whether a channel was closed by the broker's consumer timeout."""
    return isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed) and MARKER in str(exc)


def broker_reason(exc: BaseException) -> str:
    """The broker's own words, e.g. 'delivery acknowledgement on channel 1 timed out. Timeout
    value used: 3000 ms.'"""
    text = str(exc)
    start = text.find(MARKER)
    end = text.find("This timeout value")
    return text[start:end].strip() if start >= 0 else text


class TimedOutDeliveries:
    """Message ids of deliveries the broker's consumer timeout ended, with its reason."""

    def __init__(self, limit: int = _REMEMBERED) -> None:
        self._limit = limit
        self._reasons: OrderedDict[str, str] = OrderedDict()

    def add(self, message_id: str | None, reason: str) -> None:
        if not message_id:
            return
        self._reasons[message_id] = reason
        self._reasons.move_to_end(message_id)
        while len(self._reasons) > self._limit:
            self._reasons.popitem(last=False)

    def reason(self, message_id: str | None) -> str | None:
        return self._reasons.get(message_id) if message_id else None

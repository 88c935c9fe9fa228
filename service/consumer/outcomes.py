"""What becomes of one delivery: the outcome table, as values, applied in one place.

Each row is an :class:`Outcome` the request path returns (:mod:`service.consumer.handling`);
:func:`apply` is the only code that acks, requeues or dead-letters a delivery.

==========================  =====================  =======================================
outcome (constant)          broker action          event
==========================  =====================  =======================================
ANSWERED                    ack                    the finish (success, error naming the
                                                   step, cancelled), confirmed first; or the
                                                   stored finish of the same message [3]
rejected(exc)               dead-letter [1]        error finish if the id was readable
PUBLISH_FAILED [2]          requeue                (answered from the store later)
DELIVERY_LOST [4]           requeue (a no-op: the  none: the result is kept, not sent
                            broker took it back)
CHANNEL_LOST                none (broker requeued) none (runners killed; a rerun follows)
HANDED_BACK                 requeue at once        none (a valid request on the reject lane,
                                                   for the prefetch-1 consumer)
SHUTDOWN                    requeue                none (runners killed past the grace)
RETRY                       requeue                none (an internal error, deliveries left)
given_up(exc)               dead-letter [1]        error finish (internal error, last
                                                   delivery; or the broker's consumer
                                                   timeout ended an earlier attempt)
==========================  =====================  =======================================

[1] a confirmed copy to the dead-letter exchange with ``x-reject-reason`` and
``x-rejected-by`` (:mod:`service.consumer.dead_letters`), then ack; reject if the copy is not
confirmed, so the broker dead-letters it itself and nothing is lost.
[2] a start or finish is waited for while the broker blocks publishing (memory or disk alarm)
for up to ``broker.event_hold_s`` (never past the broker's consumer timeout), so a short
outage does not use up the delivery limit; only then is the request requeued.
[3] the store (:mod:`service.engine.results`) is keyed by the delivery's ``message_id``, the
request's hash and the models' content hashes.
[4] before a finish is published the worker checks with a round trip that the broker still
holds the delivery (:func:`service.consumer.delivery.still_held`): after a partition the
broker may have handed it to another worker, and only that one answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from aio_pika.abc import AbstractIncomingMessage

from service.consumer.delivery import settle
from service.errors import RejectRequest


class Action(Enum):
    ACK = "ack"
    REQUEUE = "requeue"
    DEAD_LETTER = "dead_letter"
    NONE = "none"


@dataclass(frozen=True)
class Outcome:
    """One row of the table: its name and what the broker is told."""

    row: str
    action: Action
    reason: RejectRequest | None = None  # for DEAD_LETTER: what the copy's headers say


ANSWERED = Outcome("answered", Action.ACK)
PUBLISH_FAILED = Outcome("publish_failed", Action.REQUEUE)
DELIVERY_LOST = Outcome("delivery_lost", Action.REQUEUE)
CHANNEL_LOST = Outcome("channel_lost", Action.NONE)
HANDED_BACK = Outcome("handed_back", Action.REQUEUE)
SHUTDOWN = Outcome("shutdown", Action.REQUEUE)
RETRY = Outcome("retry", Action.REQUEUE)


def rejected(reason: RejectRequest) -> Outcome:
    """A body that can never succeed as sent."""
    return Outcome("rejected", Action.DEAD_LETTER, reason)


def given_up(reason: RejectRequest) -> Outcome:
    """A valid request the worker stops trying (last delivery, or doomed to time out)."""
    return Outcome("given_up", Action.DEAD_LETTER, reason)


class DeadLetterSender(Protocol):
    async def send(self, message: AbstractIncomingMessage, exc: RejectRequest) -> bool: ...


async def apply(
    message: AbstractIncomingMessage, outcome: Outcome, dead_letters: DeadLetterSender | None
) -> None:
    """Tell the broker what became of ``message``: the only place that settles a delivery."""
    if outcome.action is Action.ACK:
        await settle(message, "ack")
    elif outcome.action is Action.REQUEUE:
        await settle(message, "nack", requeue=True)
    elif outcome.action is Action.DEAD_LETTER:
        assert outcome.reason is not None
        if dead_letters is not None and await dead_letters.send(message, outcome.reason):
            await settle(message, "ack")
        else:
            await settle(message, "reject", requeue=False)
